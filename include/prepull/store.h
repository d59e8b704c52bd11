/* Stores: where verified blobs land.  The fetch engine only ever sees this
 * table of functions, so adding a store never touches the scheduler. */
#ifndef PREPULL_STORE_H
#define PREPULL_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "prepull/digest.h"

/* In the state dir: the partial-file directories outside it, one per line. */
#define PP_STAGE_DIRS_FILE "stage-dirs"

struct pp_error;
struct pp_image;
struct pp_options;
struct pp_prefix_consumer;
struct pp_store;

/* How a store put one layer of an image into its unpacked form (--json). */
struct pp_layer_unpack {
	/* "prepull-streaming" (applied by prepull while its bytes arrived),
	 * "prepull-from-store" (by prepull, from the blob once it was in),
	 * "containerd" (the daemon's Diff.Apply), "already-unpacked" (its
	 * chain was there before this run). */
	const char *by;
	char chain_id[PP_DIGEST_STR_LEN + 1];
	double seconds; /* the apply's duration; 0 when nothing was applied */
};

struct pp_store_ops {
	const char *name;
	/* *out = true when the store holds a blob with this digest and size. */
	int (*has_blob)(struct pp_store *s, const char *digest, int64_t size, bool *out,
			struct pp_error *err);
	/* Reads a (small) blob the store holds into memory.  Caller frees *out. */
	int (*read_blob)(struct pp_store *s, const char *digest, int64_t max, char **out,
			 size_t *len, struct pp_error *err);
	/* Moves a verified, fsynced partial file into the store (a rename on
	 * the same filesystem; never a copy). */
	int (*commit_file)(struct pp_store *s, const char *digest, const char *path,
			   struct pp_error *err);
	/* Writes a small verified blob held in memory (manifest, index, config). */
	int (*put_blob)(struct pp_store *s, const char *digest, const void *data, size_t len,
			struct pp_error *err);
	/* Optional: *out = true when the store has layer `index` of an image,
	 * as a blob or in a form that needs no blob (Docker holding the layer
	 * stack by chain ID).  Without it, has_blob decides for layers too. */
	int (*has_layer)(struct pp_store *s, const struct pp_image *img, size_t index, bool *out,
			 struct pp_error *err);
	/* Optional (NULL when not needed): told about an image once it is
	 * resolved and before any of its layers is fetched, so a store can
	 * prepare (a lease, the layer order for unpacking as layers land).
	 * Setting *complete = true says the store already holds the whole
	 * image (e.g. Docker has an image with that ID): nothing is fetched
	 * and register_image is not called. */
	int (*prepare_image)(struct pp_store *s, const struct pp_image *img, bool *complete,
			     struct pp_error *err);
	/* Optional: a consumer that unpacks layer `index` of a prepared
	 * image while its bytes arrive (see prefix.h).  Leaving out->ops NULL
	 * says the store has none for this layer. */
	int (*layer_consumer)(struct pp_store *s, const struct pp_image *img, size_t index,
			      struct pp_prefix_consumer *out, struct pp_error *err);
	/* Makes the image visible under its name once all its blobs are in. */
	int (*register_image)(struct pp_store *s, const struct pp_image *img, struct pp_error *err);
	/* Optional, for a store that unpacks layers: *unpacked = how many
	 * layers of a prepared image, bottom up, are unpacked so far; *ready =
	 * how many, bottom up, it can unpack without more from the pull (their
	 * bytes are in and recorded; register_image may still find others).
	 * Returns 1 when it can say, 0 when it cannot (not prepared), or the
	 * error that stopped the unpacking.  Called from the main thread. */
	int (*layers_unpacked)(struct pp_store *s, const struct pp_image *img, size_t *unpacked,
			       size_t *ready, struct pp_error *err);
	/* Optional: how layer `index` of an image registered in this run was
	 * unpacked.  Returns 1 when it says (out filled), 0 when not. */
	int (*layer_unpack)(struct pp_store *s, const struct pp_image *img, size_t index,
			    struct pp_layer_unpack *out);
	void (*free)(struct pp_store *s);
};

struct pp_store {
	const struct pp_store_ops *ops;
	char *desc;           /* "oci:/abs/dir", shown to the user */
	char *stage_dir;      /* where partial files go: renamable into the blob dir */
	const char *blob_dir; /* the store's blobs/sha256, for the pp_store_dir_* ops */
	bool discards_layers; /* it can drop a layer's blob once unpacked (--discard-layers) */
	void *priv;
};

/* The door to a store: everything outside store*.c goes through these, never
 * through ->ops, so optional operations are decided in one place.  Each
 * returns 0 or a negative error code with err set. */

/* *out = true when the store holds a blob with this digest and size. */
int pp_store_has_blob(struct pp_store *s, const char *digest, int64_t size, bool *out,
		      struct pp_error *err);
/* Reads a small blob the store holds (at most `max` bytes).  Caller frees *out. */
int pp_store_read_blob(struct pp_store *s, const char *digest, int64_t max, char **out, size_t *len,
		       struct pp_error *err);
/* Moves a verified, fsynced partial file at `path` into the store. */
int pp_store_commit_file(struct pp_store *s, const char *digest, const char *path,
			 struct pp_error *err);
