/* Streaming layer apply: compressed bytes in, a directory tree out.
 *
 * Why threads: libarchive's reader pulls its input through a read callback
 * and cannot be suspended half-way through an entry, while our caller (the
 * fetch engine) pushes bytes as chunks land and must not wait for the
 * inflate.  Inverting libarchive without a thread would need a second stack
 * (ucontext: fragile under ASan) or a tar parser of our own (PAX, GNU long
 * names and four sparse formats: libarchive already gets those right).  So
 * feed() copies into a fixed single-producer / single-consumer ring and
 * returns; the inflater thread (unpack_inflate.c) inflates from that ring
 * into a second fixed ring of slots; the applier thread (here) hashes the
 * tar stream (the diffID) and hands it to libarchive's reader, whose
 * entries unpack_apply.c confines to the root and writes (that file owns
 * everything done to the target directory).  Inflate and apply on two
 * threads: on a compressible gzip layer they take about 3:1 of the CPU, so
 * on two cores the apply hides behind the inflate.  The rings are the only
 * places where the threads meet; each side copies outside the lock and
 * publishes under it. */
#include <archive.h>
#include <errno.h>
#include <isa-l/igzip_lib.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zstd.h>

#include "prepull/digest.h"
#include "prepull/error.h"
#include "prepull/unpack.h"
#include "prepull/util.h"
#include "unpack_int.h"

/* ------------------------------------------------------------ media types */

int pp_unpack_compression_of(const char *mt, enum pp_unpack_compression *out, struct pp_error *err)
{
	static const struct {
		const char *mt;
		enum pp_unpack_compression c;
	} known[] = {
		{"application/vnd.oci.image.layer.v1.tar", PP_UNPACK_TAR},
		{"application/vnd.oci.image.layer.v1.tar+gzip", PP_UNPACK_GZIP},
		{"application/vnd.oci.image.layer.v1.tar+zstd", PP_UNPACK_ZSTD},
		{"application/vnd.oci.image.layer.nondistributable.v1.tar", PP_UNPACK_TAR},
		{"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", PP_UNPACK_GZIP},
		{"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", PP_UNPACK_ZSTD},
		{"application/vnd.docker.image.rootfs.diff.tar", PP_UNPACK_TAR},
		{"application/vnd.docker.image.rootfs.diff.tar.gzip", PP_UNPACK_GZIP},
		{"application/vnd.docker.image.rootfs.diff.tar.zstd", PP_UNPACK_ZSTD},
		{"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", PP_UNPACK_GZIP},
	};
	for (size_t i = 0; mt && i < sizeof(known) / sizeof(known[0]); i++) {
		if (strcmp(mt, known[i].mt) == 0) {
			*out = known[i].c;
			return 0;
		}
	}
	char buf[128];
	return pp_error_set(err, PP_EUNSUPPORTED, "layer media type %s cannot be unpacked here",
			    pp_printable(buf, sizeof(buf), mt ? mt : "(none)"));
}

/* ------------------------------------------------------------ applier: input */

/* The next piece of the tar stream, hashed: *buf and the count, 0 at its
 * end, or a negative PP_E* code (the inflater's failure, met where it
 * happened in the stream).  *buf stays valid until the next call, which
 * gives its slot back to the inflater (libarchive's read callback
 * contract). */
static ssize_t next_plain(struct pp_unpack *u, const void **buf, struct pp_error *err)
{
	pthread_mutex_lock(&u->mu);
	if (u->p_holding) {
		u->p_head = (u->p_head + 1) % PLAIN_SLOTS;
		u->p_count--;
		u->p_holding = false;
		pthread_cond_broadcast(&u->pcond);
	}
	while (u->p_count == 0 && !u->p_end && !u->abort)
		pthread_cond_wait(&u->pcond, &u->mu);
	if (u->abort) {
		pthread_mutex_unlock(&u->mu);
		return pp_error_set(err, PP_EINTR, "stopped");
	}
	if (u->p_count == 0) {
		int rc = u->irc;
		if (rc < 0) {
			*err = u->ierr;
			if (rc == PP_EUNSUPPORTED)
				u->refusal = u->irefusal;
		}
		pthread_mutex_unlock(&u->mu);
		return rc < 0 ? rc : 0;
	}
	size_t idx = u->p_head, n = u->p_len[idx];
	u->p_holding = true;
	pthread_mutex_unlock(&u->mu);
	*buf = u->plain_buf + idx * PLAIN_CAP;
	pp_sha256_update(u->sha, *buf, n);
	u->plain += n;
	return (ssize_t)n;
}

