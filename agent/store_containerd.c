/* The containerd store.  Verified blobs are renamed straight into
 * containerd's content store (<root>/io.containerd.content.v1.content/
 * blobs/sha256/<hex>), then recorded in the namespace through containerd's
 * gRPC API: Content.Write with the expected digest (with the "shared"
 * content policy no data is sent), image records, and every layer unpacked
 * into the snapshotter (Snapshots.Prepare, Diff.Apply, Snapshots.Commit).
 *
 * Unpacking overlaps the download: a worker thread applies layer N as soon
 * as it and every layer below it are in, while later layers still arrive.
 * The main thread (the fetch loop) only ever renames a file and registers
 * it, which takes a millisecond.  Each thread has its own gRPC connection.
 *
 * Everything is done under a lease, so nothing we add can be garbage
 * collected half-way.  The lease is deleted at the end when every image
 * made it; otherwise it is left to expire (a day), so a rerun finds the
 * blobs this run placed. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "prepull/digest.h"
#include "prepull/error.h"
#include "prepull/grpc.h"
#include "prepull/image.h"
#include "prepull/log.h"
#include "prepull/manifest.h"
#include "prepull/options.h"
#include "prepull/protobuf.h"
#include "prepull/reference.h"
#include "prepull/store.h"
#include "prepull/util.h"

#define DEFAULT_SOCKET "/run/containerd/containerd.sock"
#define LEASE_EXPIRE_SECONDS (24 * 3600)
#define CRI_NAMESPACE "k8s.io"

/* The short form of a digest ("sha256:" + 12 hex) for messages.  Not
 * SHORT(): its static ring is not safe from the unpack thread. */
struct short_digest {
	char s[20];
};
static struct short_digest short_digest(const char *digest)
{
	struct short_digest d;
	snprintf(d.s, sizeof(d.s), "%.19s", digest ? digest : "(none)");
	return d;
}
#define SHORT(digest) (short_digest(digest).s)

#define SVC_INTROSPECTION "/containerd.services.introspection.v1.Introspection/"
#define SVC_CONTENT "/containerd.services.content.v1.Content/"
#define SVC_IMAGES "/containerd.services.images.v1.Images/"
#define SVC_LEASES "/containerd.services.leases.v1.Leases/"
#define SVC_SNAPSHOTS "/containerd.services.snapshots.v1.Snapshots/"
#define SVC_DIFF "/containerd.services.diff.v1.Diff/"

enum { WRITE_STAT = 0, WRITE_COMMIT = 2 };

struct label {
	const char *key;
	const char *value;
};

/* One layer of an image being unpacked: copies, so the worker never
 * touches the pp_image (main frees images before the store). */
struct layer {
	char *digest;
	char *media_type;
	int64_t size;
	char diff_id[PP_DIGEST_STR_LEN + 1];
	char chain_id[PP_DIGEST_STR_LEN + 1];
	bool present; /* in the content store and recorded in the namespace */
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
};

/* ------------------------------------------------------------ messages */

static void put_labels(struct pp_buf *b, uint32_t field, const struct label *labels, size_t n)
{
	for (size_t i = 0; i < n; i++)
		pp_pb_put_map_entry(b, field, labels[i].key, labels[i].value);
}

/* containerd.types.Descriptor */
static void put_descriptor(struct pp_buf *b, uint32_t field, const char *media_type,
			   const char *digest, int64_t size)
{
	struct pp_buf d = {0};
	pp_pb_put_string(&d, 1, media_type);
	pp_pb_put_string(&d, 2, digest);
	pp_pb_put_uint(&d, 3, (uint64_t)size);
	pp_pb_put_message(b, field, &d);
	pp_buf_free(&d);
}

/* google.protobuf.FieldMask with one "labels.<key>" path per label. */
static void put_label_mask(struct pp_buf *b, uint32_t field, const struct label *labels, size_t n,
			   const char *extra_path)
{
	struct pp_buf m = {0};
	if (extra_path)
		pp_pb_put_string(&m, 1, extra_path);
	for (size_t i = 0; i < n; i++) {
		cleanup_free char *path = pp_xasprintf("labels.%s", labels[i].key);
		pp_pb_put_string(&m, 1, path);
	}
	pp_pb_put_message(b, field, &m);
	pp_buf_free(&m);
}

/* ------------------------------------------------------------ content */

static char *blob_path(const struct ctd *c, const char *digest)
{
	return pp_xasprintf("%s/%s", c->blob_dir, pp_digest_hex(digest));
}

static bool blob_present(const struct ctd *c, const char *digest, int64_t size)
{
	return pp_blob_dir_has(c->blob_dir, digest, size);
}

