/* `prepull pull`: the path of a set of images through
 *   plan     resolve each image (image.c), ask the store what it has, hand
 *            the missing blobs to the fetch engine, config then layers
 *            bottom-up;
 *   fetch    one engine run for every blob of every image (engine.c);
 *   register each complete image made visible in the store (store.c);
 *   report   progress events, the ready file, the summary, an exit code.
 * The run's bookkeeping (what each image still waits for) lives here, not
 * in struct pp_image, which is what the registry said. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "prepull/commands.h"
#include "prepull/engine.h"
#include "prepull/error.h"
#include "prepull/image.h"
#include "prepull/log.h"
#include "prepull/options.h"
#include "prepull/prefix.h"
#include "prepull/progress.h"
#include "prepull/reference.h"
#include "prepull/registry.h"
#include "prepull/state_dir.h"
#include "prepull/stop.h"
#include "prepull/store.h"
#include "prepull/util.h"

struct pull;

/* One image of the run and what it still waits for. */
struct pull_image {
	struct pp_image img; /* the resolve result */
	struct pull *run;
	int64_t done_bytes;    /* of img.total_bytes, in the store */
	int pending;           /* layers not yet in the store */
	bool already_complete; /* the store had the whole image */
	bool planned;          /* resolved, and its blobs handed to the engine */
	bool failed;           /* reported once, when it happened */
};

struct pull {
	const struct pp_options *opts;
	struct pp_store *store;
	struct pp_progress *progress;
	struct pp_engine *engine;
	struct pull_image *images;
	size_t n_images;
};

static void image_fail(struct pull_image *pi, const struct pp_error *err)
{
	if (pi->failed)
		return;
	pi->failed = true;
	pp_progress_image_failed(pi->run->progress, pi->img.ref.full ? pi->img.ref.full : "?",
				 err->msg);
}

/* The engine's word on one blob of the image. */
static void on_blob(void *ctx, const char *digest, int64_t size, int64_t fetched, double seconds,
		    const struct pp_error *err)
{
	struct pull_image *pi = ctx;
	if (err) {
		image_fail(pi, err);
		return;
	}
	pi->pending--;
	pi->done_bytes += size;
	pp_progress_blob_done(pi->run->progress, &pi->img, digest, size, fetched, seconds);
}

/* For the display: blobs the engine never saw were in the store; a store
 * that unpacks says how many layers it has unpacked and can unpack now. */
static void image_progress(void *ctx, const struct pp_image *img, struct pp_image_progress *out)
{
	const struct pull *run = ctx;
	const struct pull_image *pi = (const struct pull_image *)img; /* img is its first member */
	out->failed = pi->failed;
	out->fetched = 0;
	out->have = img->manifest.config.size;
	for (size_t i = 0; i < img->manifest.n_layers; i++) {
		const struct pp_descriptor *d = &img->manifest.layers[i];
		int64_t h, f;
		if (pp_engine_blob_progress(run->engine, d->digest, &h, &f)) {
			out->have += h;
			out->fetched += f;
		} else {
			out->have += d->size;
		}
	}
	size_t n = 0, ready = 0;
	struct pp_error err = {0};
	out->layers_unpacked = -1;
	out->layers_in = 0;
	if (pi->planned && !pi->already_complete &&
	    pp_store_layers_unpacked(run->store, img, &n, &ready, &err) > 0) {
		out->layers_unpacked = (int)n;
		out->layers_in = (int)ready;
	}
}

static int64_t downloaded(void *ctx)
{
	const struct pull *run = ctx;
	return pp_engine_fetched(run->engine);
}

/* Plans one resolved image: the store says what it has; the rest goes to
 * the engine, layers in order. */
static void plan_image(struct pull *run, struct pull_image *pi)
{
	struct pp_image *img = &pi->img;
	struct pp_error err = {0};
	bool complete = false;
	/* A manifest may declare up to 1 TiB per layer: what one image may
	 * take on disk is the user's call, checked before anything is
	 * written. */
	if (run->opts->max_image_size > 0 && img->total_bytes > run->opts->max_image_size) {
		char declared[32], max[32];
		pp_error_set(&err, PP_EUSAGE,
			     "the image declares %lld bytes (%s) of config and layers, more than "
			     "--max-image-size %s",
			     (long long)img->total_bytes,
			     pp_format_bytes(declared, sizeof(declared), (double)img->total_bytes),
			     pp_format_bytes(max, sizeof(max), (double)run->opts->max_image_size));
		image_fail(pi, &err);
		return;
	}
	if (pp_store_prepare_image(run->store, img, &complete, &err) < 0) {
		image_fail(pi, &err);
		return;
	}
	if (complete) {
		pi->already_complete = true;
		pi->planned = true;
		pi->done_bytes = img->total_bytes;
		return;
	}
	const struct pp_descriptor *cfg = &img->manifest.config;
	pi->done_bytes = cfg->size;
	if (img->config_fetched)
		pp_progress_blob_done(run->progress, img, cfg->digest, cfg->size, cfg->size,
				      img->config_seconds);
	else
		pp_progress_blob_present(run->progress, img, cfg->digest, cfg->size);
	for (size_t l = 0; l < img->manifest.n_layers; l++) {
		const struct pp_descriptor *d = &img->manifest.layers[l];
		bool have = false;
		if (pp_store_has_layer(run->store, img, l, &have, &err) < 0) {
			image_fail(pi, &err);
			break;
		}
		if (have) {
			pi->done_bytes += d->size;
			pp_progress_blob_present(run->progress, img, d->digest, d->size);
			continue;
		}
		if (pp_engine_add(run->engine, img->reg, img->ref.path, d->digest, d->size, on_blob,
				  pi, &err) < 0) {
			image_fail(pi, &err);
			break;
		}
		pi->pending++;
		pp_progress_plan(run->progress, d->size);
		/* A store that unpacks layers may take their bytes as they come. */
		struct pp_prefix_consumer c;
		if (pp_store_layer_consumer(run->store, img, l, &c, &err) < 0 ||
		    (c.ops && pp_engine_add_consumer(run->engine, d->digest, &c, &err) < 0))
			pp_debug("layer %s: unpacked once it is in (%s)",
				 pp_short_digest(d->digest), err.msg);
	}
	pi->planned = !pi->failed;
}