static la_ssize_t ar_read(struct archive *a, void *cd, const void **buf)
{
	struct pp_unpack *u = cd;
	ssize_t n = next_plain(u, buf, &u->rerr);
	if (n < 0) {
		/* Our message stays in u->rerr; libarchive only needs to stop. */
		archive_set_error(a, EIO, "%s", u->rerr.msg);
		return -1;
	}
	return n;
}

/* ------------------------------------------------------------ applier */

static int run(struct pp_unpack *u, struct pp_error *err)
{
	if (archive_read_open(u->ar, u, NULL, ar_read, NULL) != ARCHIVE_OK) {
		if (u->rerr.code)
			return unpack_read_failed(u, err);
		return pp_error_set(err, PP_EPROTO, "not a tar stream: %s",
				    archive_error_string(u->ar));
	}
	for (;;) {
		struct archive_entry *e;
		int r = archive_read_next_header(u->ar, &e);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN) {
			if (u->rerr.code)
				return unpack_read_failed(u, err);
			return pp_error_set(err, PP_EPROTO, "tar: %s", archive_error_string(u->ar));
		}
		if (unpack_aborted(u))
			return pp_error_set(err, PP_EINTR, "stopped");
		if (unpack_apply_entry(u, e, err) < 0)
			return err->code;
	}
	if (unpack_apply_finish(u, err) < 0)
		return err->code;
	/* The diffID covers the whole stream, including what follows the tar's
	 * end-of-archive blocks. */
	const void *buf;
	ssize_t n;
	while ((n = next_plain(u, &buf, err)) > 0)
		;
	if (n < 0)
		return (int)n;
	pp_sha256_final(u->sha, u->got_diff_id);
	if (strcmp(u->got_diff_id, u->diff_id) != 0)
		return pp_error_set(err, PP_EDIGEST,
				    "uncompressed layer is %.19s, the image config says %.19s",
				    u->got_diff_id, u->diff_id);
	return 0;
}

static void *applier(void *arg)
{
	struct pp_unpack *u = arg;
	pthread_setname_np(pthread_self(), "pp-apply"); /* for top -H, perf */
	struct pp_error err = {0};
	int rc = run(u, &err);
	if (rc < 0 && u->label)
		pp_error_wrap(&err, "unpack %s", u->label);
	pthread_mutex_lock(&u->mu);
	u->rc = rc;
	if (rc < 0)
		u->werr = err;
	u->done = true;
	/* The inflater may wait for input or for a slot: it is to stop. */
	pthread_cond_broadcast(&u->cond);
	pthread_cond_broadcast(&u->pcond);
	pthread_mutex_unlock(&u->mu);
	return NULL;
}

/* ------------------------------------------------------------ API */

/* Waits for both threads to be gone (each ends once the applier is done or
 * free() aborts). */
static void join(struct pp_unpack *u)
{
	if (!u->joined) {
		pthread_join(u->thread, NULL);
		u->joined = true;
	}
	if (!u->ijoined) {
		pthread_join(u->ithread, NULL);
		u->ijoined = true;
	}
}

/* Tells the threads to stop wherever they wait, and waits for them. */
static void stop_and_join(struct pp_unpack *u)
{
	pthread_mutex_lock(&u->mu);
	__atomic_store_n(&u->abort, true, __ATOMIC_RELAXED);
	pthread_cond_broadcast(&u->cond);
	pthread_cond_broadcast(&u->pcond);
	pthread_mutex_unlock(&u->mu);
	join(u);
}

