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
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "containerd_int.h"
#include "prepull/containerd_api.h"
#include "prepull/digest.h"
#include "prepull/error.h"
#include "prepull/grpc.h"
#include "prepull/image.h"
#include "prepull/log.h"
#include "prepull/manifest.h"
#include "prepull/options.h"
#include "prepull/reference.h"
#include "prepull/stop.h"
#include "prepull/store.h"
#include "prepull/util.h"

#define LEASE_EXPIRE_SECONDS (24 * 3600)
#define CRI_NAMESPACE "k8s.io"

/* ------------------------------------------------------------ content */

/* Places a verified file at blobs/sha256/<hex>: read-only (as containerd
 * keeps its blobs), renamed, the directory synced.  The file itself was
 * fsynced by whoever verified it. */
static int place_file(struct ctd *c, const char *digest, const char *path, struct pp_error *err)
{
	if (chmod(path, 0444) < 0)
		return pp_error_errno(err, "chmod %s", path);
	return pp_blob_dir_commit(c->blob_dir, digest, path, err);
}

/* Labels containerd's own pull puts on every blob it fetched. */
static size_t source_labels(const struct cimage *ci, struct pp_ctd_label *out)
{
	if (!ci)
		return 0;
	out[0] = (struct pp_ctd_label){ci->source_key, ci->source_repo};
	return 1;
}

/* ------------------------------------------------------------ store ops */

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
	struct pp_ctd_label labels[1];
	/* Images are only added by prepare_image on this thread: the pointer
	 * stays valid. */
	size_t n = source_labels(image_of(c, digest), labels);
	if ((r = pp_ctd_content_register(c->g, digest, st.st_size, labels, n, err)) < 0)
		return r;
	mark_present(c, digest);
	return 0;
}

static int put_blob_labels(struct ctd *c, const char *digest, const void *data, size_t len,
			   const struct pp_ctd_label *labels, size_t n, struct pp_error *err)
{
	if (!pp_blob_dir_has(c->blob_dir, digest, (int64_t)len)) {
		/* 0444, as containerd keeps its blobs. */
		int r = pp_blob_dir_put(c->blob_dir, c->stage_dir, digest, data, len, 0444, err);
		if (r < 0)
			return r;
	}
	return pp_ctd_content_register(c->g, digest, (int64_t)len, labels, n, err);
}

static int ctd_put_blob(struct pp_store *s, const char *digest, const void *data, size_t len,
			struct pp_error *err)
{
	return put_blob_labels(s->priv, digest, data, len, NULL, 0, err);
}

/* ------------------------------------------------------------ unpacking */

/* One layer into the snapshotter: skipped when its chain exists; else
 * prepull's own apply (as the bytes arrived, or from the store), or
 * containerd's where that does not fit. */
static int unpack_layer(struct ctd *c, struct layer *l, const char *parent, struct pp_error *err)
{
	int r = pp_ctd_snapshot_exists(c->wg, c->snapshotter, l->chain_id, err);
	if (r != 0) {
		if (r > 0)
			pp_debug("layer %s: chain %s already unpacked", SHORT(l->digest),
				 SHORT(l->chain_id));
		l->unpacked_by = "already-unpacked";
		return r < 0 ? r : 0;
	}
	if ((r = ctd_apply_direct(c, l, parent, err)) > 0)
		r = ctd_apply_by_containerd(c, l, parent, err);
	if (r < 0)
		return r;
	struct pp_ctd_label unc = {"containerd.io/uncompressed", l->diff_id};
	return pp_ctd_content_label(c->wg, l->digest, &unc, 1, err);
}