/* Content.Update of some labels of a blob. */
static int label_blob(struct pp_grpc *g, const char *digest, const struct label *labels, size_t n,
		      struct pp_error *err)
{
	struct pp_buf info = {0}, req = {0}, resp = {0};
	pp_pb_put_string(&info, 1, digest);
	put_labels(&info, 5, labels, n);
	pp_pb_put_message(&req, 1, &info);
	put_label_mask(&req, 2, labels, n, NULL);
	int r = pp_grpc_unary(g, SVC_CONTENT "Update", &req, &resp, NULL, err);
	pp_buf_free(&info);
	pp_buf_free(&req);
	pp_buf_free(&resp);
	if (r < 0)
		return pp_error_wrap(err, "label %s", SHORT(digest));
	return 0;
}

/* Records a blob that is already in blobs/sha256 in the namespace:
 * Content.Write STAT then COMMIT with the expected digest.  With the
 * shared content policy containerd finds the blob in its backend, reports
 * offset == size and commits without a byte of data.  Labels are set on
 * the commit (or by Content.Update when the namespace already had it). */
static int register_blob(struct pp_grpc *g, const char *digest, int64_t size,
			 const struct label *labels, size_t n, struct pp_error *err)
{
	cleanup_free char *ref = pp_xasprintf("prepull-%s", digest);
	struct pp_buf stat_msg = {0}, commit = {0}, body = {0}, resp = {0};
	pp_pb_put_string(&stat_msg, 2, ref);
	pp_pb_put_uint(&stat_msg, 3, (uint64_t)size);
	pp_pb_put_string(&stat_msg, 4, digest);
	pp_pb_put_uint(&commit, 1, WRITE_COMMIT);
	pp_pb_put_string(&commit, 2, ref);
	pp_pb_put_uint(&commit, 3, (uint64_t)size);
	pp_pb_put_string(&commit, 4, digest);
	pp_pb_put_uint(&commit, 5, (uint64_t)size);
	put_labels(&commit, 7, labels, n);
	/* containerd answers each message in turn; both can go at once. */
	pp_grpc_frame(&body, stat_msg.data, stat_msg.len);
	pp_grpc_frame(&body, commit.data, commit.len);
	int code = 0;
	int r = pp_grpc_call(g, SVC_CONTENT "Write", &body, &resp, &code, err);
	pp_buf_free(&stat_msg);
	pp_buf_free(&commit);
	pp_buf_free(&body);
	pp_buf_free(&resp);
	if (r < 0 && code == PP_GRPC_ALREADY_EXISTS) {
		/* Already recorded in this namespace. */
		pp_error_clear(err);
		return n ? label_blob(g, digest, labels, n, err) : 0;
	}
	if (r < 0 && code == PP_GRPC_OUT_OF_RANGE) {
		/* The writer did not share the blob we placed: the content
		 * policy is "isolated", or the file vanished. */
		return pp_error_wrap(err,
				     "containerd did not take %s from its content store without "
				     "data (is content_sharing_policy \"isolated\"?)",
				     SHORT(digest));
	}
	if (r < 0)
		return pp_error_wrap(err, "register %s", SHORT(digest));
	return 0;
}

/* Places a verified file at blobs/sha256/<hex>: read-only, renamed, the
 * directory synced.  The file itself was fsynced by whoever verified it. */
static int place_file(struct ctd *c, const char *digest, const char *path, struct pp_error *err)
{
	cleanup_free char *dst = blob_path(c, digest);
	if (chmod(path, 0444) < 0)
		return pp_error_errno(err, "chmod %s", path);
	if (rename(path, dst) < 0)
		return pp_error_errno(err, "rename %s to %s", path, dst);
	if (pp_fsync_dir(c->blob_dir) < 0)
		return pp_error_errno(err, "sync %s", c->blob_dir);
	return 0;
}

/* Labels containerd's own pull puts on every blob it fetched. */
static size_t source_labels(const struct cimage *ci, struct label *out)
{
	if (!ci)
		return 0;
	out[0] = (struct label){ci->source_key, ci->source_repo};
	return 1;
}

/* ------------------------------------------------------------ store ops */

static int ctd_has_blob(struct pp_store *s, const char *digest, int64_t size, bool *out,
			struct pp_error *err)
{
	*out = blob_present(s->priv, digest, size);
	return 0;
}

/* Marks a layer present in every image that has it; wakes the worker. */
static void mark_present(struct ctd *c, const char *digest)
{
	pthread_mutex_lock(&c->mu);
	for (struct cimage *ci = c->images; ci; ci = ci->next)
		for (size_t i = 0; i < ci->n_layers; i++)
			if (strcmp(ci->layers[i].digest, digest) == 0)
				ci->layers[i].present = true;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->mu);
}

/* The image a digest belongs to (for its source labels), or NULL. */
static struct cimage *image_of(struct ctd *c, const char *digest)
{
	struct cimage *found = NULL;
	pthread_mutex_lock(&c->mu);
	for (struct cimage *ci = c->images; ci && !found; ci = ci->next)
		for (size_t i = 0; i < ci->n_layers && !found; i++)
			if (strcmp(ci->layers[i].digest, digest) == 0)
				found = ci;
	pthread_mutex_unlock(&c->mu);
	return found;
}