/* The store as the place a config may be already. */
static int read_from_store(void *ctx, const char *digest, int64_t size, int64_t max, char **out,
			   size_t *len, struct pp_error *err)
{
	struct pp_store *store = ctx;
	bool have = false;
	int r = pp_store_has_blob(store, digest, size, &have, err);
	if (r < 0 || !have)
		return r;
	r = pp_store_read_blob(store, digest, max, out, len, err);
	return r < 0 ? r : 1;
}

/* Resolves every image first; then one fetch loop moves all their blobs. */
static void plan(struct pull *run)
{
	const struct pp_blob_source local = {read_from_store, run->store};
	for (size_t i = 0; i < run->n_images && !pp_should_stop(); i++) {
		struct pull_image *pi = &run->images[i];
		struct pp_error err = {0};
		if (pp_image_resolve(&pi->img, run->opts, &local, &err) < 0) {
			if (err.code != PP_EINTR && err.code != PP_EDEADLINE)
				image_fail(pi, &err);
			continue;
		}
		pp_progress_resolved(run->progress, &pi->img);
		plan_image(run, pi);
	}
}

/* Says why the run stopped early; returns the exit code for it. */
static int stopped_exit(void)
{
	if (pp_stop_requested) {
		fprintf(stderr, "prepull: interrupted; run again to resume\n");
		return PP_EXIT_FAILED;
	}
	fprintf(stderr, "prepull: deadline reached; progress kept for the next run\n");
	return PP_EXIT_DEADLINE;
}

/* Runs the engine; returns the exit code the stop or failure calls for. */
static int fetch(struct pull *run)
{
	struct pp_error err = {0};
	int r = pp_should_stop() ? 0 : pp_engine_run(run->engine, &err);
	if (pp_should_stop())
		return stopped_exit();
	if (r < 0) {
		fprintf(stderr, "prepull: error: %s\n", err.msg);
		return PP_EXIT_FAILED;
	}
	return PP_EXIT_OK;
}

/* A store that unpacks layers may still be at it when the last byte is
 * in; register_image waits for it, so the display goes on meanwhile (as
 * long as the store gets on by itself: past that, register_image's turn). */
static void wait_unpacked(struct pull *run, const struct pull_image *pi)
{
	size_t n = 0, ready = 0;
	struct pp_error err = {0};
	while (!pp_should_stop() &&
	       pp_store_layers_unpacked(run->store, &pi->img, &n, &ready, &err) > 0 && n < ready) {
		pp_progress_tick_idle(run->progress);
		usleep(50 * 1000);
	}
}

/* How the store unpacked each layer of a registered image (--json). */
static void report_layers(struct pull *run, const struct pull_image *pi)
{
	for (size_t i = 0; i < pi->img.manifest.n_layers; i++) {
		struct pp_layer_unpack u;
		if (pp_store_layer_unpack(run->store, &pi->img, i, &u) <= 0 || !u.by)
			continue;
		pp_progress_layer_unpacked(run->progress, &pi->img,
					   pi->img.manifest.layers[i].digest, u.chain_id, u.by,
					   u.seconds);
	}
}

/* Makes each image whose blobs are all in visible in the store.  Returns
 * the images that failed; *bytes_in_store adds up those that are in;
 * *stopped is set when a stop cut a registration short. */