/* Finds an image whose next layer can be unpacked; called locked. */
static struct cimage *next_job(struct ctd *c)
{
	for (struct cimage *ci = c->images; ci; ci = ci->next)
		if (!ci->busy && !ci->failed && ci->unpacked < ci->n_layers &&
		    ci->layers[ci->unpacked].present && !ctd_stream_busy(&ci->layers[ci->unpacked]))
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
		struct layer *l = &ci->layers[i];
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
		ctd_stream_free(ci->layers[i].stream);
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
	struct pp_ctd_label labels[1];
	size_t n_labels = source_labels(ci, labels);
	for (size_t i = 0; i < ci->n_layers; i++) {
		struct layer *l = &ci->layers[i];
		if (!pp_blob_dir_has(c->blob_dir, l->digest, l->size))
			continue;
		if ((r = pp_ctd_content_register(c->g, l->digest, l->size, labels, n_labels, err)) <
		    0) {
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

/* An image record for `img` under `name`; for CRI labelled managed. */
static int put_image_record(struct ctd *c, const char *name, const struct pp_image *img,
			    const char *top_type, bool cri, struct pp_error *err)
{
	struct pp_ctd_label managed = {"io.cri-containerd.image", "managed"};
	return pp_ctd_image_put(c->g, name, &managed, cri ? 1 : 0, top_type, img->top_digest,
				(int64_t)img->top_bytes.len, err);
}

static int register_all(struct ctd *c, struct cimage *ci, const struct pp_image *img,
			struct pp_ctd_label *labels, struct pp_error *err)
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
		if (c->discard && !pp_blob_dir_has(c->blob_dir, l->digest, l->size) &&
		    pp_ctd_snapshot_exists(c->g, c->snapshotter, l->chain_id, err) > 0) {
			/* Discarded after an earlier unpack: the snapshot is what counts. */
			mark_present(c, l->digest);
			continue;
		}
		if (!pp_blob_dir_has(c->blob_dir, l->digest, l->size))
			return pp_error_set(err, PP_ENOTFOUND, "layer %s is not in %s",
					    SHORT(l->digest), c->blob_dir);
		if ((r = pp_ctd_content_register(c->g, l->digest, l->size, labels, n, err)) < 0)
			return r;
		mark_present(c, l->digest);
	}

	/* Wait for the unpacking of every layer, but not past a signal or the
	 * deadline: the worker's own calls notice the stop too. */
	pthread_mutex_lock(&c->mu);
	bool stopped = false;
	while (!ci->failed && ci->unpacked < ci->n_layers && !(stopped = pp_should_stop())) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 200 * 1000 * 1000;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&c->cond, &c->mu, &until);
	}
	bool failed = ci->failed;
	if (failed)
		*err = ci->err;
	pthread_mutex_unlock(&c->mu);
	if (failed)
		return err->code ? err->code : PP_EGENERIC;
	if (stopped)
		return pp_error_set(err, pp_stop_requested ? PP_EINTR : PP_EDEADLINE,
				    "stopped while its layers were being unpacked; run again to "
				    "finish");

	/* Config, with the GC edge that keeps the snapshot chain alive. */
	const struct pp_descriptor *cfg = &img->manifest.config;
	cleanup_free char *snap_key =
		pp_xasprintf("containerd.io/gc.ref.snapshot.%s", c->snapshotter);
	if (ci->n_layers)
		labels[n++] =
			(struct pp_ctd_label){snap_key, ci->layers[ci->n_layers - 1].chain_id};
	if ((r = put_blob_labels(c, cfg->digest, img->config_bytes.data, img->config_bytes.len,
				 labels, n, err)) < 0)
		return pp_error_wrap(err, "config");

	/* Manifest, referencing its config and layers. */
	n = source_labels(ci, labels);
	labels[n++] = (struct pp_ctd_label){"containerd.io/gc.ref.content.config", cfg->digest};
	char(*lkeys)[64] = pp_xcalloc(ci->n_layers ? ci->n_layers : 1, sizeof(*lkeys));
	for (size_t i = 0; i < ci->n_layers; i++) {
		snprintf(lkeys[i], sizeof(lkeys[i]), "containerd.io/gc.ref.content.l.%zu", i);
		labels[n++] = (struct pp_ctd_label){lkeys[i], ci->layers[i].digest};
	}
	r = put_blob_labels(c, img->manifest_digest, img->manifest_bytes.data,
			    img->manifest_bytes.len, labels, n, err);
	free(lkeys);
	if (r < 0)
		return pp_error_wrap(err, "manifest");

	/* The index, referencing the platform's manifest. */
	if (strcmp(img->top_digest, img->manifest_digest) != 0) {
		n = source_labels(ci, labels);
		labels[n++] = (struct pp_ctd_label){"containerd.io/gc.ref.content.m.0",
						    img->manifest_digest};
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
	/* --discard-layers: every layer is in a committed snapshot, which the
	 * config's GC reference keeps; the compressed blobs can go. */
	for (size_t i = 0; c->discard && i < ci->n_layers; i++)
		if ((r = pp_ctd_content_delete(c->g, ci->layers[i].digest, err)) < 0)
			return pp_error_wrap(err, "discard layer %s", SHORT(ci->layers[i].digest));
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

/* With --discard-layers a layer whose snapshot chain exists needs nothing
 * fetched, blob or not. */
static int ctd_has_layer(struct pp_store *s, const struct pp_image *img, size_t index, bool *out,
			 struct pp_error *err)
{
	struct ctd *c = s->priv;
	const struct pp_descriptor *d = &img->manifest.layers[index];
	*out = pp_blob_dir_has(c->blob_dir, d->digest, d->size);
	if (*out || !c->discard)
		return 0;
	pthread_mutex_lock(&c->mu);
	struct cimage *ci = find_image(c, img);
	char chain[PP_DIGEST_STR_LEN + 1] = "";
	if (ci && index < ci->n_layers)
		memcpy(chain, ci->layers[index].chain_id, sizeof(chain));
	pthread_mutex_unlock(&c->mu);
	int r = chain[0] ? pp_ctd_snapshot_exists(c->g, c->snapshotter, chain, err) : 0;
	if (r < 0)
		return r;
	*out = r > 0;
	return 0;
}

/* The unpack thread's count, for progress.  It goes on by itself up to the
 * first layer not present: one placed by someone else, or kept only as a
 * snapshot (--discard-layers), waits for register_all to record it. */
static int ctd_layers_unpacked(struct pp_store *s, const struct pp_image *img, size_t *unpacked,
			       size_t *ready, struct pp_error *err)
{
	struct ctd *c = s->priv;
	int r = 0;
	pthread_mutex_lock(&c->mu);
	struct cimage *ci = find_image(c, img);
	if (ci && ci->failed) {
		*err = ci->err;
		r = err->code ? err->code : PP_EGENERIC;
	} else if (ci) {
		*unpacked = ci->unpacked;
		size_t n = 0;
		while (n < ci->n_layers && ci->layers[n].present)
			n++;
		*ready = n;
		r = 1;
	}
	pthread_mutex_unlock(&c->mu);
	return r;
}

static int ctd_layer_unpack(struct pp_store *s, const struct pp_image *img, size_t index,
			    struct pp_layer_unpack *out)
{
	struct ctd *c = s->priv;
	int r = 0;
	pthread_mutex_lock(&c->mu);
	struct cimage *ci = find_image(c, img);
	if (ci && index < ci->unpacked) {
		const struct layer *l = &ci->layers[index];
		/* A layer below the first one this run unpacked (the chain was
		 * there): the unpack thread never looked at it on its own. */
		out->by = l->unpacked_by ? l->unpacked_by : "already-unpacked";
		memcpy(out->chain_id, l->chain_id, sizeof(out->chain_id));
		out->seconds = l->unpack_seconds;
		r = 1;
	}
	pthread_mutex_unlock(&c->mu);
	return r;
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
	struct pp_ctd_label *labels = pp_xcalloc(ci->n_layers + 3, sizeof(*labels));
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
	struct pp_ctd_label l = {"containerd.io/gc.expire", expire};
	int r = pp_ctd_lease_create(c->g, c->lease, &l, 1, err);
	if (r < 0) {
		free(c->lease);
		c->lease = NULL;
		return r;
	}
	pp_grpc_set_metadata(c->g, "containerd-lease", c->lease);
	pp_grpc_set_metadata(c->wg, "containerd-lease", c->lease);
	return 0;
}

/* A run killed while a layer was being applied leaves its active snapshot
 * ("extract-prepull-<time>-<pid>-<n> <chain>"): removed when that pid is
 * gone.  The layer is applied again, from the blob kept on disk. */
static void remove_leftovers(struct ctd *c)
{
	char **keys = NULL;
	size_t n = 0;
	struct pp_error err = {0};
	if (pp_ctd_snapshot_list_active(c->g, c->snapshotter, &keys, &n, &err) < 0) {
		pp_debug("containerd: cannot list snapshots: %s", err.msg);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		long long when;
		int pid;
		if (sscanf(keys[i], "extract-prepull-%lld-%d-", &when, &pid) != 2 ||
		    pid == getpid() || (kill(pid, 0) < 0 ? errno != ESRCH : true))
			continue;
		pp_info("containerd: removing snapshot \"%s\" left by an interrupted run", keys[i]);
		pp_ctd_snapshot_remove(c->g, c->snapshotter, keys[i]);
	}
	pp_ctd_names_free(keys, n);
}

static void delete_lease(struct ctd *c)
{
	struct pp_error err = {0};
	pp_grpc_set_metadata(c->g, "containerd-lease", NULL);
	if (pp_ctd_lease_delete(c->g, c->lease, &err) < 0)
		pp_warn("containerd: delete lease %s: %s", c->lease, err.msg);
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
	.has_blob = pp_store_dir_has_blob,
	.read_blob = pp_store_dir_read_blob,
	.commit_file = ctd_commit_file,
	.put_blob = ctd_put_blob,
	.prepare_image = ctd_prepare_image,
	.register_image = ctd_register_image,
	.layer_consumer = ctd_layer_consumer,
	.has_layer = ctd_has_layer,
	.layers_unpacked = ctd_layers_unpacked,
	.layer_unpack = ctd_layer_unpack,
	.free = ctd_free,
};

/* Asks containerd where its content store is, and checks the snapshotter. */
static int introspect(struct ctd *c, struct pp_error *err)
{
	struct pp_ctd_plugin *list = NULL;
	size_t n = 0;
	int r = pp_ctd_plugins(c->g, "type==io.containerd.content.v1", &list, &n, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n && !c->content_root; i++)
		if (list[i].root && !list[i].init_err)
			c->content_root = pp_xstrdup(list[i].root);
	pp_ctd_plugins_free(list, n);
	if (!c->content_root)
		return pp_error_set(err, PP_EUNSUPPORTED,
				    "containerd at %s has no local content store (no root "
				    "exported by an io.containerd.content.v1 plugin)",
				    c->socket);

	if ((r = pp_ctd_plugins(c->g, "type==io.containerd.snapshotter.v1", &list, &n, err)) < 0)
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
	pp_ctd_plugins_free(list, n);
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
		socket = PP_CONTAINERD_DEFAULT_SOCKET;
	const char *ns = opts->namespace && *opts->namespace ? opts->namespace : CRI_NAMESPACE;
	const char *snapshotter =
		opts->snapshotter && *opts->snapshotter ? opts->snapshotter : "overlayfs";
	struct ctd *c = pp_xcalloc(1, sizeof(*c));
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cond, NULL);
	c->socket = pp_xstrdup(socket);
	c->ns = pp_xstrdup(ns);
	c->snapshotter = pp_xstrdup(snapshotter);
	c->discard = opts->discard_layers;
	/* prepull writes layers itself only where it knows the layout and
	 * whiteouts containerd expects: overlayfs. */
	c->direct = strcmp(snapshotter, "overlayfs") == 0 &&
		    !(opts->unpacker && strcmp(opts->unpacker, "containerd") == 0);
	struct pp_store *s = pp_xcalloc(1, sizeof(*s));
	s->ops = &ctd_ops;
	s->priv = c;
	s->discards_layers = true;
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
			    ? pp_error_set(err, PP_EPERM,
					   "cannot write to containerd's content store %s: "
					   "permission denied (run as root)",
					   c->blob_dir)
			    : pp_error_errno(err, "containerd content store %s", c->blob_dir);
		goto fail;
	}
	if ((r = create_lease(c, err)) < 0)
		goto fail;
	remove_leftovers(c);
	char *fallback = pp_xasprintf("%s/prepull-partial", c->content_root);
	s->stage_dir = pp_store_stage_dir(opts->state_dir, c->blob_dir, fallback, 0700);
	c->stage_dir = s->stage_dir;
	free(fallback);
	pp_debug("containerd: content store %s, staging in %s, lease %s", c->content_root,
		 s->stage_dir, c->lease);
	*out = s;
	return 0;
fail:
	pp_store_free(s);
	return r;
}
