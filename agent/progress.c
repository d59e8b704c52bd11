/* Progress for people (a live display on a terminal, a line every few
 * seconds otherwise) and for machines (--json events on stdout). */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "prepull/image.h"
#include "prepull/options.h"
#include "prepull/progress.h"
#include "prepull/sanitize.h"
#include "prepull/util.h"
#include "progress_int.h"

#define LINE_INTERVAL 5.0 /* seconds between progress lines without a terminal */
#define TTY_INTERVAL 0.25

/* An image on the display, with its own rate. */
struct shown_image {
	const struct pp_image *img;
	int64_t last_fetched;
	double rate;
	double last_byte; /* when a byte last came for it */
	bool registered;  /* made visible in the store */
};

struct pp_progress {
	bool json;
	bool quiet;
	bool tty;
	double start;
	double last;
	int64_t planned;
	int64_t last_fetched;
	int64_t landed; /* what the last tick was told */
	double rate;    /* smoothed bytes/s */
	struct pp_progress_source src;
	struct shown_image *images;
	size_t n_images;
	int drawn; /* lines of the live display on screen */
};

struct pp_progress *pp_progress_new(const struct pp_options *opts)
{
	struct pp_progress *p = pp_xcalloc(1, sizeof(*p));
	p->json = opts->json;
	p->quiet = opts->quiet;
	p->tty = isatty(STDERR_FILENO) && !opts->quiet;
	p->start = p->last = pp_now();
	return p;
}

void pp_progress_free(struct pp_progress *p)
{
	if (!p)
		return;
	free(p->images);
	free(p);
}

/* Prints one event.  Its string fields are sanitised by the caller, so
 * json_pack cannot refuse them; should it still fail (out of memory, a
 * number JSON cannot hold), the event goes out by name rather than not at
 * all, and a NULL is never printed. */
static void emit(struct pp_progress *p, const char *name, json_t *ev)
{
	if (p->json) {
		char *s = ev ? json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
		if (s)
			printf("%s\n", s);
		else
			printf("{\"event\":\"%s\",\"error\":\"the event could not be encoded\"}\n",
			       name);
		fflush(stdout);
		free(s);
	}
	json_decref(ev);
}

/* A copy of s fit for a terminal and for JSON (see pp_sanitize). */
static char *clean(const char *s)
{
	return pp_sanitize_dup(s);
}

static void clear_display(struct pp_progress *p)
{
	for (; p->drawn > 0; p->drawn--)
		fputs("\033[1A\033[2K", stderr);
}

