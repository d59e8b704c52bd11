/* Streaming layer apply: compressed bytes in, a directory tree out.
 *
 * Why a worker thread: libarchive's reader pulls its input through a read
 * callback and cannot be suspended half-way through an entry, while our
 * caller (the fetch engine) pushes bytes as chunks land and must not wait
 * for the inflate.  Inverting libarchive without a thread would need a
 * second stack (ucontext: fragile under ASan) or a tar parser of our own
 * (PAX, GNU long names and four sparse formats: libarchive already gets
 * those right).  So feed() copies into a fixed single-producer /
 * single-consumer ring and returns; the worker inflates from that ring,
 * hashes the tar stream (the diffID) and hands it to libarchive's reader,
 * whose entries unpack_apply.c confines to the root and writes (that file
 * owns everything done to the target directory).  The ring is the only
 * place where the two threads meet; each side copies outside the lock and
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
#include <zstd_errors.h>

#include "prepull/digest.h"
#include "prepull/error.h"
#include "prepull/unpack.h"
#include "prepull/util.h"
#include "unpack_int.h"

#define RING_CAP (1024 * 1024) /* compressed bytes fed but not yet taken */
#define IN_CAP (128 * 1024)    /* compressed bytes the worker holds */
#define OUT_CAP (256 * 1024)   /* tar bytes handed to libarchive per read */

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

/* ------------------------------------------------------------ worker: input */

/* Takes the next compressed bytes out of the ring into u->in.  Returns the
 * count, 0 at the end of the input, or PP_EINTR when free() stops us. */
static int take_input(struct pp_unpack *u, struct pp_error *err)
{
	pthread_mutex_lock(&u->mu);
	while (u->ring_len == 0 && !u->input_end && !u->abort)
		pthread_cond_wait(&u->cond, &u->mu);
	bool stop = u->abort;
	size_t head = u->ring_head, avail = u->ring_len;
	pthread_mutex_unlock(&u->mu);
	if (stop)
		return pp_error_set(err, PP_EINTR, "stopped");
	if (avail == 0) {
		u->in_eof = true;
		u->in_len = u->in_pos = 0;
		return 0;
	}
	/* Bytes [head, head+n) are ours until we publish: copy outside the lock. */
	size_t n = avail < IN_CAP ? avail : IN_CAP;
	size_t first = RING_CAP - head < n ? RING_CAP - head : n;
	memcpy(u->in, u->ring + head, first);
	memcpy(u->in + first, u->ring, n - first);
	pthread_mutex_lock(&u->mu);
	u->ring_head = (head + n) % RING_CAP;
	u->ring_len -= n;
	pthread_cond_broadcast(&u->cond);
	pthread_mutex_unlock(&u->mu);
	u->in_len = n;
	u->in_pos = 0;
	return (int)n;
}

/* One step of the decompressor over u->in into u->out.  *produced = bytes
 * of tar stream in u->out. */
static int inflate_step(struct pp_unpack *u, size_t *produced, struct pp_error *err)
{
	*produced = 0;
	if (u->comp == PP_UNPACK_GZIP) {
		if (!u->gz_in_member) {
			/* A new member: ISA-L stops at the end of one, and gzip
			 * allows many back to back (pigz, concatenated layers). */
			isal_inflate_reset(u->isal);
			u->isal->crc_flag = ISAL_GZIP;
			u->gz_in_member = true;
		}
		struct inflate_state *s = u->isal;
		s->next_in = u->in + u->in_pos;
		s->avail_in = (uint32_t)(u->in_len - u->in_pos);
		s->next_out = u->out;
		s->avail_out = OUT_CAP;
		int r = isal_inflate(s);
		u->in_pos = u->in_len - s->avail_in;
		*produced = OUT_CAP - s->avail_out;
		u->more_out = s->avail_out == 0;
		if (r != ISAL_DECOMP_OK)
			return pp_error_set(err, PP_EPROTO,
					    "gzip stream is corrupt (member %llu, ISA-L error %d)",
					    (unsigned long long)u->gz_members + 1, r);
		if (s->block_state == ISAL_BLOCK_FINISH) {
			u->gz_in_member = false;
			u->gz_members++;
			u->more_out = false;
		}
		return 0;
	}
	/* zstd */
	ZSTD_inBuffer in = {u->in + u->in_pos, u->in_len - u->in_pos, 0};
	ZSTD_outBuffer o = {u->out, OUT_CAP, 0};
	size_t r = ZSTD_decompressStream(u->zd, &o, &in);
	if (ZSTD_isError(r)) {
		if (ZSTD_getErrorCode(r) == ZSTD_error_frameParameter_windowTooLarge) {
			u->refusal = PP_UNPACK_REFUSED_ZSTD_WINDOW;
			return pp_error_set(err, PP_EUNSUPPORTED,
					    "zstd frame %llu needs a window over %d MiB",
					    (unsigned long long)u->z_frames + 1,
					    1 << (PP_UNPACK_ZSTD_WINDOW_LOG_MAX - 20));
		}
		return pp_error_set(err, PP_EPROTO, "zstd stream is corrupt (frame %llu): %s",
				    (unsigned long long)u->z_frames + 1, ZSTD_getErrorName(r));
	}
	u->in_pos += in.pos;
	*produced = o.pos;
	u->more_out = o.pos == o.size;
	if (r == 0 && (in.pos > 0 || o.pos > 0))
		u->z_frames++;
	u->z_hint = r;
	return 0;
}

