/* The fetch engine: one curl multi loop for every blob of every image.
 * Blobs are cut into chunks fetched as closed Range requests over separate
 * connections; each chunk is pwritten at its offset into a preallocated
 * partial file and hashed as it arrives; the whole-blob sha256 follows the
 * contiguous prefix; a blob is committed to the store only when its size
 * and digest match. */
#ifndef PREPULL_ENGINE_H
#define PREPULL_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

struct pp_error;
struct pp_options;
struct pp_registry;
struct pp_store;
struct pp_engine;
struct pp_progress;
struct pp_prefix_consumer;

/* Called once per blob when it is committed (err NULL) or has failed. */
typedef void (*pp_blob_cb)(void *ctx, const char *digest, int64_t size, int64_t fetched,
			   double seconds, const struct pp_error *err);

int pp_engine_new(struct pp_engine **out, const struct pp_options *opts, struct pp_store *store,
		  struct pp_progress *progress, struct pp_error *err);

/* Queues a blob.  A digest already queued is not fetched twice: the new
 * callback is attached to the existing blob. */
int pp_engine_add(struct pp_engine *e, struct pp_registry *reg, const char *repo,
		  const char *digest, int64_t size, pp_blob_cb cb, void *ctx, struct pp_error *err);

/* Hands the in-order bytes of a queued blob to `c` as they land, before
 * the blob's digest is known (see prefix.h).  The engine owns c->ctx from
 * here on, also when this fails (PP_ENOTFOUND: the digest is not queued,
 * or it has started already). */
int pp_engine_add_consumer(struct pp_engine *e, const char *digest,
			   const struct pp_prefix_consumer *c, struct pp_error *err);

/* Runs until every blob is committed or has failed.  Returns 0, or
 * PP_EDEADLINE / PP_EINTR when stopped early. */
int pp_engine_run(struct pp_engine *e, struct pp_error *err);

/* Bytes downloaded so far (all blobs). */
int64_t pp_engine_fetched(const struct pp_engine *e);

/* How far a queued blob has come, for progress displays: *have is the
 * bytes landed (this run and resumed from earlier ones, at most its size),
 * *fetched the bytes this run downloaded for it.  False when the digest
 * was never queued (the store had it). */
bool pp_engine_blob_progress(const struct pp_engine *e, const char *digest, int64_t *have,
			     int64_t *fetched);

void pp_engine_free(struct pp_engine *e);

#endif