/* Writes a small verified blob held in memory. */
int pp_store_put_blob(struct pp_store *s, const char *digest, const void *data, size_t len,
		      struct pp_error *err);
/* *out = true when the store needs nothing fetched for layer `index` of
 * `img` (a blob it holds, or a layer stack it has by another name). */
int pp_store_has_layer(struct pp_store *s, const struct pp_image *img, size_t index, bool *out,
		       struct pp_error *err);
/* Told about a resolved image before any of its layers is fetched;
 * *complete = true when the store already holds the whole image. */
int pp_store_prepare_image(struct pp_store *s, const struct pp_image *img, bool *complete,
			   struct pp_error *err);
/* A consumer for layer `index` of a prepared image that unpacks it as its
 * bytes arrive; out->ops is NULL when the store has none (it unpacks after
 * the blob lands, or not at all). */
int pp_store_layer_consumer(struct pp_store *s, const struct pp_image *img, size_t index,
			    struct pp_prefix_consumer *out, struct pp_error *err);
/* Makes the image visible under its name once all its blobs are in. */
int pp_store_register_image(struct pp_store *s, const struct pp_image *img, struct pp_error *err);
/* For progress: *unpacked = layers of a prepared image, bottom up, that the
 * store has unpacked; *ready = those it can unpack without more from the
 * pull (ready may be NULL).  1 when it says, 0 when the store does not
 * unpack layers or cannot say, negative when the unpacking failed (err says
 * why; register_image reports the same). */
int pp_store_layers_unpacked(struct pp_store *s, const struct pp_image *img, size_t *unpacked,
			     size_t *ready, struct pp_error *err);
/* How layer `index` of a registered image was unpacked: 1 when the store
 * says, 0 when it does not unpack layers. */
int pp_store_layer_unpack(struct pp_store *s, const struct pp_image *img, size_t index,
			  struct pp_layer_unpack *out);

/* Calls fn for each directory that may hold partial blobs of runs with
 * this state dir: <state_dir>/partial (own = true), then those kept beside
 * stores on other filesystems, as PP_STAGE_DIRS_FILE lists them. */
void pp_store_each_stage_dir(const char *state_dir,
			     void (*fn)(void *ctx, const char *dir, bool own), void *ctx);

/* Opens a store from its spec ("oci:DIR", "auto").  The staging dir is
 * <state-dir>/partial when files can be renamed from there into the
 * store's blob directory, else a directory inside the store. */
int pp_store_open(struct pp_store **out, const char *spec, const struct pp_options *opts,
		  struct pp_error *err);
void pp_store_free(struct pp_store *s);

/* For stores that keep verified blobs as files named by their hex digest
 * in one directory (blobs/sha256): the shared file operations. */
char *pp_blob_dir_path(const char *blob_dir, const char *digest);
bool pp_blob_dir_has(const char *blob_dir, const char *digest, int64_t size);
int pp_blob_dir_read(const char *blob_dir, const char *digest, int64_t max, char **out, size_t *len,
		     struct pp_error *err);
/* Renames a verified partial file into the directory and fsyncs it. */
int pp_blob_dir_commit(const char *blob_dir, const char *digest, const char *path,
		       struct pp_error *err);
/* Writes a small verified blob, unless it is there already: into a new
 * file in `stage_dir` (the store's, renamable into the blob directory),
 * synced, given `mode`, then renamed in.  Never a temp file in the blob
 * directory itself: every file there is taken for a blob (containerd's
 * garbage collection fails on one that is not), and a kill leaves it. */
int pp_blob_dir_put(const char *blob_dir, const char *stage_dir, const char *digest,
		    const void *data, size_t len, unsigned mode, struct pp_error *err);

/* Where a store's partial files go: committing is a rename into `blobs`
 * (the store's blob directory), so that must work from there.
 * <state_dir>/partial when a rename from it into `blobs` succeeds (tried:
 * a bind mount of the same filesystem has the same st_dev, yet renames
 * across it fail with EXDEV), else `fallback` (created with `mode`).
 * Caller frees. */
char *pp_store_stage_dir(const char *state_dir, const char *blobs, const char *fallback,
			 unsigned mode);

/* The same operations as store ops, on s->blob_dir. */
int pp_store_dir_has_blob(struct pp_store *s, const char *digest, int64_t size, bool *out,
			  struct pp_error *err);
int pp_store_dir_read_blob(struct pp_store *s, const char *digest, int64_t max, char **out,
			   size_t *len, struct pp_error *err);
int pp_store_dir_commit_file(struct pp_store *s, const char *digest, const char *path,
			     struct pp_error *err);
int pp_store_dir_put_blob(struct pp_store *s, const char *digest, const void *data, size_t len,
			  struct pp_error *err);

/* Constructors, one per store file.  `socket` is NULL for the default.
 * They copy what they need from `opts`: the store keeps no pointer into it. */
int pp_store_oci_open(struct pp_store **out, const char *dir, const struct pp_options *opts,
		      struct pp_error *err);
int pp_store_containerd_open(struct pp_store **out, const char *socket,
			     const struct pp_options *opts, struct pp_error *err);
int pp_store_docker_open(struct pp_store **out, const char *socket, const struct pp_options *opts,
			 struct pp_error *err);

#endif