/* Checks the compressed stream ended where a gzip member or zstd frame
 * ends. */
static int check_clean_end(struct pp_unpack *u, struct pp_error *err)
{
	if (u->comp == PP_UNPACK_GZIP) {
		if (u->gz_in_member)
			return pp_error_set(err, PP_EPROTO,
					    "gzip stream is truncated (member %llu)",
					    (unsigned long long)u->gz_members + 1);
		if (u->gz_members == 0)
			return pp_error_set(err, PP_EPROTO, "gzip stream is empty");
	} else if (u->comp == PP_UNPACK_ZSTD) {
		if (u->z_hint != 0)
			return pp_error_set(err, PP_EPROTO, "zstd stream is truncated (frame %llu)",
					    (unsigned long long)u->z_frames + 1);
		if (u->z_frames == 0)
			return pp_error_set(err, PP_EPROTO, "zstd stream is empty");
	}
	return 0;
}

/* The next piece of the tar stream, hashed: *buf and the count, 0 at its
 * end, or a negative PP_E* code. */
static ssize_t next_plain(struct pp_unpack *u, const void **buf, struct pp_error *err)
{
	for (;;) {
		if (u->in_pos == u->in_len && !u->more_out) {
			if (u->in_eof)
				return check_clean_end(u, err) < 0 ? err->code : 0;
			int r = take_input(u, err);
			if (r < 0)
				return r;
			continue;
		}
		if (u->comp == PP_UNPACK_TAR) {
			size_t n = u->in_len - u->in_pos;
			*buf = u->in + u->in_pos;
			u->in_pos = u->in_len;
			pp_sha256_update(u->sha, *buf, n);
			u->plain += n;
			return (ssize_t)n;
		}
		size_t produced;
		if (inflate_step(u, &produced, err) < 0)
			return err->code;
		if (produced > 0) {
			*buf = u->out;
			pp_sha256_update(u->sha, u->out, produced);
			u->plain += produced;
			return (ssize_t)produced;
		}
	}
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

/* ------------------------------------------------------------ worker */

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

static void *worker(void *arg)
{
	struct pp_unpack *u = arg;
	struct pp_error err = {0};
	int rc = run(u, &err);
	if (rc < 0 && u->label)
		pp_error_wrap(&err, "unpack %s", u->label);
	pthread_mutex_lock(&u->mu);
	u->rc = rc;
	if (rc < 0)
		u->werr = err;
	u->done = true;
	pthread_cond_broadcast(&u->cond);
	pthread_mutex_unlock(&u->mu);
	return NULL;
}

/* ------------------------------------------------------------ API */

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
	free(u->in);
	free(u->out);
	free(u->isal);
	ZSTD_freeDCtx(u->zd);
	if (u->sha)
		pp_sha256_free(u->sha);
	pthread_mutex_destroy(&u->mu);
	pthread_cond_destroy(&u->cond);
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
	u->joined = true; /* until the thread exists */
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
	u->in = pp_xmalloc(IN_CAP);
	u->out = pp_xmalloc(OUT_CAP);
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
	int r = pthread_create(&u->thread, NULL, worker, u);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) {
		errno = r;
		int rc = pp_error_errno(err, "unpack: start worker");
		free_state(u);
		return rc;
	}
	u->joined = false;
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

static void join(struct pp_unpack *u)
{
	if (!u->joined) {
		pthread_join(u->thread, NULL);
		u->joined = true;
	}
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
	pthread_mutex_lock(&u->mu);
	__atomic_store_n(&u->abort, true, __ATOMIC_RELAXED);
	pthread_cond_broadcast(&u->cond);
	pthread_mutex_unlock(&u->mu);
	join(u);
	free_state(u);
}
