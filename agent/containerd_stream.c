/* Layers applied by prepull itself, into the snapshot containerd prepared,
 * while their bytes arrive: ready-time becomes max(download, unpack) instead
 * of their sum, and the inflate is ISA-L's / libzstd's rather than the
 * daemon's.
 *
 * A layer's stream goes through these states (under c->mu):
 *   IDLE     nothing applied.  Its bytes wait (the engine keeps them in the
 *            partial file) until the layer below is committed;
 *   LIVE     the fetch loop prepared the active snapshot and feeds the
 *            unpacker as the blob's in-order prefix grows (unpack.c inflates
 *            and applies on its own thread, so the loop only copies);
 *   HANDOFF  the blob is verified and in the store: the unpack thread feeds
 *            what is left from the store, checks the diffID and commits the
 *            snapshot as the layer's chain ID;
 *   OFF      this layer is not streamed (the path does not fit, or it
 *            failed): the unpack thread applies it once the blob is in,
 *            itself from the store or through containerd's Diff.Apply.
 * Unverified bytes only ever land in an active snapshot that nobody can
 * use; it is committed only when both the blob digest and the diffID match,
 * and removed otherwise.
 *
 * The direct path needs what containerd's overlay applier needs: overlayfs
 * mounts whose directories this process sees as containerd does.  That is
 * probed once per run: a file written into a prepared snapshot must show
 * in containerd's own Usage of it.  Anything else takes Diff.Apply. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "containerd_int.h"
#include "prepull/containerd_api.h"
#include "prepull/grpc.h"
#include "prepull/image.h"
#include "prepull/log.h"
#include "prepull/stop.h"
#include "prepull/store.h"
#include "prepull/unpack.h"

#define READ_BUFFER (1024 * 1024)
#define PROBE_BYTES 65536

enum stream_state { STREAM_IDLE, STREAM_LIVE, STREAM_HANDOFF, STREAM_OFF };

struct stream {
	struct ctd *c;
	struct cimage *ci;
	size_t index;
	enum stream_state state;
	struct pp_unpack *u; /* while LIVE or HANDOFF */
	char *key;           /* the active snapshot, while prepared */
	char *dir;           /* its directory, written into */
	int64_t fed;         /* bytes of the blob given to u */
	bool full;           /* u found the disk full: fed no more, reported at the handoff */
	double started;
};

/* An active snapshot with an unpacker writing into it. */
struct target {
	char *key;
	struct pp_unpack *u;
	char *dir; /* the directory u writes into */
};

static struct layer *layer_of(const struct stream *s)
{
	return &s->ci->layers[s->index];
}

/* Once per run: does containerd see what we write into a snapshot it
 * prepared?  (Not when it runs in another mount namespace, or rootless.) */
