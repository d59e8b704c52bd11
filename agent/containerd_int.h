/* The containerd store's insides, shared by store_containerd.c (content,
 * images, the unpack thread) and containerd_stream.c (layers applied by
 * prepull itself as their bytes arrive, or by containerd's Diff.Apply).  Nobody else includes this.
 */
#ifndef PREPULL_CONTAINERD_INT_H
#define PREPULL_CONTAINERD_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "prepull/digest.h"
#include "prepull/error.h"
#include "prepull/prefix.h"
#include "prepull/util.h"

struct pp_image;
struct pp_store;
struct stream;

#define SHORT(digest) pp_short_digest(digest)

/* One layer of an image being unpacked: copies, so the worker never
 * touches the pp_image (main frees images before the store). */
struct layer {
	char *digest;
	char *media_type;
	int64_t size;
	char diff_id[PP_DIGEST_STR_LEN + 1];
	char chain_id[PP_DIGEST_STR_LEN + 1];
	bool present;          /* in the content store and recorded in the namespace */
	struct stream *stream; /* applied as its bytes arrive, or NULL */
	/* How the unpack thread got it into the snapshotter (a
	 * struct pp_layer_unpack `by`; NULL until then), and how long the
	 * apply took.  Written by that thread before it counts the layer in
	 * `unpacked` (under c->mu); read only once `unpacked` is past it. */
	const char *unpacked_by;
	double unpack_seconds;
};

struct cimage {
	const struct pp_image *img; /* identity only; compared, never read by the worker */
	char *source_key;           /* containerd.io/distribution.source.<domain> */
	char *source_repo;
	struct layer *layers;
	size_t n_layers;
	size_t unpacked; /* layers [0, unpacked) are in the snapshotter */
	bool busy;       /* the worker is on it */
	bool failed;
	struct pp_error err;
	bool registered;
	struct cimage *next;
};

struct ctd {
	char *socket;
	char *ns;
	char *snapshotter;
	char *content_root;
	char *blob_dir;
	const char *stage_dir; /* the store's: files are written there, renamed in */
	char *lease;
	struct pp_grpc *g;  /* main thread */
	struct pp_grpc *wg; /* worker thread */

	pthread_mutex_t mu;
	pthread_cond_t cond; /* work for the worker, or an image finished */
	pthread_t worker;
	bool worker_running;
	bool stop;
	struct cimage *images;
	unsigned counter; /* for unique snapshot keys */
	bool direct;      /* layers may be applied by prepull itself (overlayfs) */
	bool discard;     /* --discard-layers: a layer's blob goes once it is unpacked */
	int direct_probe; /* 0 not yet, 1 containerd sees what we write, -1 it does not */
};

/* ---- containerd_stream.c ---- */

/* The store op: a consumer that applies layer `index` of a prepared image
 * into its snapshot while the bytes arrive (out->ops NULL when the layer
 * cannot be, e.g. another snapshotter). */
int ctd_layer_consumer(struct pp_store *s, const struct pp_image *img, size_t index,
		       struct pp_prefix_consumer *out, struct pp_error *err);
/* Whether the unpack thread may take layer `l` now: not while the fetch
 * loop is applying it.  Called locked. */
bool ctd_stream_busy(const struct layer *l);
/* On the unpack thread, for a layer whose blob is in: finishes a layer the
 * fetch loop was applying, or applies it from the store (prepull's own
 * inflate and tar apply).  Returns 0 when the layer is committed as its
 * chain ID, 1 when it must go through Diff.Apply instead (said why in -v),
 * or a negative error when nothing will work (stopped). */
int ctd_apply_direct(struct ctd *c, struct layer *l, const char *parent, struct pp_error *err);
void ctd_stream_free(struct stream *s);
/* containerd's own unpack recipe for a layer whose blob is in its content
 * store: Prepare, Diff.Apply, Commit.  0 once committed (or committed by
 * someone else), a negative error otherwise, nothing left active. */
int ctd_apply_by_containerd(struct ctd *c, struct layer *l, const char *parent,
			    struct pp_error *err);

#endif