static int ctd_commit_file(struct pp_store *s, const char *digest, const char *path,
			   struct pp_error *err)
{
	struct ctd *c = s->priv;
	struct stat st;
	if (stat(path, &st) < 0)
		return pp_error_errno(err, "stat %s", path);
	int r = place_file(c, digest, path, err);
	if (r < 0)
		return r;
	struct label labels[1];
	/* Images are only added by prepare_image on this thread: the pointer
	 * stays valid. */
	size_t n = source_labels(image_of(c, digest), labels);
	if ((r = register_blob(c->g, digest, st.st_size, labels, n, err)) < 0)
		return r;
	mark_present(c, digest);
	return 0;
}

static int put_blob_labels(struct ctd *c, const char *digest, const void *data, size_t len,
			   const struct label *labels, size_t n, struct pp_error *err)
{
	if (!blob_present(c, digest, (int64_t)len)) {
		cleanup_free char *p = blob_path(c, digest);
		int r = pp_write_file_atomic(p, data, len, err);
		if (r < 0)
			return r;
		if (chmod(p, 0444) < 0)
			return pp_error_errno(err, "chmod %s", p);
	}
	return register_blob(c->g, digest, (int64_t)len, labels, n, err);
}

static int ctd_put_blob(struct pp_store *s, const char *digest, const void *data, size_t len,
			struct pp_error *err)
{
	return put_blob_labels(s->priv, digest, data, len, NULL, 0, err);
}

/* ------------------------------------------------------------ unpacking */

/* Snapshots.Stat: 1 when the snapshot exists, 0 when not. */
static int snapshot_exists(struct ctd *c, const char *key, struct pp_error *err)
{
	struct pp_buf req = {0}, resp = {0};
	pp_pb_put_string(&req, 1, c->snapshotter);
	pp_pb_put_string(&req, 2, key);
	int code = 0;
	int r = pp_grpc_unary(c->wg, SVC_SNAPSHOTS "Stat", &req, &resp, &code, err);
	pp_buf_free(&req);
	pp_buf_free(&resp);
	if (r < 0 && code == PP_GRPC_NOT_FOUND) {
		pp_error_clear(err);
		return 0;
	}
	return r < 0 ? r : 1;
}

static void remove_snapshot(struct ctd *c, const char *key)
{
	struct pp_buf req = {0}, resp = {0};
	struct pp_error e = {0};
	pp_pb_put_string(&req, 1, c->snapshotter);
	pp_pb_put_string(&req, 2, key);
	if (pp_grpc_unary(c->wg, SVC_SNAPSHOTS "Remove", &req, &resp, NULL, &e) < 0)
		pp_warn("remove snapshot %s: %s", key, e.msg);
	pp_buf_free(&req);
	pp_buf_free(&resp);
}

/* Collects the raw Mount messages of a PrepareSnapshotResponse, ready to be
 * passed on as ApplyRequest.mounts (field 2). */
static int mounts_for_apply(const struct pp_buf *resp, struct pp_buf *out, struct pp_error *err)
{
	struct pp_pb_reader rd = {0};
	struct pp_pb_field f;
	int r;
	size_t n = 0;
	pp_pb_reader_init(&rd, resp->data, resp->len);
	while ((r = pp_pb_next(&rd, &f, err)) > 0) {
		if (f.num != 1)
			continue;
		if (f.wire != PP_PB_LEN)
			return pp_error_set(err, PP_EPROTO, "Prepare: mount is not a message");
		pp_pb_put_bytes(out, 2, f.data, f.len);
		n++;
	}
	if (r < 0)
		return r;
	if (n == 0)
		return pp_error_set(err, PP_EPROTO, "Prepare returned no mounts");
	return 0;
}

/* ApplyResponse.applied.digest */
static int applied_digest(const struct pp_buf *resp, char **out, struct pp_error *err)
{
	struct pp_pb_reader rd = {0}, sub = {0};
	struct pp_pb_field f, g;
	int r;
	pp_pb_reader_init(&rd, resp->data, resp->len);
	while ((r = pp_pb_next(&rd, &f, err)) > 0) {
		if (f.num != 1)
			continue;
		if ((r = pp_pb_sub(&f, &sub, err)) < 0)
			return r;
		while ((r = pp_pb_next(&sub, &g, err)) > 0)
			if (g.num == 2 && (r = pp_pb_string(&g, out, err)) < 0)
				return r;
		if (r < 0)
			return r;
	}
	return r;
}

/* The unpack recipe for one layer (containerd's own, without its Go
 * client): skip when the chain exists; else Prepare, Apply, Commit. */
static int unpack_layer(struct ctd *c, const struct layer *l, const char *parent,
			struct pp_error *err)
{
	int r = snapshot_exists(c, l->chain_id, err);
	if (r != 0) {
		if (r > 0)
			pp_debug("layer %s: chain %s already unpacked", SHORT(l->digest),
				 SHORT(l->chain_id));
		return r < 0 ? r : 0;
	}
	double t0 = pp_now();
	cleanup_free char *key = NULL;
	pthread_mutex_lock(&c->mu);
	key = pp_xasprintf("extract-prepull-%lld-%d-%u %s", (long long)time(NULL), (int)getpid(),
			   ++c->counter, l->chain_id);
	pthread_mutex_unlock(&c->mu);