static void free_state(struct pp_unpack *u)
{
	if (u->ar)
		archive_read_free(u->ar);
	if (u->aw)
		archive_write_free(u->aw);
	for (size_t i = 0; i < u->ndirs; i++)
		free(u->dirs[i].path);
	free(u->dirs);
	for (char **l = u->lowers; l && *l; l++)
		free(*l);
	free(u->lowers);
	free(u->root);
	free(u->label);
	free(u->ring);
	free(u->plain_buf);
	free(u->isal);
	ZSTD_freeDCtx(u->zd);
	if (u->sha)
		pp_sha256_free(u->sha);
	pthread_mutex_destroy(&u->mu);
	pthread_cond_destroy(&u->cond);
	pthread_cond_destroy(&u->pcond);
	free(u);
}

int pp_unpack_new(struct pp_unpack **out, const struct pp_unpack_opts *opts, struct pp_error *err)
{
	*out = NULL;
	if (!opts || !opts->root || !opts->diff_id)
		return pp_error_set(err, PP_EUSAGE, "unpack: root and diff_id are required");
	if (pp_digest_validate(opts->diff_id, err) < 0)
		return pp_error_wrap(err, "unpack: diff_id");
	if (opts->compression > PP_UNPACK_ZSTD || opts->whiteout > PP_WHITEOUT_OVERLAY_USERXATTR)
		return pp_error_set(err, PP_EUSAGE, "unpack: unknown compression or whiteout mode");

	struct pp_unpack *u = pp_xcalloc(1, sizeof(*u));
	pthread_mutex_init(&u->mu, NULL);
	pthread_cond_init(&u->cond, NULL);
	pthread_cond_init(&u->pcond, NULL);
	u->joined = u->ijoined = true; /* until the threads exist */
	u->comp = opts->compression;
	u->whiteout = opts->whiteout;
	snprintf(u->diff_id, sizeof(u->diff_id), "%s", opts->diff_id);
	u->label = opts->label ? pp_xstrdup(opts->label) : NULL;
	u->root = realpath(opts->root, NULL);
	char b[256];
	if (!u->root) {
		int rc = pp_error_errno(err, "unpack: root %s",
					pp_printable(b, sizeof(b), opts->root));
		free_state(u);
		return rc;
	}
	struct stat st;
	if (stat(u->root, &st) < 0 || !S_ISDIR(st.st_mode)) {
		int rc = pp_error_set(err, PP_EUSAGE, "unpack: root %s is not a directory",
				      pp_printable(b, sizeof(b), opts->root));
		free_state(u);
		return rc;
	}
	size_t nl = 0;
	while (opts->lowers && opts->lowers[nl])
		nl++;
	u->lowers = pp_xcalloc(nl + 1, sizeof(char *));
	for (size_t i = 0; i < nl; i++) {
		u->lowers[i] = realpath(opts->lowers[i], NULL);
		if (!u->lowers[i]) {
			int rc = pp_error_errno(err, "unpack: lower %s",
						pp_printable(b, sizeof(b), opts->lowers[i]));
			free_state(u);
			return rc;
		}
	}
	u->ar = archive_read_new();
	/* archive_write_disk_new reads the umask by setting it (process-wide)
	 * and back: done here, on the caller's thread, rather than racing
	 * whatever the caller's other threads create meanwhile. */
	u->aw = archive_write_disk_new();
	if (!u->ar || !u->aw)
		abort();
	/* Only tar, no filter: the bytes are inflated (and hashed) by us. */
	archive_read_support_format_tar(u->ar);
	archive_read_support_format_empty(u->ar);
	/* Numeric owners: no archive_write_disk_set_standard_lookup, so the
	 * entry's uid/gid are used as they are, never a name from this host.
	 * No ACL or fflags restore: containerd restores neither (a layer's
	 * POSIX ACLs come as system.posix_acl_* xattrs, which XATTR keeps). */
	archive_write_disk_set_options(u->aw, ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_PERM |
						      ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_XATTR |
						      ARCHIVE_EXTRACT_SECURE_SYMLINKS |
						      ARCHIVE_EXTRACT_SECURE_NODOTDOT);
	u->ring = pp_xmalloc(RING_CAP);
	u->plain_buf = pp_xmalloc(PLAIN_SLOTS * PLAIN_CAP);
	u->sha = pp_sha256_new();
	if (u->comp == PP_UNPACK_GZIP) {
		u->isal = pp_xmalloc(sizeof(*u->isal));
		isal_inflate_init(u->isal);
	} else if (u->comp == PP_UNPACK_ZSTD) {
		u->zd = ZSTD_createDCtx();
		if (!u->zd)
			abort();
		ZSTD_DCtx_setParameter(u->zd, ZSTD_d_windowLogMax, PP_UNPACK_ZSTD_WINDOW_LOG_MAX);
	}

	/* Signals go to the caller's threads, whose loops watch for them. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int r = pthread_create(&u->ithread, NULL, unpack_inflater, u);
	if (r == 0) {
		u->ijoined = false;
		r = pthread_create(&u->thread, NULL, applier, u);
		if (r == 0)
			u->joined = false;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) {
		stop_and_join(u);
		errno = r;
		int rc = pp_error_errno(err, "unpack: start worker");
		free_state(u);
		return rc;
	}
	*out = u;
	return 0;
}

/* Under mu: the worker's failure, copied out. */
static int failed_locked(struct pp_unpack *u, struct pp_error *err)
{
	if (err)
		*err = u->werr;
	return u->rc;
}

int pp_unpack_feed(struct pp_unpack *u, const void *data, size_t len, struct pp_error *err)
{
	const unsigned char *p = data;
	pthread_mutex_lock(&u->mu);
	if (u->input_end) {
		pthread_mutex_unlock(&u->mu);
		return pp_error_set(err, PP_EUSAGE, "unpack: feed after finish");
	}
	while (len > 0) {
		while (!u->done && u->ring_len == RING_CAP)
			pthread_cond_wait(&u->cond, &u->mu);
		if (u->done) {
			int rc = failed_locked(u, err);
			pthread_mutex_unlock(&u->mu);
			return rc < 0 ? rc : pp_error_set(err, PP_EGENERIC, "unpack: worker ended");
		}
		size_t tail = (u->ring_head + u->ring_len) % RING_CAP;
		size_t space = RING_CAP - u->ring_len;
		size_t n = len < space ? len : space;
		pthread_mutex_unlock(&u->mu);
		/* [tail, tail+n) is free and only we write there. */
		size_t first = RING_CAP - tail < n ? RING_CAP - tail : n;
		memcpy(u->ring + tail, p, first);
		memcpy(u->ring, p + first, n - first);
		pthread_mutex_lock(&u->mu);
		u->ring_len += n;
		u->fed += n;
		pthread_cond_broadcast(&u->cond);
		p += n;
		len -= n;
	}
	int rc = u->done && u->rc < 0 ? failed_locked(u, err) : 0;
	pthread_mutex_unlock(&u->mu);
	return rc;
}

size_t pp_unpack_writable(struct pp_unpack *u)
{
	pthread_mutex_lock(&u->mu);
	size_t n = u->done || u->input_end ? 0 : RING_CAP - u->ring_len;
	pthread_mutex_unlock(&u->mu);
	return n;
}

int pp_unpack_finish(struct pp_unpack *u, struct pp_error *err)
{
	pthread_mutex_lock(&u->mu);
	u->input_end = true;
	pthread_cond_broadcast(&u->cond);
	while (!u->done)
		pthread_cond_wait(&u->cond, &u->mu);
	int rc = u->rc < 0 ? failed_locked(u, err) : 0;
	pthread_mutex_unlock(&u->mu);
	join(u);
	return rc;
}

enum pp_unpack_refusal pp_unpack_refused(struct pp_unpack *u)
{
	pthread_mutex_lock(&u->mu);
	enum pp_unpack_refusal r =
		u->done && u->rc == PP_EUNSUPPORTED ? u->refusal : PP_UNPACK_REFUSED_NONE;
	pthread_mutex_unlock(&u->mu);
	return r;
}

void pp_unpack_stats(struct pp_unpack *u, struct pp_unpack_stats *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&u->mu);
	out->compressed = u->fed;
	if (u->done) {
		out->uncompressed = u->plain;
		out->entries = u->entries;
		snprintf(out->diff_id, sizeof(out->diff_id), "%s", u->got_diff_id);
	}
	pthread_mutex_unlock(&u->mu);
}

void pp_unpack_free(struct pp_unpack *u)
{
	if (!u)
		return;
	stop_and_join(u);
	free_state(u);
}
