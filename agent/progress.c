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

#define LINE_INTERVAL 5.0 /* seconds between progress lines without a terminal */
#define TTY_INTERVAL 0.25

/* An image on the display, with its own rate. */
struct shown_image {
	const struct pp_image *img;
	int64_t last_fetched;
	double rate;
};

struct pp_progress {
	bool json;
	bool quiet;
	bool tty;
	double start;
	double last;
	int64_t planned;
	int64_t last_fetched;
	double rate; /* smoothed bytes/s */
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

void pp_progress_image_done(struct pp_progress *p, const struct pp_image *img)
{
	cleanup_free char *image = clean(img->ref.full);
	cleanup_free char *digest = clean(img->top_digest);
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
	struct pp_image_progress ip = {0};
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

void pp_progress_tick(struct pp_progress *p, int64_t fetched)
{
	double now = pp_now();
	double interval = p->tty ? TTY_INTERVAL : LINE_INTERVAL;
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
	for (size_t i = 0; i < p->n_images; i++) {
		struct shown_image *s = &p->images[i];
		struct pp_image_progress ip = image_progress(p, s->img);
		s->rate = smooth(s->rate, (double)(ip.fetched - s->last_fetched) / dt);
		s->last_fetched = ip.fetched;
		if (ip.have < s->img->total_bytes && !ip.failed)
			pending++;
	}

	if (!p->tty) {
		/* One line per image still coming, then the total when it adds
		 * something: short lines that journald keeps whole. */
		for (size_t i = 0; i < p->n_images; i++) {
			const struct shown_image *s = &p->images[i];
			struct pp_image_progress ip = image_progress(p, s->img);
			if (ip.have >= s->img->total_bytes || ip.failed)
				continue;
			char name[512];
			fprintf(stderr, "prepull: progress: %s: %s\n",
				pp_sanitize(name, sizeof(name), s->img->ref.full, SIZE_MAX),
				format_status(line, sizeof(line), ip.have, s->img->total_bytes,
					      s->rate));
		}
		if (pending != 1)
			fprintf(stderr, "prepull: progress: %s\n",
				format_status(line, sizeof(line), fetched, p->planned, p->rate));
		return;
	}
	clear_display(p);
	for (size_t i = 0; i < p->n_images; i++) {
		const struct shown_image *s = &p->images[i];
		struct pp_image_progress ip = image_progress(p, s->img);
		if (ip.failed)
			snprintf(line, sizeof(line), "failed");
		else if (ip.have >= s->img->total_bytes)
			snprintf(line, sizeof(line), "done");
		else
			format_status(line, sizeof(line), ip.have, s->img->total_bytes, s->rate);
		char name[41];
		fprintf(stderr, "  %-40s %s\n",
			pp_sanitize(name, sizeof(name), s->img->ref.full, SIZE_MAX), line);
		p->drawn++;
	}
	char done[32], total[32], eta[32];
	format_eta(eta, sizeof(eta), p->rate > 0 ? (double)(p->planned - fetched) / p->rate : -1);
	int pct = p->planned > 0 ? (int)(100.0 * (double)fetched / (double)p->planned) : 100;
	if (pct > 100)
		pct = 100;
	int bar = 30, fill = pct * bar / 100;
	fprintf(stderr, "  [%.*s%*s] %3d%%  %s / %s  %.1f MB/s  ETA %s\n", fill,
		"##############################", bar - fill, "", pct,
		pp_format_bytes(done, sizeof(done), (double)fetched),
		pp_format_bytes(total, sizeof(total), (double)p->planned), p->rate / 1e6, eta);
	p->drawn++;
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