	struct label labels[3] = {
		{"containerd.io/snapshot.ref", l->chain_id},
		{"containerd.io/snapshot/diff-id", l->diff_id},
		{"containerd.io/snapshot/parent-chain-id", parent},
	};
	size_t n_labels = parent ? 3 : 2;
	struct pp_buf req = {0}, resp = {0}, apply = {0};
	cleanup_free char *got = NULL;
	int code = 0;
	bool prepared = false;

	pp_pb_put_string(&req, 1, c->snapshotter);
	pp_pb_put_string(&req, 2, key);
	pp_pb_put_string(&req, 3, parent);
	put_labels(&req, 4, labels, n_labels);
	r = pp_grpc_unary(c->wg, SVC_SNAPSHOTS "Prepare", &req, &resp, &code, err);
	if (r < 0 && code == PP_GRPC_ALREADY_EXISTS) {
		/* Someone else is on it or finished it. */
		pp_error_clear(err);
		r = snapshot_exists(c, l->chain_id, err);
		if (r > 0)
			r = 0;
		else if (r == 0)
			r = pp_error_set(err, PP_EGENERIC,
					 "snapshot %s is being prepared by another "
					 "client",
					 l->chain_id);
		goto done;
	}
	if (r < 0)
		goto done;
	prepared = true;

	put_descriptor(&apply, 1, l->media_type, l->digest, l->size);
	if ((r = mounts_for_apply(&resp, &apply, err)) < 0)
		goto done;
	if ((r = pp_grpc_unary(c->wg, SVC_DIFF "Apply", &apply, &resp, NULL, err)) < 0)
		goto done;
	if ((r = applied_digest(&resp, &got, err)) < 0)
		goto done;
	if (!got || strcmp(got, l->diff_id) != 0) {
		r = pp_error_set(err, PP_EDIGEST,
				 "unpacked content hashes to %s, the config's diff_id is %s",
				 got ? got : "(none)", l->diff_id);
		goto done;
	}

	pp_buf_free(&req);
	pp_pb_put_string(&req, 1, c->snapshotter);
	pp_pb_put_string(&req, 2, l->chain_id);
	pp_pb_put_string(&req, 3, key);
	put_labels(&req, 4, labels, n_labels);
	r = pp_grpc_unary(c->wg, SVC_SNAPSHOTS "Commit", &req, &resp, &code, err);
	if (r < 0 && code == PP_GRPC_ALREADY_EXISTS) {
		pp_error_clear(err);
		r = 0;
		goto done; /* the same chain, committed by someone else */
	}
	if (r == 0)
		prepared = false; /* the active snapshot became the committed one */
	pp_debug("layer %s: unpacked as %s in %.2f s", SHORT(l->digest), SHORT(l->chain_id),
		 pp_now() - t0);
done:
	if (prepared)
		remove_snapshot(c, key);
	pp_buf_free(&req);
	pp_buf_free(&resp);
	pp_buf_free(&apply);
	if (r < 0)
		return r;
	struct label unc = {"containerd.io/uncompressed", l->diff_id};
	return label_blob(c->wg, l->digest, &unc, 1, err);
}

/* Finds an image whose next layer can be unpacked; called locked. */
static struct cimage *next_job(struct ctd *c)
{
	for (struct cimage *ci = c->images; ci; ci = ci->next)
		if (!ci->busy && !ci->failed && ci->unpacked < ci->n_layers &&
		    ci->layers[ci->unpacked].present)
			return ci;
	return NULL;
}