/* Lines for people: skipped with -q; on a terminal they go above the display. */
static void say(struct pp_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(struct pp_progress *p, const char *fmt, ...)
{
	if (p->quiet)
		return;
	clear_display(p);
	char line[2048], shown[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "prepull: %s\n", pp_sanitize(shown, sizeof(shown), line, sizeof(line)));
}

void pp_progress_store(struct pp_progress *p, const char *store_desc)
{
	cleanup_free char *desc = clean(store_desc);
	say(p, "store %s", desc);
	emit(p, "store", json_pack("{s:s, s:s}", "event", "store", "store", desc));
}

void pp_progress_resolved(struct pp_progress *p, const struct pp_image *img)
{
	char plat[100], sz[32];
	pp_platform_format(&img->platform, plat, sizeof(plat));
	p->images = pp_xrealloc(p->images, (p->n_images + 1) * sizeof(*p->images));
	p->images[p->n_images++] = (struct shown_image){.img = img};
	cleanup_free char *image = clean(img->ref.full);
	cleanup_free char *digest = clean(img->top_digest);
	cleanup_free char *platform = clean(plat);
	say(p, "%s: %s (%s), %zu layers, %s", image, pp_short_digest(img->manifest_digest),
	    platform, img->manifest.n_layers,
	    pp_format_bytes(sz, sizeof(sz), (double)img->total_bytes));
	emit(p, "resolved",
	     json_pack("{s:s, s:s, s:s, s:s, s:i, s:I}", "event", "resolved", "image", image,
		       "digest", digest, "platform", platform, "blobs",
		       (int)img->manifest.n_layers + 1, "bytes", (json_int_t)img->total_bytes));
}

void pp_progress_blob_present(struct pp_progress *p, const struct pp_image *img, const char *digest,
			      int64_t size)
{
	cleanup_free char *image = clean(img->ref.full);
	cleanup_free char *blob = clean(digest);
	emit(p, "blob_present",
	     json_pack("{s:s, s:s, s:s, s:I}", "event", "blob_present", "image", image, "digest",
		       blob, "size", (json_int_t)size));
}

void pp_progress_blob_done(struct pp_progress *p, const struct pp_image *img, const char *digest,
			   int64_t size, int64_t fetched, double seconds)
{
	cleanup_free char *image = clean(img->ref.full);
	cleanup_free char *blob = clean(digest);
	emit(p, "blob_done",
	     json_pack("{s:s, s:s, s:s, s:I, s:f, s:I}", "event", "blob_done", "image", image,
		       "digest", blob, "size", (json_int_t)size, "seconds", seconds, "fetched",
		       (json_int_t)fetched));
}

void pp_progress_layer_unpacked(struct pp_progress *p, const struct pp_image *img,
				const char *digest, const char *chain_id, const char *by,
				double seconds)
{
	cleanup_free char *image = clean(img->ref.full);
	cleanup_free char *layer = clean(digest);
	cleanup_free char *chain = clean(chain_id);
	cleanup_free char *how = clean(by);
	emit(p, "layer_unpacked",
	     json_pack("{s:s, s:s, s:s, s:s, s:s, s:f}", "event", "layer_unpacked", "image", image,
		       "digest", layer, "chain_id", chain, "unpacked_by", how, "seconds", seconds));
}

void pp_progress_source_dropped(struct pp_progress *p, const char *host, bool mirror,
				const char *digest, const char *scope, const char *why)
{
	cleanup_free char *h = clean(host);
	cleanup_free char *blob = clean(digest);
	cleanup_free char *w = clean(why);
	emit(p, "source_dropped",
	     json_pack("{s:s, s:s, s:b, s:s, s:s, s:s}", "event", "source_dropped", "host", h,
		       "mirror", mirror, "blob", blob, "scope", scope, "why", w));
}

void pp_progress_image_done(struct pp_progress *p, const struct pp_image *img)
{
	cleanup_free char *image = clean(img->ref.full);
	cleanup_free char *digest = clean(img->top_digest);
	for (size_t i = 0; i < p->n_images; i++)
		if (p->images[i].img == img)
			p->images[i].registered = true;
	say(p, "%s: done", image);
	emit(p, "image_done",
	     json_pack("{s:s, s:s, s:s}", "event", "image_done", "image", image, "digest", digest));
}

void pp_progress_image_failed(struct pp_progress *p, const char *image, const char *message)
{
	cleanup_free char *shown_image = clean(image);
	cleanup_free char *shown_message = clean(message);
	clear_display(p);
	/* Errors are printed even with -q. */
	fprintf(stderr, "prepull: error: %s: %s\n", shown_image, shown_message);
	emit(p, "error",
	     json_pack("{s:s, s:s, s:s}", "event", "error", "image", shown_image, "message",
		       shown_message));
}

void pp_progress_plan(struct pp_progress *p, int64_t bytes)
{
	p->planned += bytes;
}

void pp_progress_set_source(struct pp_progress *p, const struct pp_progress_source *src)
{
	p->src = *src;
}

/* An image's bytes in the store or landed so far, and the bytes this run
 * downloaded for it. */
static struct pp_image_progress image_progress(const struct pp_progress *p,
					       const struct pp_image *img)
{
	struct pp_image_progress ip = {.layers_unpacked = -1};
	if (p->src.image)
		p->src.image(p->src.ctx, img, &ip);
	if (ip.have > img->total_bytes)
		ip.have = img->total_bytes;
	return ip;
}

static void format_eta(char *buf, size_t n, double secs)
{
	if (secs < 0 || secs > 360000)
		snprintf(buf, n, "--");
	else if (secs >= 3600)
		snprintf(buf, n, "%dh%02dm", (int)secs / 3600, ((int)secs % 3600) / 60);
	else if (secs >= 60)
		snprintf(buf, n, "%dm%02ds", (int)secs / 60, (int)secs % 60);
	else
		snprintf(buf, n, "%.0fs", secs);
}

static double smooth(double old, double inst)
{
	return old == 0 ? inst : 0.7 * old + 0.3 * inst;
}

/* "100.0 MiB of 200.0 MiB (50%), 20.1 MB/s, ETA 5s" */
static const char *format_status(char *buf, size_t n, int64_t have, int64_t total, double rate)
{
	char h[32], t[32], eta[32];
	int pct = total > 0 ? (int)(100.0 * (double)have / (double)total) : 100;
	format_eta(eta, sizeof(eta), rate > 0 ? (double)(total - have) / rate : -1);
	snprintf(buf, n, "%s of %s (%d%%), %.1f MB/s, ETA %s",
		 pp_format_bytes(h, sizeof(h), (double)have),
		 pp_format_bytes(t, sizeof(t), (double)total), pct, rate / 1e6, eta);
	return buf;
}

enum progress_state progress_state_of(const struct pp_image *img,
				      const struct pp_image_progress *ip, double idle,
				      bool registered)
{
	if (ip->failed)
		return PROGRESS_FAILED;
	if (registered)
		return PROGRESS_DONE;
	/* Unpacking while the store is at it; one whose layers wait for
	 * register_image (it finds them there) is in, as far as can be seen. */
	if (ip->have >= img->total_bytes)
		return ip->layers_unpacked >= 0 && ip->layers_in > ip->layers_unpacked
			       ? PROGRESS_UNPACKING
			       : PROGRESS_DONE;
	if (ip->fetched == 0)
		return PROGRESS_QUEUED;
	return idle >= PROGRESS_IDLE_SECONDS ? PROGRESS_WAITING : PROGRESS_DOWNLOADING;
}

/* Layers whose bytes are in but which the store has not unpacked yet
 * (being unpacked, or waiting for the layer below). */
static int unpacking(const struct pp_image_progress *ip)
{
	return ip->layers_unpacked >= 0 && ip->layers_in > ip->layers_unpacked
		       ? ip->layers_in - ip->layers_unpacked
		       : 0;
}

const char *progress_image_row(char *buf, size_t n, const struct pp_image *img,
			       const struct pp_image_progress *ip, double rate, double idle,
			       bool registered)
{
	char h[32], t[32];
	int64_t total = img->total_bytes;
	int pct = total > 0 ? (int)(100.0 * (double)ip->have / (double)total) : 100;
	pp_format_bytes(h, sizeof(h), (double)ip->have);
	pp_format_bytes(t, sizeof(t), (double)total);
	switch (progress_state_of(img, ip, idle, registered)) {
	case PROGRESS_FAILED:
		snprintf(buf, n, "failed");
		break;
	case PROGRESS_DONE:
		snprintf(buf, n, "done");
		break;
	case PROGRESS_UNPACKING:
		snprintf(buf, n, "all %s in, unpacking layer %d of %zu", t, ip->layers_unpacked + 1,
			 img->manifest.n_layers);
		break;
	case PROGRESS_QUEUED:
		/* No rate and no ETA: it has not started, so neither means anything. */
		snprintf(buf, n, "queued, %s of %s (%d%%)", h, t, pct);
		break;
	case PROGRESS_WAITING:
		snprintf(buf, n, "waiting, %s of %s (%d%%)", h, t, pct);
		break;
	case PROGRESS_DOWNLOADING:
		format_status(buf, n, ip->have, total, rate);
		break;
	}
	int u = unpacking(ip);
	size_t len = strlen(buf);
	if (u > 0 && ip->have < total && len < n)
		snprintf(buf + len, n - len, ", %d layer%s unpacking", u, u == 1 ? "" : "s");
	return buf;
}

void pp_progress_tick(struct pp_progress *p, int64_t fetched)
{
	double now = pp_now();
	double interval = p->tty ? TTY_INTERVAL : LINE_INTERVAL;
	p->landed = fetched;
	if (p->quiet || now - p->last < interval)
		return;
	double dt = now - p->last;
	/* Rates count only bytes downloaded now, not those resumed from disk. */
	int64_t downloaded = p->src.downloaded ? p->src.downloaded(p->src.ctx) : fetched;
	p->rate = smooth(p->rate, (double)(downloaded - p->last_fetched) / dt);
	p->last = now;
	p->last_fetched = downloaded;

	char line[256];
	size_t pending = 0;
	int layers_unpacking = 0;
	struct pp_image_progress *ips = pp_xcalloc(p->n_images ? p->n_images : 1, sizeof(*ips));
	for (size_t i = 0; i < p->n_images; i++) {
		struct shown_image *s = &p->images[i];
		struct pp_image_progress *ip = &ips[i];
		*ip = image_progress(p, s->img);
		if (ip->fetched > s->last_fetched || s->last_byte == 0)
			s->last_byte = now;
		s->rate = smooth(s->rate, (double)(ip->fetched - s->last_fetched) / dt);
		s->last_fetched = ip->fetched;
		enum progress_state st =
			progress_state_of(s->img, ip, now - s->last_byte, s->registered);
		if (st != PROGRESS_DONE && st != PROGRESS_FAILED)
			pending++;
		if (st != PROGRESS_FAILED && !s->registered)
			layers_unpacking += unpacking(ip);
	}
	/* Every planned byte is in: what is left is the store's unpacking. */
	bool all_in = fetched >= p->planned;

	if (!p->tty) {
		/* One line per image still coming, then the total when it adds
		 * something: short lines that journald keeps whole. */
		for (size_t i = 0; i < p->n_images; i++) {
			const struct shown_image *s = &p->images[i];
			enum progress_state st = progress_state_of(
				s->img, &ips[i], now - s->last_byte, s->registered);
			if (st == PROGRESS_DONE || st == PROGRESS_FAILED)
				continue;
			char name[512];
			fprintf(stderr, "prepull: progress: %s: %s\n",
				pp_sanitize(name, sizeof(name), s->img->ref.full, SIZE_MAX),
				progress_image_row(line, sizeof(line), s->img, &ips[i], s->rate,
						   now - s->last_byte, s->registered));
		}
		if (pending != 1) {
			if (all_in && layers_unpacking > 0)
				fprintf(stderr, "prepull: progress: all in, unpacking %d layer%s\n",
					layers_unpacking, layers_unpacking == 1 ? "" : "s");
			else
				fprintf(stderr, "prepull: progress: %s\n",
					format_status(line, sizeof(line), fetched, p->planned,
						      p->rate));
		}
		free(ips);
		return;
	}
	clear_display(p);
	for (size_t i = 0; i < p->n_images; i++) {
		const struct shown_image *s = &p->images[i];
		char name[41];
		fprintf(stderr, "  %-40s %s\n",
			pp_sanitize(name, sizeof(name), s->img->ref.full, SIZE_MAX),
			progress_image_row(line, sizeof(line), s->img, &ips[i], s->rate,
					   now - s->last_byte, s->registered));
		p->drawn++;
	}
	free(ips);
	char done[32], total[32], eta[32];
	int pct = p->planned > 0 ? (int)(100.0 * (double)fetched / (double)p->planned) : 100;
	if (pct > 100)
		pct = 100;
	int bar = 30, fill = pct * bar / 100;
	/* The ETA is the whole run's: what is left over the overall rate. */
	if (all_in && layers_unpacking > 0)
		snprintf(line, sizeof(line), "all in, unpacking %d layer%s", layers_unpacking,
			 layers_unpacking == 1 ? "" : "s");
	else {
		format_eta(eta, sizeof(eta),
			   p->rate > 0 ? (double)(p->planned - fetched) / p->rate : -1);
		snprintf(line, sizeof(line), "%.1f MB/s  ETA %s", p->rate / 1e6, eta);
	}
	fprintf(stderr, "  [%.*s%*s] %3d%%  %s / %s  %s\n", fill, "##############################",
		bar - fill, "", pct, pp_format_bytes(done, sizeof(done), (double)fetched),
		pp_format_bytes(total, sizeof(total), (double)p->planned), line);
	p->drawn++;
}

void pp_progress_tick_idle(struct pp_progress *p)
{
	pp_progress_tick(p, p->landed);
}

void pp_progress_summary(struct pp_progress *p, int images, int failed, int64_t bytes,
			 int64_t fetched)
{
	double secs = pp_now() - p->start;
	double mbps = secs > 0 ? (double)fetched / secs / 1e6 : 0;
	char b[32], f[32];
	clear_display(p);
	fprintf(stderr,
		"prepull: %d image%s (%d failed), %s in store, %s downloaded in %.1f s (%.1f "
		"MB/s)\n",
		images, images == 1 ? "" : "s", failed,
		pp_format_bytes(b, sizeof(b), (double)bytes),
		pp_format_bytes(f, sizeof(f), (double)fetched), secs, mbps);
	emit(p, "summary",
	     json_pack("{s:s, s:i, s:i, s:I, s:I, s:f, s:f}", "event", "summary", "images", images,
		       "failed", failed, "bytes", (json_int_t)bytes, "fetched", (json_int_t)fetched,
		       "seconds", secs, "mb_per_s", mbps));
}
