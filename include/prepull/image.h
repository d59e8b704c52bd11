/* One image being pulled: its reference, what the registry said, and the
 * blobs it needs. */
#ifndef PREPULL_IMAGE_H
#define PREPULL_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "prepull/error.h"
#include "prepull/manifest.h"
#include "prepull/reference.h"
#include "prepull/util.h"

struct pp_registry;
struct pp_options;

struct pp_image {
	struct pp_ref ref;
	struct pp_registry *reg;

	/* What the tag or digest points at (an index or a manifest), byte-exact. */
	char *top_digest;
	char *top_media_type;
	struct pp_buf top_bytes;

	/* The platform's image manifest (the same as top when no index). */
	char *manifest_digest;
	char *manifest_media_type;
	struct pp_buf manifest_bytes;
	struct pp_manifest manifest;
	struct pp_platform platform;

	struct pp_buf config_bytes; /* verified config blob */
	bool config_fetched;        /* downloaded now, not read from the store */
	double config_seconds;

	int64_t total_bytes; /* config + layers */
};

/* A place that may hold a blob already (the store), asked before the
 * registry.  read() returns 1 with *out (caller frees) and *len when it has
 * the blob with that digest and size (at most `max` bytes), 0 when it has
 * not, or a negative error. */
struct pp_blob_source {
	int (*read)(void *ctx, const char *digest, int64_t size, int64_t max, char **out,
		    size_t *len, struct pp_error *err);
	void *ctx;
};

/* Resolves `img->ref`: manifest (through the index for the wanted
 * platform), digests checked, config read from `local` (may be NULL) or
 * fetched, then checked against its digest and the layers. */
int pp_image_resolve(struct pp_image *img, const struct pp_options *opts,
		     const struct pp_blob_source *local, struct pp_error *err);
void pp_image_free(struct pp_image *img);

#endif