static void *worker_main(void *arg)
{
	struct ctd *c = arg;
	pthread_mutex_lock(&c->mu);
	for (;;) {
		if (c->stop)
			break;
		struct cimage *ci = next_job(c);
		if (!ci) {
			pthread_cond_wait(&c->cond, &c->mu);
			continue;
		}
		size_t i = ci->unpacked;
		const struct layer *l = &ci->layers[i];
		const char *parent = i ? ci->layers[i - 1].chain_id : NULL;
		ci->busy = true;
		pthread_mutex_unlock(&c->mu);

		struct pp_error err = {0};
		int r = unpack_layer(c, l, parent, &err);
		if (r < 0)
			pp_error_wrap(&err, "unpack layer %zu (%s)", i + 1, SHORT(l->digest));

		pthread_mutex_lock(&c->mu);
		ci->busy = false;
		if (r < 0) {
			ci->failed = true;
			ci->err = err;
		} else {
			ci->unpacked++;
		}
		pthread_cond_broadcast(&c->cond);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

/* ------------------------------------------------------------ images */

static void chain_ids(struct layer *layers, size_t n)
{
	for (size_t i = 0; i < n; i++)
		pp_chain_id(i ? layers[i - 1].chain_id : NULL, layers[i].diff_id,
			    layers[i].chain_id);
}

static void cimage_free(struct cimage *ci)
{
	for (size_t i = 0; i < ci->n_layers; i++) {
		free(ci->layers[i].digest);
		free(ci->layers[i].media_type);
	}
	free(ci->layers);
	free(ci->source_key);
	free(ci->source_repo);
	free(ci);
}

static int ctd_prepare_image(struct pp_store *s, const struct pp_image *img, bool *complete,
			     struct pp_error *err)
{
	struct ctd *c = s->priv;
	char **diff_ids = NULL;
	size_t n = 0;
	int r = pp_config_diff_ids(&diff_ids, &n, img->config_bytes.data, img->config_bytes.len,
				   err);
	if (r < 0)
		return r;
	struct cimage *ci = pp_xcalloc(1, sizeof(*ci));
	ci->img = img;
	ci->source_key = pp_xasprintf("containerd.io/distribution.source.%s", img->ref.domain);
	ci->source_repo = pp_xstrdup(img->ref.path);
	ci->n_layers = img->manifest.n_layers;
	ci->layers = pp_xcalloc(ci->n_layers ? ci->n_layers : 1, sizeof(*ci->layers));
	for (size_t i = 0; i < ci->n_layers && r == 0; i++) {
		const struct pp_descriptor *d = &img->manifest.layers[i];
		struct layer *l = &ci->layers[i];
		l->digest = pp_xstrdup(d->digest);
		l->media_type = pp_xstrdup(d->media_type ? d->media_type : "");
		l->size = d->size;
		if (i >= n || pp_digest_validate(diff_ids[i], err) < 0)
			r = pp_error_set(err, PP_EPROTO, "config %s: bad or missing diff_id %zu",
					 SHORT(img->manifest.config.digest), i);
		else
			memcpy(l->diff_id, diff_ids[i], sizeof(l->diff_id));
	}
	for (size_t i = 0; i < n; i++)
		free(diff_ids[i]);
	free(diff_ids);
	if (r < 0) {
		cimage_free(ci);
		return r;
	}
	chain_ids(ci->layers, ci->n_layers);

	/* Layers already in the content store are recorded in the namespace
	 * now, so their unpacking starts while the others download. */
	struct label labels[1];
	size_t n_labels = source_labels(ci, labels);
	for (size_t i = 0; i < ci->n_layers; i++) {
		struct layer *l = &ci->layers[i];
		if (!blob_present(c, l->digest, l->size))
			continue;
		if ((r = register_blob(c->g, l->digest, l->size, labels, n_labels, err)) < 0) {
			cimage_free(ci);
			return r;
		}
		l->present = true;
	}

	pthread_mutex_lock(&c->mu);
	ci->next = c->images;
	c->images = ci;
	if (!c->worker_running) {
		int e = pthread_create(&c->worker, NULL, worker_main, c);
		if (e != 0) {
			pthread_mutex_unlock(&c->mu);
			errno = e;
			return pp_error_errno(err, "start the unpack thread");
		}
		c->worker_running = true;
	}
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->mu);
	*complete = false;
	return 0;
}

/* Images.Create, or Update when the name exists. */
static int put_image_record(struct ctd *c, const char *name, const struct pp_image *img,
			    const char *top_type, bool cri, struct pp_error *err)
{
	struct label managed = {"io.cri-containerd.image", "managed"};
	struct pp_buf image = {0}, req = {0}, resp = {0};
	pp_pb_put_string(&image, 1, name);
	if (cri)
		put_labels(&image, 2, &managed, 1);
	put_descriptor(&image, 3, top_type, img->top_digest, (int64_t)img->top_bytes.len);
	pp_pb_put_message(&req, 1, &image);
	int code = 0;
	int r = pp_grpc_unary(c->g, SVC_IMAGES "Create", &req, &resp, &code, err);
	if (r < 0 && code == PP_GRPC_ALREADY_EXISTS) {
		pp_error_clear(err);
		pp_buf_free(&req);
		pp_pb_put_message(&req, 1, &image);
		put_label_mask(&req, 2, &managed, cri ? 1 : 0, "target");
		r = pp_grpc_unary(c->g, SVC_IMAGES "Update", &req, &resp, NULL, err);
	}
	pp_buf_free(&image);
	pp_buf_free(&req);
	pp_buf_free(&resp);
	if (r < 0)
		return pp_error_wrap(err, "image record %s", name);
	return 0;
}

static int register_all(struct ctd *c, struct cimage *ci, const struct pp_image *img,
			struct label *labels, struct pp_error *err)
{
	size_t n = source_labels(ci, labels);
	int r;

	/* Layers that were in the store without passing through commit_file
	 * (placed by another process meanwhile). */
	for (size_t i = 0; i < ci->n_layers; i++) {
		struct layer *l = &ci->layers[i];
		pthread_mutex_lock(&c->mu);
		bool present = l->present;
		pthread_mutex_unlock(&c->mu);
		if (present)
			continue;
		if (!blob_present(c, l->digest, l->size))
			return pp_error_set(err, PP_ENOTFOUND, "layer %s is not in %s",
					    SHORT(l->digest), c->blob_dir);
		if ((r = register_blob(c->g, l->digest, l->size, labels, n, err)) < 0)
			return r;
		mark_present(c, l->digest);
	}

	/* Wait for the unpacking of every layer. */
	pthread_mutex_lock(&c->mu);
	while (!ci->failed && ci->unpacked < ci->n_layers)
		pthread_cond_wait(&c->cond, &c->mu);
	bool failed = ci->failed;
	if (failed)
		*err = ci->err;
	pthread_mutex_unlock(&c->mu);
	if (failed)
		return err->code ? err->code : PP_EGENERIC;

	/* Config, with the GC edge that keeps the snapshot chain alive. */
	const struct pp_descriptor *cfg = &img->manifest.config;
	cleanup_free char *snap_key =
		pp_xasprintf("containerd.io/gc.ref.snapshot.%s", c->snapshotter);
	if (ci->n_layers)
		labels[n++] = (struct label){snap_key, ci->layers[ci->n_layers - 1].chain_id};
	if ((r = put_blob_labels(c, cfg->digest, img->config_bytes.data, img->config_bytes.len,
				 labels, n, err)) < 0)
		return pp_error_wrap(err, "config");

	/* Manifest, referencing its config and layers. */
	n = source_labels(ci, labels);
	labels[n++] = (struct label){"containerd.io/gc.ref.content.config", cfg->digest};
	char(*lkeys)[64] = pp_xcalloc(ci->n_layers ? ci->n_layers : 1, sizeof(*lkeys));
	for (size_t i = 0; i < ci->n_layers; i++) {
		snprintf(lkeys[i], sizeof(lkeys[i]), "containerd.io/gc.ref.content.l.%zu", i);
		labels[n++] = (struct label){lkeys[i], ci->layers[i].digest};
	}
	r = put_blob_labels(c, img->manifest_digest, img->manifest_bytes.data,
			    img->manifest_bytes.len, labels, n, err);
	free(lkeys);
	if (r < 0)
		return pp_error_wrap(err, "manifest");

	/* The index, referencing the platform's manifest. */
	if (strcmp(img->top_digest, img->manifest_digest) != 0) {
		n = source_labels(ci, labels);
		labels[n++] =
			(struct label){"containerd.io/gc.ref.content.m.0", img->manifest_digest};
		if ((r = put_blob_labels(c, img->top_digest, img->top_bytes.data,
					 img->top_bytes.len, labels, n, err)) < 0)
			return pp_error_wrap(err, "index");
	}

	/* The image records.  For CRI (k8s.io): the tag, the digest and the
	 * image ID (config digest) records, all labelled managed. */
	const char *top_type = img->top_media_type;
	if (!top_type || !*top_type)
		top_type = strcmp(img->top_digest, img->manifest_digest) == 0
				   ? img->manifest_media_type
				   : PP_MT_OCI_INDEX;
	bool cri = strcmp(c->ns, CRI_NAMESPACE) == 0;
	if ((r = put_image_record(c, img->ref.full, img, top_type, cri, err)) < 0)
		return r;
	if (cri) {
		cleanup_free char *name = pp_ref_name(&img->ref);
		cleanup_free char *by_digest = pp_xasprintf("%s@%s", name, img->top_digest);
		if (strcmp(by_digest, img->ref.full) != 0 &&
		    (r = put_image_record(c, by_digest, img, top_type, cri, err)) < 0)
			return r;
		if ((r = put_image_record(c, cfg->digest, img, top_type, cri, err)) < 0)
			return r;
	}
	pthread_mutex_lock(&c->mu);
	ci->registered = true;
	pthread_mutex_unlock(&c->mu);
	pp_debug("containerd: %s registered in namespace %s", img->ref.full, c->ns);
	return 0;
}

static struct cimage *find_image(struct ctd *c, const struct pp_image *img)
{
	for (struct cimage *ci = c->images; ci; ci = ci->next)
		if (ci->img == img)
			return ci;
	return NULL;
}

static int ctd_register_image(struct pp_store *s, const struct pp_image *img, struct pp_error *err)
{
	struct ctd *c = s->priv;
	pthread_mutex_lock(&c->mu);
	struct cimage *ci = find_image(c, img);
	pthread_mutex_unlock(&c->mu);
	if (!ci)
		return pp_error_set(err, PP_EGENERIC, "image %s was not prepared", img->ref.full);
	/* source, config, one per layer */
	struct label *labels = pp_xcalloc(ci->n_layers + 3, sizeof(*labels));
	int r = register_all(c, ci, img, labels, err);
	free(labels);
	return r;
}

/* ------------------------------------------------------------ lifetime */

static int create_lease(struct ctd *c, struct pp_error *err)
{
	char expire[64];
	time_t t = time(NULL) + LEASE_EXPIRE_SECONDS;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(expire, sizeof(expire), "%Y-%m-%dT%H:%M:%SZ", &tm);
	c->lease = pp_xasprintf("prepull-%d-%lld", (int)getpid(), (long long)time(NULL));
	struct label l = {"containerd.io/gc.expire", expire};
	struct pp_buf req = {0}, resp = {0};
	pp_pb_put_string(&req, 1, c->lease);
	put_labels(&req, 3, &l, 1);
	int r = pp_grpc_unary(c->g, SVC_LEASES "Create", &req, &resp, NULL, err);
	pp_buf_free(&req);
	pp_buf_free(&resp);
	if (r < 0) {
		free(c->lease);
		c->lease = NULL;
		return r;
	}
	pp_grpc_set_metadata(c->g, "containerd-lease", c->lease);
	pp_grpc_set_metadata(c->wg, "containerd-lease", c->lease);
	return 0;
}

static void delete_lease(struct ctd *c)
{
	struct pp_buf req = {0}, resp = {0};
	struct pp_error err = {0};
	pp_grpc_set_metadata(c->g, "containerd-lease", NULL);
	pp_pb_put_string(&req, 1, c->lease);
	if (pp_grpc_unary(c->g, SVC_LEASES "Delete", &req, &resp, NULL, &err) < 0)
		pp_warn("containerd: delete lease %s: %s", c->lease, err.msg);
	pp_buf_free(&req);
	pp_buf_free(&resp);
}

static void ctd_free(struct pp_store *s)
{
	struct ctd *c = s->priv;
	if (!c)
		return;
	if (c->worker_running) {
		pthread_mutex_lock(&c->mu);
		c->stop = true;
		pthread_cond_broadcast(&c->cond);
		pthread_mutex_unlock(&c->mu);
		pthread_join(c->worker, NULL);
	}
	bool all_in = true;
	while (c->images) {
		struct cimage *ci = c->images;
		c->images = ci->next;
		all_in = all_in && ci->registered;
		cimage_free(ci);
	}
	if (c->lease) {
		if (all_in)
			delete_lease(c);
		else
			pp_info("containerd: lease %s kept (expires in a day) so the next run "
				"finds what this one placed",
				c->lease);
	}
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cond);
	pp_grpc_free(c->g);
	pp_grpc_free(c->wg);
	free(c->socket);
	free(c->ns);
	free(c->snapshotter);
	free(c->content_root);
	free(c->blob_dir);
	free(c->lease);
	free(c);
}

