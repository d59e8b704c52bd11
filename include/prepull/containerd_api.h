/* The few calls of containerd's gRPC API the containerd store needs: the
 * protobuf encoding of their requests and the parsing of their answers
 * (Introspection, Content, Images, Leases, Snapshots, Diff), over a
 * pp_grpc connection that carries the namespace (and lease) metadata.
 * What to call when, and why, stays in store_containerd.c. */
#ifndef PREPULL_CONTAINERD_API_H
#define PREPULL_CONTAINERD_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "prepull/util.h"

struct pp_error;
struct pp_grpc;

/* Where containerd listens unless told otherwise. */
#define PP_CONTAINERD_DEFAULT_SOCKET "/run/containerd/containerd.sock"

struct pp_ctd_label {
	const char *key;
	const char *value;
};

/* One plugin as Introspection.Plugins describes it. */
struct pp_ctd_plugin {
	char *id;
	char *root;     /* its exports["root"], or NULL */
	char *init_err; /* why it failed to initialise, or NULL when it works */
};

/* Introspection.Plugins with one filter ("type==io.containerd.content.v1").
 * Caller frees *out with pp_ctd_plugins_free. */
int pp_ctd_plugins(struct pp_grpc *g, const char *filter, struct pp_ctd_plugin **out, size_t *n_out,
		   struct pp_error *err);
void pp_ctd_plugins_free(struct pp_ctd_plugin *list, size_t n);

/* Content.Update of some labels of a blob (the rest are kept). */
int pp_ctd_content_label(struct pp_grpc *g, const char *digest, const struct pp_ctd_label *labels,
			 size_t n, struct pp_error *err);

/* Records in the namespace a blob that is already in the content store's
 * blobs/sha256: Content.Write STAT then COMMIT with the expected digest,
 * and no data.  Labels go on the commit, or through Content.Update when the
 * namespace already had the blob.  A writer that did not share the blob
 * (content_sharing_policy "isolated", or the file vanished) is an error
 * that says so. */
int pp_ctd_content_register(struct pp_grpc *g, const char *digest, int64_t size,
			    const struct pp_ctd_label *labels, size_t n, struct pp_error *err);

/* Content.Delete of a blob's record in the namespace (one that is not
 * there is fine); containerd's garbage collector removes the file once no
 * namespace records it. */
int pp_ctd_content_delete(struct pp_grpc *g, const char *digest, struct pp_error *err);

/* Snapshots.Stat: 1 when snapshot `key` exists, 0 when not. */
int pp_ctd_snapshot_exists(struct pp_grpc *g, const char *snapshotter, const char *key,
			   struct pp_error *err);
/* Snapshots.List: the keys of the active snapshots in the namespace.
 * Caller frees with pp_ctd_names_free. */
int pp_ctd_snapshot_list_active(struct pp_grpc *g, const char *snapshotter, char ***out,
				size_t *n_out, struct pp_error *err);
void pp_ctd_names_free(char **names, size_t n);
/* Snapshots.Usage: the bytes snapshot `key` holds (containerd walks its
 * directory for an active one). */
int pp_ctd_snapshot_usage(struct pp_grpc *g, const char *snapshotter, const char *key,
			  int64_t *size, struct pp_error *err);
/* Snapshots.Remove; a failure is only warned about. */
void pp_ctd_snapshot_remove(struct pp_grpc *g, const char *snapshotter, const char *key);
/* Snapshots.Prepare of active snapshot `key` on `parent` (NULL: none).
 * *mounts receives the answer, for pp_ctd_diff_apply.  *code (when
 * non-NULL) is the gRPC status of a failure (ALREADY_EXISTS: someone else
 * prepared that key). */
int pp_ctd_snapshot_prepare(struct pp_grpc *g, const char *snapshotter, const char *key,
			    const char *parent, const struct pp_ctd_label *labels, size_t n,
			    struct pp_buf *mounts, int *code, struct pp_error *err);
/* Snapshots.Commit of active snapshot `key` as `name`. */
int pp_ctd_snapshot_commit(struct pp_grpc *g, const char *snapshotter, const char *name,
			   const char *key, const struct pp_ctd_label *labels, size_t n, int *code,
			   struct pp_error *err);

/* Where an active snapshot's files are, read from the mounts a Prepare
 * answered with: a bind mount's source (a first layer) or an overlay's
 * upperdir, with its lowerdirs (topmost first, NULL-terminated) and whether
 * it keeps whiteouts in user.* xattrs (`userxattr`).  PP_EUNSUPPORTED for
 * any other shape (another snapshotter's mounts).  Free with
 * pp_ctd_layout_free. */
struct pp_ctd_layout {
	char *dir;
	char **lowers;
	bool userxattr;
};
int pp_ctd_mounts_layout(const struct pp_buf *prepared, struct pp_ctd_layout *out,
			 struct pp_error *err);
void pp_ctd_layout_free(struct pp_ctd_layout *l);

/* Diff.Apply of a layer blob onto the mounts a Prepare answered with.
 * *diff_id is the digest of the uncompressed content containerd applied
 * (NULL when it did not say).  Caller frees. */
int pp_ctd_diff_apply(struct pp_grpc *g, const char *media_type, const char *digest, int64_t size,
		      const struct pp_buf *mounts, char **diff_id, struct pp_error *err);

/* Images.Create of image `name` with a target descriptor and labels; when
 * the name exists, Images.Update of its target and of those labels. */
int pp_ctd_image_put(struct pp_grpc *g, const char *name, const struct pp_ctd_label *labels,
		     size_t n, const char *media_type, const char *digest, int64_t size,
		     struct pp_error *err);

/* Leases.Create of lease `id` with labels; Leases.Delete. */
int pp_ctd_lease_create(struct pp_grpc *g, const char *id, const struct pp_ctd_label *labels,
			size_t n, struct pp_error *err);
int pp_ctd_lease_delete(struct pp_grpc *g, const char *id, struct pp_error *err);

#endif