static bool probe_sees_writes(struct ctd *c, struct pp_grpc *g, const char *key, const char *dir)
{
	if (c->direct_probe)
		return c->direct_probe > 0;
	cleanup_free char *path = pp_xasprintf("%s/.prepull-probe", dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	bool ok = false;
	if (fd >= 0) {
		static const char zeros[PROBE_BYTES];
		ok = write(fd, zeros, sizeof(zeros)) == (ssize_t)sizeof(zeros);
		close(fd);
		int64_t size = 0;
		struct pp_error err = {0};
		ok = ok && pp_ctd_snapshot_usage(g, c->snapshotter, key, &size, &err) == 0 &&
		     size >= PROBE_BYTES;
		unlink(path);
	}
	c->direct_probe = ok ? 1 : -1;
	pp_debug("containerd: snapshots %s be written by prepull directly (probed %s)",
		 ok ? "can" : "cannot", dir);
	return ok;
}

/* Prepares the layer's active snapshot on its parent's chain and starts an
 * unpacker writing into it.  1 when the direct path does not fit here (the
 * reason logged), negative on a failure. */
/* An active snapshot's key: "extract-prepull-<time>-<pid>-<n> <chain>",
 * which a later run recognises as a leftover (store_containerd.c). */
static char *extract_key(struct ctd *c, const struct layer *l)
{
	pthread_mutex_lock(&c->mu);
	char *key = pp_xasprintf("extract-prepull-%lld-%d-%u %s", (long long)time(NULL),
				 (int)getpid(), ++c->counter, l->chain_id);
	pthread_mutex_unlock(&c->mu);
	return key;
}

/* The labels containerd's own unpack puts on a layer's snapshot; returns
 * how many (the parent's only when there is one). */
static size_t snapshot_labels(const struct layer *l, const char *parent, struct pp_ctd_label out[3])
{
	out[0] = (struct pp_ctd_label){"containerd.io/snapshot.ref", l->chain_id};
	out[1] = (struct pp_ctd_label){"containerd.io/snapshot/diff-id", l->diff_id};
	out[2] = (struct pp_ctd_label){"containerd.io/snapshot/parent-chain-id", parent};
	return parent ? 3 : 2;
}

static int target_open(struct ctd *c, struct pp_grpc *g, const struct layer *l, const char *parent,
		       struct target *t, struct pp_error *err)
{
	*t = (struct target){0};
	t->key = extract_key(c, l);
	struct pp_ctd_label labels[3];
	size_t n_labels = snapshot_labels(l, parent, labels);
	struct pp_buf mounts = {0};
	struct pp_ctd_layout layout = {0};
	int code = 0;
	int r = pp_ctd_snapshot_prepare(g, c->snapshotter, t->key, parent, labels, n_labels,
					&mounts, &code, err);
	if (r < 0) {
		free(t->key);
		t->key = NULL;
		pp_buf_free(&mounts);
		return code == PP_GRPC_ALREADY_EXISTS ? 1 : r;
	}
	enum pp_unpack_compression comp;
	struct pp_error why = {0};
	if (pp_ctd_mounts_layout(&mounts, &layout, &why) < 0 ||
	    pp_unpack_compression_of(l->media_type, &comp, &why) < 0 ||
	    !probe_sees_writes(c, g, t->key, layout.dir)) {
		pp_debug("layer %s: applied by containerd (%s)", SHORT(l->digest),
			 why.msg[0] ? why.msg : "its snapshots are out of prepull's sight");
		r = 1;
		goto done;
	}
	struct pp_unpack_opts o = {
		.root = layout.dir,
		.compression = comp,
		.diff_id = l->diff_id,
		.whiteout = layout.userxattr ? PP_WHITEOUT_OVERLAY_USERXATTR : PP_WHITEOUT_OVERLAY,
		.lowers = (const char *const *)layout.lowers,
		.label = SHORT(l->digest),
	};
	r = pp_unpack_new(&t->u, &o, err);
	if (r == 0)
		t->dir = pp_xstrdup(layout.dir);
done:
	pp_ctd_layout_free(&layout);
	pp_buf_free(&mounts);
	if (r != 0) {
		pp_ctd_snapshot_remove(g, c->snapshotter, t->key);
		free(t->key);
		t->key = NULL;
	}
	return r;
}

/* Throws an unfinished target away: nothing of it stays in containerd. */
static void target_drop(struct ctd *c, struct pp_grpc *g, struct target *t)
{
	pp_unpack_free(t->u);
	if (t->key)
		pp_ctd_snapshot_remove(g, c->snapshotter, t->key);
	free(t->key);
	free(t->dir);
	*t = (struct target){0};
}

/* Feeds the rest of the blob from the store, waits for the unpacker (the
 * diffID is checked there), and commits the snapshot as the chain ID. */
static int target_finish(struct ctd *c, struct pp_grpc *g, const struct layer *l, struct target *t,
			 int64_t from, struct pp_error *err)
{
	cleanup_free char *path = pp_blob_dir_path(c->blob_dir, l->digest);
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return pp_error_errno(err, "open %s", path);
	cleanup_free unsigned char *buf = pp_xmalloc(READ_BUFFER);
	while (from < l->size) {
		if (pp_should_stop())
			return pp_error_set(err, PP_EINTR, "stopped while unpacking");
		ssize_t n = pread(fd, buf, READ_BUFFER, from);
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			if (n == 0)
				errno = EIO;
			return pp_error_errno(err, "read %s", path);
		}
		int r = pp_unpack_feed(t->u, buf, (size_t)n, err);
		if (r < 0)
			return r;
		from += n;
	}
	int r = pp_unpack_finish(t->u, err);
	if (r < 0)
		return r;
	struct pp_ctd_label labels[3];
	size_t n_labels = snapshot_labels(l, NULL, labels); /* the parent is known already */
	int code = 0;
	r = pp_ctd_snapshot_commit(g, c->snapshotter, l->chain_id, t->key, labels, n_labels, &code,
				   err);
	if (r < 0 && code == PP_GRPC_ALREADY_EXISTS) {
		pp_error_clear(err); /* the same chain, committed by someone else */
		pp_ctd_snapshot_remove(g, c->snapshotter, t->key);
		r = 0;
	}
	if (r == 0) {
		free(t->key); /* the active snapshot became the committed one */
		t->key = NULL;
	}
	return r;
}