static const struct pp_store_ops ctd_ops = {
	.name = "containerd",
	.has_blob = ctd_has_blob,
	.read_blob = pp_store_dir_read_blob,
	.commit_file = ctd_commit_file,
	.put_blob = ctd_put_blob,
	.prepare_image = ctd_prepare_image,
	.register_image = ctd_register_image,
	.free = ctd_free,
};

/* Introspection.Plugins with one filter; calls `fn` for each plugin's
 * (id, exports root, init error message). */
struct plugin {
	char *id;
	char *root;
	char *init_err;
};

static void plugin_free(struct plugin *p)
{
	free(p->id);
	free(p->root);
	free(p->init_err);
}

static int parse_plugin(struct pp_pb_reader *rd, struct plugin *p, struct pp_error *err)
{
	struct pp_pb_field f;
	int r;
	while ((r = pp_pb_next(rd, &f, err)) > 0) {
		if (f.num == 2) {
			if ((r = pp_pb_string(&f, &p->id, err)) < 0)
				return r;
		} else if (f.num == 5) {
			const uint8_t *k, *v;
			size_t kl, vl;
			if ((r = pp_pb_map_entry(&f, &k, &kl, &v, &vl, err)) < 0)
				return r;
			if (kl == 4 && memcmp(k, "root", 4) == 0) {
				free(p->root);
				p->root = pp_xstrndup((const char *)v, vl);
			}
		} else if (f.num == 7) {
			/* google.rpc.Status {code = 1, message = 2} */
			struct pp_pb_reader st = {0};
			struct pp_pb_field g;
			if ((r = pp_pb_sub(&f, &st, err)) < 0)
				return r;
			while ((r = pp_pb_next(&st, &g, err)) > 0)
				if (g.num == 2 && (r = pp_pb_string(&g, &p->init_err, err)) < 0)
					return r;
			if (r < 0)
				return r;
			if (!p->init_err)
				p->init_err = pp_xstrdup("failed to initialise");
		}
	}
	return r;
}