static int register_all(struct pull *run, int64_t *bytes_in_store, bool *stopped)
{
	int failed = 0;
	for (size_t i = 0; i < run->n_images; i++) {
		struct pull_image *pi = &run->images[i];
		struct pp_error err = {0};
		if (pi->failed) {
			failed++; /* reported when it happened */
			continue;
		}
		if (!pi->planned || pi->pending > 0)
			continue; /* stopped early: resolved in part, or blobs missing */
		if (!pi->already_complete)
			wait_unpacked(run, pi);
		if (!pi->already_complete &&
		    pp_store_register_image(run->store, &pi->img, &err) < 0) {
			/* A stop during the wait is the run's, already reported. */
			if (err.code == PP_EINTR || err.code == PP_EDEADLINE) {
				*stopped = true;
				continue;
			}
			image_fail(pi, &err);
			failed++;
			continue;
		}
		*bytes_in_store += pi->img.total_bytes;
		if (!pi->already_complete)
			report_layers(run, pi);
		pp_progress_image_done(run->progress, &pi->img);
	}
	return failed;
}

/* The ready file says which images are in, with their digests; it exists
 * only while every image of the run is in the store. */
static void write_ready_file(const struct pull *run)
{
	json_t *images = json_array();
	for (size_t i = 0; i < run->n_images; i++) {
		const struct pp_image *img = &run->images[i].img;
		json_array_append_new(images, json_pack("{s:s, s:s}", "image", img->ref.full,
							"digest", img->top_digest));
	}
	cleanup_json json_t *root =
		json_pack("{s:s, s:o}", "store", run->store->desc, "images", images);
	cleanup_free char *text = json_dumps(root, JSON_INDENT(2));
	struct pp_error err = {0};
	if (!text) {
		pp_error_log("ready file: cannot encode it as JSON");
		return;
	}
	cleanup_free char *dir = pp_xstrdup(run->opts->ready_file);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		pp_mkdir_p(dir, 0755);
	}
	if (pp_write_file_atomic(run->opts->ready_file, text, strlen(text), &err) < 0)
		pp_error_log("ready file: %s", err.msg);
}

/* Opens what a run needs: the state dir, the store, the engine. */
static int open_run(struct pull *run)
{
	const struct pp_options *opts = run->opts;
	struct pp_error err = {0};
	if (opts->ready_file && unlink(opts->ready_file) < 0 && errno != ENOENT)
		pp_warn("remove %s: %s", opts->ready_file, strerror(errno));
	if (pp_state_dir_open(opts->state_dir, &err) < 0) {
		fprintf(stderr, "prepull: error: %s\n", err.msg);
		return PP_EXIT_FAILED;
	}
	if (opts->deadline > 0)
		pp_deadline_at = pp_now() + opts->deadline;
	run->progress = pp_progress_new(opts);
	if (pp_store_open(&run->store, opts->store, opts, &err) < 0) {
		fprintf(stderr, "prepull: error: store: %s\n", err.msg);
		return err.code == PP_EUSAGE ? PP_EXIT_USAGE : PP_EXIT_FAILED;
	}
	pp_progress_store(run->progress, run->store->desc);
	if (pp_engine_new(&run->engine, opts, run->store, run->progress, &err) < 0) {
		fprintf(stderr, "prepull: error: %s\n", err.msg);
		return PP_EXIT_FAILED;
	}
	struct pp_progress_source src = {image_progress, downloaded, run};
	pp_progress_set_source(run->progress, &src);
	return PP_EXIT_OK;
}

int pp_pull(const struct pp_options *opts, const char *const *refs, int n_refs)
{
	struct pull run = {.opts = opts};
	int exit_code = PP_EXIT_OK;

	run.images = pp_xcalloc((size_t)n_refs, sizeof(*run.images));
	run.n_images = (size_t)n_refs;
	for (int i = 0; i < n_refs; i++) {
		struct pp_error err = {0};
		run.images[i].run = &run;
		if (pp_ref_parse(&run.images[i].img.ref, refs[i], &err) < 0) {
			fprintf(stderr, "prepull: error: %s\n", err.msg);
			exit_code = PP_EXIT_FAILED;
		}
	}
	if (exit_code == PP_EXIT_OK)
		exit_code = open_run(&run);
	if (exit_code == PP_EXIT_OK) {
		plan(&run);
		exit_code = fetch(&run);
		int64_t bytes_in_store = 0;
		bool stopped = false;
		int failed = register_all(&run, &bytes_in_store, &stopped);
		if (stopped && exit_code == PP_EXIT_OK)
			exit_code = stopped_exit();
		if (failed && exit_code == PP_EXIT_OK)
			exit_code = PP_EXIT_FAILED;
		if (exit_code == PP_EXIT_OK && opts->ready_file)
			write_ready_file(&run);
		pp_progress_summary(run.progress, (int)run.n_images, failed, bytes_in_store,
				    pp_engine_fetched(run.engine));
		long conns, tls, resumed;
		pp_registry_conn_stats(&conns, &tls, &resumed);
		pp_debug("connections opened %ld, TLS handshakes %ld (%ld resumed)", conns, tls,
			 resumed);
	}
	pp_engine_free(run.engine);
	for (size_t i = 0; i < run.n_images; i++)
		pp_image_free(&run.images[i].img);
	free(run.images);
	pp_store_free(run.store);
	pp_progress_free(run.progress);
	pp_registry_free_all();
	return exit_code;
}