/* ------------------------------------------------ the fetch loop's side */

/* A write into the snapshot found no room (the unpacker keeps the errno;
 * its message says so where an older one did not). */
static bool disk_full(const struct pp_error *err)
{
	return err->sys_errno == ENOSPC || err->sys_errno == EDQUOT ||
	       strstr(err->msg, strerror(ENOSPC)) != NULL;
}

static bool parent_ready(const struct stream *s)
{
	return s->ci->unpacked == s->index && !s->ci->failed;
}

/* Out of LIVE: the unpacker stops, the active snapshot goes. */
static void abandon(struct stream *s, enum stream_state next)
{
	struct target t = {s->key, s->u, s->dir};
	target_drop(s->c, s->c->g, &t);
	s->key = NULL;
	s->u = NULL;
	s->dir = NULL;
	s->fed = 0;
	s->full = false;
	pthread_mutex_lock(&s->c->mu);
	s->state = next;
	pthread_cond_broadcast(&s->c->cond);
	pthread_mutex_unlock(&s->c->mu);
}

static int64_t stream_wants(void *ctx)
{
	struct stream *s = ctx;
	pthread_mutex_lock(&s->c->mu);
	enum stream_state st = s->state;
	bool ready = parent_ready(s);
	pthread_mutex_unlock(&s->c->mu);
	if (st == STREAM_IDLE)
		return ready ? READ_BUFFER : 0;
	if (st == STREAM_LIVE && !s->full)
		return (int64_t)pp_unpack_writable(s->u);
	return INT64_MAX; /* not streamed: whatever comes is let go */
}

static int64_t stream_feed(void *ctx, int64_t offset, const void *data, size_t len,
			   struct pp_error *err)
{
	struct stream *s = ctx;
	struct ctd *c = s->c;
	const struct layer *l = layer_of(s);
	pthread_mutex_lock(&c->mu);
	enum stream_state st = s->state;
	bool ready = parent_ready(s);
	const char *parent = s->index ? s->ci->layers[s->index - 1].chain_id : NULL;
	if (st == STREAM_IDLE && ready && offset == 0)
		s->state = STREAM_LIVE; /* ours now: the unpack thread leaves it alone */
	pthread_mutex_unlock(&c->mu);
	if (st == STREAM_IDLE) {
		if (!ready)
			return 0; /* kept in the partial file until the layer below is in */
		if (offset != 0) {
			abandon(s, STREAM_OFF);
			return (int64_t)len;
		}
		struct target t;
		struct pp_error why = {0};
		int r = target_open(c, c->g, l, parent, &t, &why);
		if (r != 0) {
			if (r < 0)
				pp_warn("layer %s: cannot apply it as it arrives: %s",
					SHORT(l->digest), why.msg);
			abandon(s, STREAM_OFF);
			return (int64_t)len;
		}
		s->u = t.u;
		s->key = t.key;
		s->dir = t.dir;
		s->started = pp_now();
		pp_debug("layer %s: applying into snapshot %s as it arrives", SHORT(l->digest),
			 s->key);
	} else if (st != STREAM_LIVE || s->full) {
		return (int64_t)len;
	}
	size_t n = pp_unpack_writable(s->u);
	if (n > len)
		n = len;
	struct pp_error why = {0};
	if (pp_unpack_feed(s->u, data, n, &why) < 0) {
		if (disk_full(&why)) {
			/* Another snapshot would fill the same disk: the
			 * snapshot stays until the handoff, where the unpacker
			 * says so again and ctd_apply_direct reports it. */
			s->full = true;
			return (int64_t)len;
		}
		/* Maybe bytes a repair will replace: the layer is applied again
		 * from the verified blob once it is in. */
		pp_warn("layer %s: applying it as it arrives failed (%s); it is applied once "
			"it is in",
			SHORT(l->digest), why.msg);
		abandon(s, STREAM_OFF);
		return (int64_t)len;
	}
	s->fed += (int64_t)n;
	(void)err;
	return (int64_t)n;
}

