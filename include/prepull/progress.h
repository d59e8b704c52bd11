/* What prepull tells people and machines: JSON events on stdout (--json),
 * a live display on a terminal, a line every few seconds otherwise, and
 * always one summary line at the end. */
#ifndef PREPULL_PROGRESS_H
#define PREPULL_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

struct pp_image;
struct pp_options;
struct pp_progress;

struct pp_progress *pp_progress_new(const struct pp_options *opts);
void pp_progress_free(struct pp_progress *p);

void pp_progress_store(struct pp_progress *p, const char *store_desc);
void pp_progress_resolved(struct pp_progress *p, const struct pp_image *img);
void pp_progress_blob_present(struct pp_progress *p, const struct pp_image *img, const char *digest,
			      int64_t size);
void pp_progress_blob_done(struct pp_progress *p, const struct pp_image *img, const char *digest,
			   int64_t size, int64_t fetched, double seconds);
/* One layer of an image the store unpacked: `by` says how (see
 * struct pp_layer_unpack), `seconds` how long the apply took. */
void pp_progress_layer_unpacked(struct pp_progress *p, const struct pp_image *img,
				const char *digest, const char *chain_id, const char *by,
				double seconds);
/* A source (a mirror or a registry, `host`) is out for blob `digest`
 * (scope "blob") or for the rest of the run (scope "run"), and why. */
void pp_progress_source_dropped(struct pp_progress *p, const char *host, bool mirror,
				const char *digest, const char *scope, const char *why);
void pp_progress_image_done(struct pp_progress *p, const struct pp_image *img);
void pp_progress_image_failed(struct pp_progress *p, const char *image, const char *message);

/* Adds to the total the engine is working towards. */
void pp_progress_plan(struct pp_progress *p, int64_t bytes);
/* How far one image has come, as the pull tells the display. */
struct pp_image_progress {
	int64_t have;    /* bytes in the store or landed (this run or resumed) */
	int64_t fetched; /* bytes this run downloaded for it */
	bool failed;
	/* For a store that unpacks layers: how many, bottom up, are unpacked,
	 * and how many it can unpack now (their bytes are in and the layers
	 * below them too); layers_unpacked is -1 when the store does not
	 * unpack or cannot say. */
	int layers_unpacked;
	int layers_in;
};

/* Where the display gets its numbers: asked on each tick, so it never
 * holds counts of its own that could drift from the fetch. */
struct pp_progress_source {
	void (*image)(void *ctx, const struct pp_image *img, struct pp_image_progress *out);
	int64_t (*downloaded)(void *ctx); /* bytes downloaded by this run */
	void *ctx;
};
/* The source must outlive its use here. */
void pp_progress_set_source(struct pp_progress *p, const struct pp_progress_source *src);
/* Called from the fetch loop with the bytes landed so far (rate-limited inside). */
void pp_progress_tick(struct pp_progress *p, int64_t fetched);
/* Called while the pull waits for something other than bytes (the store
 * unpacking layers): the display goes on with the last count it had. */
void pp_progress_tick_idle(struct pp_progress *p);

/* The final summary (JSON event and the stderr line). */
void pp_progress_summary(struct pp_progress *p, int images, int failed, int64_t bytes,
			 int64_t fetched);

#endif