static int list_plugins(struct ctd *c, const char *filter, struct plugin **out, size_t *n_out,
			struct pp_error *err)
{
	struct pp_buf req = {0}, resp = {0};
	pp_pb_put_string(&req, 1, filter);
	int r = pp_grpc_unary(c->g, SVC_INTROSPECTION "Plugins", &req, &resp, NULL, err);
	pp_buf_free(&req);
	if (r < 0)
		return r;
	struct plugin *list = NULL;
	size_t n = 0;
	struct pp_pb_reader rd = {0}, sub = {0};
	struct pp_pb_field f;
	pp_pb_reader_init(&rd, resp.data, resp.len);
	while ((r = pp_pb_next(&rd, &f, err)) > 0) {
		if (f.num != 1)
			continue;
		if ((r = pp_pb_sub(&f, &sub, err)) < 0)
			break;
		list = realloc(list, (n + 1) * sizeof(*list));
		if (!list)
			abort();
		list[n] = (struct plugin){0};
		r = parse_plugin(&sub, &list[n], err);
		n++;
		if (r < 0)
			break;
	}
	pp_buf_free(&resp);
	if (r < 0) {
		for (size_t i = 0; i < n; i++)
			plugin_free(&list[i]);
		free(list);
		return pp_error_wrap(err, "containerd Introspection.Plugins");
	}
	*out = list;
	*n_out = n;
	return 0;
}