static void stream_restart(void *ctx)
{
	struct stream *s = ctx;
	pthread_mutex_lock(&s->c->mu);
	bool live = s->state == STREAM_LIVE;
	pthread_mutex_unlock(&s->c->mu);
	if (live) {
		pp_debug("layer %s: its bytes come again; the snapshot starts over",
			 SHORT(layer_of(s)->digest));
		abandon(s, STREAM_IDLE);
	}
}

static int stream_finish(void *ctx, bool verified, struct pp_error *err)
{
	struct stream *s = ctx;
	(void)err;
	pthread_mutex_lock(&s->c->mu);
	bool live = s->state == STREAM_LIVE;
	if (live && verified) {
		s->state = STREAM_HANDOFF; /* the unpack thread takes the rest */
		pthread_cond_broadcast(&s->c->cond);
	}
	pthread_mutex_unlock(&s->c->mu);
	if (live && !verified)
		abandon(s, STREAM_IDLE);
	return 0;
}

static void stream_release(void *ctx)
{
	(void)ctx; /* the stream belongs to its layer, freed with the store */
}

static const struct pp_prefix_consumer_ops stream_ops = {
	.name = "containerd snapshot",
	.feed = stream_feed,
	.wants = stream_wants,
	.restart = stream_restart,
	.finish = stream_finish,
	.free = stream_release,
};

int ctd_layer_consumer(struct pp_store *st, const struct pp_image *img, size_t index,
		       struct pp_prefix_consumer *out, struct pp_error *err)
{
	struct ctd *c = st->priv;
	(void)err;
	if (!c->direct || c->direct_probe < 0)
		return 0;
	pthread_mutex_lock(&c->mu);
	struct cimage *ci = c->images;
	while (ci && ci->img != img)
		ci = ci->next;
	struct stream *s = NULL;
	if (ci && index < ci->n_layers && !ci->layers[index].stream) {
		s = pp_xcalloc(1, sizeof(*s));
		*s = (struct stream){.c = c, .ci = ci, .index = index, .state = STREAM_IDLE};
		ci->layers[index].stream = s;
	}
	pthread_mutex_unlock(&c->mu);
	if (s)
		*out = (struct pp_prefix_consumer){&stream_ops, s};
	return 0;
}

void ctd_stream_free(struct stream *s)
{
	if (!s)
		return;
	if (s->u || s->key) {
		struct target t = {s->key, s->u, s->dir};
		target_drop(s->c, s->c->g, &t);
	}
	free(s);
}

/* ------------------------------------------------ the unpack thread's side */

bool ctd_stream_busy(const struct layer *l)
{
	return l->stream && l->stream->state == STREAM_LIVE;
}

int ctd_apply_direct(struct ctd *c, struct layer *l, const char *parent, struct pp_error *err)
{
	struct stream *s = l->stream;
	pthread_mutex_lock(&c->mu);
	enum stream_state st = s ? s->state : STREAM_OFF;
	if (st == STREAM_IDLE)
		s->state = STREAM_OFF; /* ours now: the fetch loop lets its bytes go */
	pthread_mutex_unlock(&c->mu);

	struct target t = {0};
	int64_t from = 0;
	double t0 = pp_now();
	const char *how = "from the store";
	if (st == STREAM_HANDOFF) {
		t = (struct target){s->key, s->u, s->dir};
		from = s->fed;
		t0 = s->started;
		s->key = NULL;
		s->u = NULL;
		s->dir = NULL;
		how = from == l->size ? "as it arrived" : "as it arrived, the rest from the store";
	} else {
		if (!c->direct || c->direct_probe < 0)
			return 1;
		int r = target_open(c, c->wg, l, parent, &t, err);
		if (r != 0)
			return r < 0 && err->code == PP_EINTR ? r : 1;
	}
	int r = target_finish(c, c->wg, l, &t, from, err);
	if (r < 0 && disk_full(err)) {
		/* containerd's apply would only fill the same disk again. */
		struct pp_unpack_stats stats;
		pp_unpack_stats(t.u, &stats);
		char cause[sizeof(err->msg)], sz[32];
		snprintf(cause, sizeof(cause), "%s", err->msg);
		pp_error_set(err, PP_EIO,
			     "the disk is full: applying it into snapshot %s (%s) stopped after %s "
			     "of its uncompressed content: %s; the snapshot is removed, the "
			     "downloaded blob is kept: free space and run again",
			     t.key ? t.key : "?", t.dir ? t.dir : "?",
			     pp_format_bytes(sz, sizeof(sz), (double)stats.uncompressed), cause);
		err->sys_errno = ENOSPC;
		target_drop(c, c->wg, &t);
		return PP_EIO;
	}
	if (r < 0) {
		target_drop(c, c->wg, &t);
		if (r == PP_EINTR || pp_should_stop())
			return r;
		pp_warn("layer %s: prepull's own apply failed (%s); containerd applies it",
			SHORT(l->digest), err->msg);
		pp_error_clear(err);
		return 1;
	}
	struct pp_unpack_stats stats;
	pp_unpack_stats(t.u, &stats);
	pp_unpack_free(t.u);
	free(t.dir);
	double secs = pp_now() - t0;
	pp_debug("layer %s: unpacked as %s by prepull %s (%.0f MB in %.2f s)", SHORT(l->digest),
		 SHORT(l->chain_id), how, (double)stats.uncompressed / 1e6, secs);
	l->unpacked_by = st == STREAM_HANDOFF ? "prepull-streaming" : "prepull-from-store";
	l->unpack_seconds = secs;
	return 0;
}

/* containerd's own unpack recipe (without its Go client): Prepare, Diff.Apply,
 * Commit. */
int ctd_apply_by_containerd(struct ctd *c, struct layer *l, const char *parent,
			    struct pp_error *err)
{
	int r;
	double t0 = pp_now();
	cleanup_free char *key = extract_key(c, l);
	struct pp_ctd_label labels[3];
	size_t n_labels = snapshot_labels(l, parent, labels);
	struct pp_buf mounts = {0};
	cleanup_free char *got = NULL;
	int code = 0;
	bool prepared = false;

	r = pp_ctd_snapshot_prepare(c->wg, c->snapshotter, key, parent, labels, n_labels, &mounts,
				    &code, err);
	if (r < 0 && code == PP_GRPC_ALREADY_EXISTS) {
		/* Someone else is on it or finished it. */
		pp_error_clear(err);
		r = pp_ctd_snapshot_exists(c->wg, c->snapshotter, l->chain_id, err);
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

	if ((r = pp_ctd_diff_apply(c->wg, l->media_type, l->digest, l->size, &mounts, &got, err)) <
	    0)
		goto done;
	if (!got || strcmp(got, l->diff_id) != 0) {
		r = pp_error_set(err, PP_EDIGEST,
				 "unpacked content hashes to %s, the config's diff_id is %s",
				 got ? got : "(none)", l->diff_id);
		goto done;
	}

	r = pp_ctd_snapshot_commit(c->wg, c->snapshotter, l->chain_id, key, labels, n_labels, &code,
				   err);
	if (r < 0 && code == PP_GRPC_ALREADY_EXISTS) {
		pp_error_clear(err);
		r = 0;
		goto done; /* the same chain, committed by someone else */
	}
	if (r < 0)
		goto done;
	prepared = false; /* the active snapshot became the committed one */
	l->unpack_seconds = pp_now() - t0;
	l->unpacked_by = "containerd";
	pp_debug("layer %s: unpacked as %s by containerd in %.2f s", SHORT(l->digest),
		 SHORT(l->chain_id), l->unpack_seconds);
done:
	if (prepared)
		pp_ctd_snapshot_remove(c->wg, c->snapshotter, key);
	pp_buf_free(&mounts);
	return r;
}