static void free_plugins(struct plugin *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		plugin_free(&list[i]);
	free(list);
}

/* Asks containerd where its content store is, and checks the snapshotter. */
static int introspect(struct ctd *c, struct pp_error *err)
{
	struct plugin *list = NULL;
	size_t n = 0;
	int r = list_plugins(c, "type==io.containerd.content.v1", &list, &n, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n && !c->content_root; i++)
		if (list[i].root && !list[i].init_err)
			c->content_root = pp_xstrdup(list[i].root);
	free_plugins(list, n);
	if (!c->content_root)
		return pp_error_set(err, PP_EUNSUPPORTED,
				    "containerd at %s has no local content store (no root "
				    "exported by an io.containerd.content.v1 plugin)",
				    c->socket);

	if ((r = list_plugins(c, "type==io.containerd.snapshotter.v1", &list, &n, err)) < 0)
		return r;
	char names[512] = "";
	bool found = false;
	for (size_t i = 0; i < n; i++) {
		if (!list[i].id)
			continue;
		if (strcmp(list[i].id, c->snapshotter) == 0) {
			found = true;
			if (list[i].init_err) {
				char m[300];
				r = pp_error_set(err, PP_EUNSUPPORTED,
						 "containerd's snapshotter %s is not available: %s",
						 c->snapshotter,
						 pp_printable(m, sizeof(m), list[i].init_err));
			}
		}
		if (!list[i].init_err) {
			size_t len = strlen(names);
			snprintf(names + len, sizeof(names) - len, "%s%s", len ? ", " : "",
				 list[i].id);
		}
	}
	free_plugins(list, n);
	if (r < 0)
		return r;
	if (!found) {
		char m[100];
		return pp_error_set(err, PP_EUSAGE,
				    "--snapshotter %s: containerd has no such snapshotter (it has: "
				    "%s)",
				    pp_printable(m, sizeof(m), c->snapshotter),
				    names[0] ? names : "none");
	}
	return 0;
}

int pp_store_containerd_open(struct pp_store **out, const char *socket,
			     const struct pp_options *opts, struct pp_error *err)
{
	if (!socket || !*socket)
		socket = DEFAULT_SOCKET;
	const char *ns = opts->namespace && *opts->namespace ? opts->namespace : CRI_NAMESPACE;
	const char *snapshotter =
		opts->snapshotter && *opts->snapshotter ? opts->snapshotter : "overlayfs";
	struct ctd *c = pp_xcalloc(1, sizeof(*c));
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cond, NULL);
	c->socket = pp_xstrdup(socket);
	c->ns = pp_xstrdup(ns);
	c->snapshotter = pp_xstrdup(snapshotter);
	struct pp_store *s = pp_xcalloc(1, sizeof(*s));
	s->ops = &ctd_ops;
	s->priv = c;
	s->desc = pp_xasprintf("containerd:%s (namespace %s, snapshotter %s)", socket, ns,
			       snapshotter);
	int r;
	if ((r = pp_grpc_new(&c->g, socket, err)) < 0 || (r = pp_grpc_new(&c->wg, socket, err)) < 0)
		goto fail;
	pp_grpc_set_metadata(c->g, "containerd-namespace", ns);
	pp_grpc_set_metadata(c->wg, "containerd-namespace", ns);
	/* Applying a large layer takes as long as it takes. */
	pp_grpc_set_timeout(c->wg, 3600);
	if ((r = introspect(c, err)) < 0)
		goto fail;
	c->blob_dir = pp_xasprintf("%s/blobs/sha256", c->content_root);
	s->blob_dir = c->blob_dir;
	if (pp_mkdir_p(c->blob_dir, 0755) < 0 || access(c->blob_dir, W_OK) < 0) {
		r = errno == EACCES
			    ? pp_error_set(err, PP_EAUTH,
					   "cannot write to containerd's content store %s: "
					   "permission denied (run as root)",
					   c->blob_dir)
			    : pp_error_errno(err, "containerd content store %s", c->blob_dir);
		goto fail;
	}
	if ((r = create_lease(c, err)) < 0)
		goto fail;
	char *fallback = pp_xasprintf("%s/prepull-partial", c->content_root);
	s->stage_dir = pp_store_stage_dir(opts->state_dir, c->blob_dir, fallback, 0700);
	free(fallback);
	pp_debug("containerd: content store %s, staging in %s, lease %s", c->content_root,
		 s->stage_dir, c->lease);
	*out = s;
	return 0;
fail:
	pp_store_free(s);
	return r;
}
