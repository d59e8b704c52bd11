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
 * whose entries we confine to the root and write with archive_write_disk.
 * The ring is the only place where the two threads meet; each side copies
 * outside the lock and publishes under it.
 *
 * Confinement follows containerd's archive.Apply (applyNaive): names are
 * cleaned lexically with `..` stopping at the root, the parent is resolved
 * within the root (symlinks expanded, never followed out: every lstat is
 * on a path whose components are already known not to be symlinks), the
 * last component is never followed (an existing non-directory there is
 * removed first), and the real path of the root is prefixed. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <isa-l/igzip_lib.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "prepull/digest.h"
#include "prepull/error.h"
#include "prepull/log.h"
#include "prepull/unpack.h"
#include "prepull/util.h"

#define RING_CAP (1024 * 1024) /* compressed bytes fed but not yet taken */
#define IN_CAP (128 * 1024)    /* compressed bytes the worker holds */
#define OUT_CAP (256 * 1024)   /* tar bytes handed to libarchive per read */
#define MAX_LINKS 255          /* symlinks expanded per name, as containerd */

#define WHITEOUT_PREFIX ".wh."
#define WHITEOUT_OPAQUE ".wh..wh..opq"

struct pp_unpack {
	/* Fixed at new(). */
	char *root; /* real path, no trailing slash (unless "/") */
	char **lowers;
	char *label;
	char diff_id[PP_DIGEST_STR_LEN + 1];
	enum pp_unpack_compression comp;
	enum pp_unpack_whiteout whiteout;

	/* Shared, under mu. */
	pthread_mutex_t mu;
	pthread_cond_t cond;
	unsigned char *ring;
	size_t ring_head; /* next byte the worker takes */
	size_t ring_len;  /* bytes fed and not yet taken */
	bool input_end;   /* finish() was called */
	bool abort;       /* free() wants the worker gone */
	bool done;        /* the worker has finished; rc, werr and refusal are final */
	int rc;
	struct pp_error werr;
	enum pp_unpack_refusal refusal;
	uint64_t fed;

	pthread_t thread;
	bool joined;

	/* Worker only. */
	unsigned char *in;
	size_t in_len, in_pos;
	bool in_eof;
	unsigned char *out;
	bool more_out; /* the decompressor may hold output without new input */
	struct inflate_state *isal;
	bool gz_in_member;
	uint64_t gz_members;
	ZSTD_DCtx *zd;
	size_t z_hint; /* ZSTD_decompressStream's last return: 0 at a frame's end */
	uint64_t z_frames;
	struct pp_sha256 *sha;
	uint64_t plain;
	uint64_t entries;
	struct pp_error rerr; /* why our read callback failed libarchive */
	char got_diff_id[PP_DIGEST_STR_LEN + 1];
	struct archive *ar, *aw;
	/* Directory entries whose times are set at the end, when nothing will
	 * be created in them any more (containerd's `dirs`): one record per
	 * directory of the layer. */
	struct dir_time *dirs;
	size_t ndirs, dirs_cap;
};

struct dir_time {
	char *path;
	struct timespec ts[2]; /* atime, mtime */
};

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

static bool aborted(struct pp_unpack *u)
{
	return __atomic_load_n(&u->abort, __ATOMIC_RELAXED);
}

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

/* libarchive failed because our read callback did: its reason. */
static int read_failed(struct pp_unpack *u, struct pp_error *err)
{
	if (err)
		*err = u->rerr;
	return u->rerr.code;
}

/* ------------------------------------------------------------ paths */

/* Cleans `name` the way filepath.Clean("/" + name) does, then drops the
 * leading slash: no ".", no "..", no empty components; ".." at the top
 * stays at the top.  Returns a new string ("" for the root itself). */
static char *clean_rel(const char *name)
{
	size_t n = strlen(name);
	char *out = pp_xmalloc(n + 1);
	size_t len = 0;
	const char *p = name;
	while (*p) {
		while (*p == '/')
			p++;
		const char *s = p;
		while (*p && *p != '/')
			p++;
		size_t cl = (size_t)(p - s);
		if (cl == 0 || (cl == 1 && s[0] == '.'))
			continue;
		if (cl == 2 && s[0] == '.' && s[1] == '.') {
			while (len > 0 && out[len - 1] != '/')
				len--;
			if (len > 0)
				len--; /* the slash before the dropped component */
			continue;
		}
		if (len > 0)
			out[len++] = '/';
		memcpy(out + len, s, cl);
		len += cl;
	}
	out[len] = '\0';
	return out;
}

static char *join_path(const char *root, const char *rel)
{
	if (!*rel)
		return pp_xstrdup(root);
	if (strcmp(root, "/") == 0)
		return pp_xasprintf("/%s", rel);
	return pp_xasprintf("%s/%s", root, rel);
}

/* Resolves `rel` (a clean relative path) inside `root` as containerd's
 * fs.RootPath does: every symlink met is expanded (an absolute target
 * starts again from root, a relative one from the link's directory, ".."
 * stops at root), so the result never leaves root.  Components that do not
 * exist are kept as they are.  *out is the resolved clean relative path. */
static int resolve_in(const char *root, const char *rel, char **out, struct pp_error *err)
{
	char *work = pp_xstrdup(rel);
	int links = 0;
restart:;
	char *full = join_path(root, work);
	size_t base = strlen(full) - strlen(work); /* where work starts inside full */
	size_t pos = 0;                            /* work[0:pos] is resolved */
	while (work[pos]) {
		size_t end = pos;
		while (work[end] && work[end] != '/')
			end++;
		char saved = full[base + end];
		full[base + end] = '\0';
		struct stat st;
		if (lstat(full, &st) < 0) {
			int e = errno;
			full[base + end] = saved;
			if (e == ENOENT)
				break; /* nothing below exists either: keep the rest */
			free(work);
			char b[256];
			errno = e;
			int rc =
				pp_error_errno(err, "resolve %s", pp_printable(b, sizeof(b), full));
			free(full);
			return rc;
		}
		if (S_ISLNK(st.st_mode)) {
			if (++links > MAX_LINKS) {
				char b[256];
				pp_error_set(err, PP_EPROTO, "resolve %s: too many symlinks",
					     pp_printable(b, sizeof(b), rel));
				free(full);
				free(work);
				return PP_EPROTO;
			}
			char target[PATH_MAX];
			ssize_t tl = readlink(full, target, sizeof(target) - 1);
			if (tl < 0) {
				char b[256];
				int rc = pp_error_errno(err, "readlink %s",
							pp_printable(b, sizeof(b), full));
				free(full);
				free(work);
				return rc;
			}
			target[tl] = '\0';
			/* The link's directory is work[0:pos] (pos includes its
			 * trailing slash, if any). */
			char *dir = pp_xstrndup(work, pos);
			char *joined = pp_xasprintf("%s/%s/%s", target[0] == '/' ? "" : dir, target,
						    work + end);
			free(dir);
			free(work);
			free(full);
			work = clean_rel(joined);
			free(joined);
			goto restart;
		}
		full[base + end] = saved;
		pos = work[end] ? end + 1 : end;
	}
	free(full);
	*out = work;
	return 0;
}

/* Removes path and, if it is a directory, everything under it, never
 * following a symlink (os.RemoveAll). */
static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	return (flag == FTW_DP ? rmdir(p) : unlink(p)) < 0 && errno != ENOENT ? -1 : 0;
}

static int remove_all(const char *path)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -1;
	if (!S_ISDIR(st.st_mode))
		return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
	return nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Gives a directory we had to create the mode, owner, times and xattrs of
 * the same directory in the first lower layer that has one (containerd's
 * mkparent with WithParents). */
static int copy_from_lower(struct pp_unpack *u, const char *full, const char *rel,
			   struct pp_error *err)
{
	char b[256];
	for (char **l = u->lowers; l && *l; l++) {
		cleanup_free char *lrel = NULL;
		if (resolve_in(*l, rel, &lrel, err) < 0)
			return err->code;
		cleanup_free char *lp = join_path(*l, lrel);
		struct stat st;
		if (lstat(lp, &st) < 0) {
			if (errno == ENOENT)
				continue;
			return pp_error_errno(err, "lstat %s", pp_printable(b, sizeof(b), lp));
		}
		if (!S_ISDIR(st.st_mode))
			return 0; /* replaced there: keep the defaults */
		struct timespec ts[2] = {st.st_atim, st.st_mtim};
		if (lchown(full, st.st_uid, st.st_gid) < 0 || chmod(full, st.st_mode & 07777) < 0 ||
		    utimensat(AT_FDCWD, full, ts, AT_SYMLINK_NOFOLLOW) < 0)
			return pp_error_errno(err, "copy attributes of %s",
					      pp_printable(b, sizeof(b), full));
		char names[4096];
		ssize_t nl = llistxattr(lp, names, sizeof(names));
		for (ssize_t i = 0; i < nl; i += (ssize_t)strlen(names + i) + 1) {
			char val[4096];
			ssize_t vl = lgetxattr(lp, names + i, val, sizeof(val));
			if (vl < 0)
				continue;
			if (lsetxattr(full, names + i, val, (size_t)vl, XATTR_CREATE) < 0 &&
			    errno != ENOTSUP && errno != EEXIST)
				return pp_error_errno(err, "copy xattr %s to %s", names + i,
						      pp_printable(b, sizeof(b), full));
		}
		return 0;
	}
	return 0;
}

/* Creates the missing directories of rel (already resolved) under the
 * root. */
static int mkparent(struct pp_unpack *u, const char *rel, struct pp_error *err)
{
	char b[256];
	cleanup_free char *full = join_path(u->root, rel);
	size_t base = strlen(full) - strlen(rel);
	size_t pos = 0;
	while (rel[pos]) {
		size_t end = pos;
		while (rel[end] && rel[end] != '/')
			end++;
		char saved = full[base + end];
		full[base + end] = '\0';
		struct stat st;
		if (lstat(full, &st) == 0) {
			if (!S_ISDIR(st.st_mode)) {
				errno = ENOTDIR;
				return pp_error_errno(err, "mkdir %s",
						      pp_printable(b, sizeof(b), full));
			}
		} else if (errno != ENOENT) {
			return pp_error_errno(err, "lstat %s", pp_printable(b, sizeof(b), full));
		} else {
			if ((mkdir(full, 0755) < 0 && errno != EEXIST) || chmod(full, 0755) < 0)
				return pp_error_errno(err, "mkdir %s",
						      pp_printable(b, sizeof(b), full));
			cleanup_free char *prel = pp_xstrndup(rel, end);
			if (copy_from_lower(u, full, prel, err) < 0)
				return err->code;
		}
		full[base + end] = saved;
		pos = rel[end] ? end + 1 : end;
	}
	return 0;
}

/* ------------------------------------------------------------ entries */

static int skip_data(struct pp_unpack *u, struct pp_error *err)
{
	if (archive_read_data_skip(u->ar) < ARCHIVE_WARN) {
		if (u->rerr.code)
			return read_failed(u, err);
		return pp_error_set(err, PP_EPROTO, "tar: %s", archive_error_string(u->ar));
	}
	return 0;
}

/* An overlay whiteout: true in *handled when `base` was one. */
static int whiteout(struct pp_unpack *u, struct archive_entry *e, const char *pdir,
		    const char *base, bool *handled, struct pp_error *err)
{
	char b[256];
	*handled = false;
	if (strcmp(base, WHITEOUT_OPAQUE) == 0) {
		const char *name = u->whiteout == PP_WHITEOUT_OVERLAY_USERXATTR
					   ? "user.overlay.opaque"
					   : "trusted.overlay.opaque";
		if (lsetxattr(pdir, name, "y", 1, 0) < 0)
			return pp_error_errno(err, "set %s on %s", name,
					      pp_printable(b, sizeof(b), pdir));
		*handled = true;
		return skip_data(u, err);
	}
	if (strncmp(base, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX)) != 0)
		return 0;
	const char *victim = base + strlen(WHITEOUT_PREFIX);
	if (!*victim || strcmp(victim, ".") == 0 || strcmp(victim, "..") == 0)
		return pp_error_set(err, PP_EPROTO, "whiteout %s names no file",
				    pp_printable(b, sizeof(b), base));
	cleanup_free char *path = join_path(pdir, victim);
	if (mknod(path, S_IFCHR, makedev(0, 0)) < 0)
		return pp_error_errno(err, "whiteout %s", pp_printable(b, sizeof(b), path));
	if (lchown(path, (uid_t)archive_entry_uid(e), (gid_t)archive_entry_gid(e)) < 0)
		return pp_error_errno(err, "chown whiteout %s", pp_printable(b, sizeof(b), path));
	*handled = true;
	return skip_data(u, err);
}

/* archive_write_disk failed: its message, and the system's reason when
 * there is one (libarchive says only "Write failed" for a full disk). */
static int write_failed(struct pp_unpack *u, const char *shown, const char *what,
			struct pp_error *err)
{
	int e = archive_errno(u->aw);
	const char *msg = archive_error_string(u->aw);
	if (e > 0 && e < 4096) {
		pp_error_set(err, PP_EIO, "%s: %s: %s (%s)", shown, what, msg ? msg : "failed",
			     strerror(e));
		err->sys_errno = e;
	} else {
		pp_error_set(err, PP_EIO, "%s: %s: %s", shown, what, msg ? msg : "failed");
	}
	return PP_EIO;
}

static int copy_data(struct pp_unpack *u, const char *shown, struct pp_error *err)
{
	for (;;) {
		const void *buf;
		size_t size;
		la_int64_t off;
		int r = archive_read_data_block(u->ar, &buf, &size, &off);
		if (r == ARCHIVE_EOF)
			return 0;
		if (r < ARCHIVE_WARN) {
			if (u->rerr.code)
				return read_failed(u, err);
			return pp_error_set(err, PP_EPROTO, "%s: tar: %s", shown,
					    archive_error_string(u->ar));
		}
		if (aborted(u))
			return pp_error_set(err, PP_EINTR, "stopped");
		/* The offset makes a sparse entry's holes holes again. */
		if (archive_write_data_block(u->aw, buf, size, off) < ARCHIVE_OK) {
			char what[96];
			snprintf(what, sizeof(what), "write of %zu bytes at offset %lld", size,
				 (long long)off);
			return write_failed(u, shown, what, err);
		}
	}
}

static int apply_entry(struct pp_unpack *u, struct archive_entry *e, struct pp_error *err)
{
	char shown[256];
	const char *name = archive_entry_pathname(e);
	if (!name)
		return pp_error_set(err, PP_EPROTO, "tar entry without a name");
	pp_printable(shown, sizeof(shown), name);
	mode_t type = archive_entry_filetype(e);
	const char *hardlink = archive_entry_hardlink(e);
	if (!hardlink && type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK &&
	    type != AE_IFCHR && type != AE_IFBLK && type != AE_IFIFO) {
		u->refusal = PP_UNPACK_REFUSED_ENTRY_TYPE;
		return pp_error_set(err, PP_EUNSUPPORTED, "%s: tar entry type 0%o not handled",
				    shown, (unsigned)type);
	}

	cleanup_free char *rel = clean_rel(name);
	if (!*rel)
		return skip_data(u, err); /* the root itself: containerd ignores it too */
	char *slash = strrchr(rel, '/');
	const char *base = slash ? slash + 1 : rel;
	cleanup_free char *dir = pp_xstrndup(rel, slash ? (size_t)(slash - rel) : 0);
	cleanup_free char *rdir = NULL;
	if (resolve_in(u->root, dir, &rdir, err) < 0)
		return pp_error_wrap(err, "%s", shown);
	if (*rdir && mkparent(u, rdir, err) < 0)
		return pp_error_wrap(err, "%s", shown);
	cleanup_free char *pdir = join_path(u->root, rdir);
	cleanup_free char *path = join_path(pdir, base);
	u->entries++;

	bool handled;
	if (whiteout(u, e, pdir, base, &handled, err) < 0)
		return pp_error_wrap(err, "%s", shown);
	if (handled)
		return 0;

	/* Replace what is there, unless a directory meets a directory: then
	 * the layer's metadata is merged onto it. */
	struct stat st;
	if (lstat(path, &st) == 0 && !(S_ISDIR(st.st_mode) && !hardlink && type == AE_IFDIR)) {
		if (remove_all(path) < 0)
			return pp_error_errno(err, "%s: remove what it replaces", shown);
	}

	if (hardlink) {
		/* Done here rather than by libarchive: the target resolves like
		 * a name (parent within the root, last component not followed,
		 * so a link to a symlink links the symlink, as link(2) does). */
		cleanup_free char *trel = clean_rel(hardlink);
		if (!*trel)
			return pp_error_set(err, PP_EPROTO, "%s: hardlink to the root", shown);
		char *ts = strrchr(trel, '/');
		cleanup_free char *tdir = pp_xstrndup(trel, ts ? (size_t)(ts - trel) : 0);
		cleanup_free char *rtdir = NULL;
		if (resolve_in(u->root, tdir, &rtdir, err) < 0)
			return pp_error_wrap(err, "%s", shown);
		cleanup_free char *tpdir = join_path(u->root, rtdir);
		cleanup_free char *target = join_path(tpdir, ts ? ts + 1 : trel);
		size_t rl = strlen(u->root);
		if (strncmp(target, u->root, rl) != 0 || (target[rl] != '/' && rl > 1))
			return pp_error_set(err, PP_EPROTO, "%s: hardlink target leaves the root",
					    shown);
		if (linkat(AT_FDCWD, target, AT_FDCWD, path, 0) < 0) {
			char tb[256];
			return pp_error_errno(err, "%s: hardlink to %s", shown,
					      pp_printable(tb, sizeof(tb), hardlink));
		}
		return skip_data(u, err);
	}

	archive_entry_set_pathname(e, path);
	int r = archive_write_header(u->aw, e);
	if (r < ARCHIVE_WARN)
		return write_failed(u, shown, "create", err);
	if (r == ARCHIVE_WARN)
		pp_warn("%s%s%s: %s", u->label ? u->label : "", u->label ? ": " : "", shown,
			archive_error_string(u->aw));
	if (archive_entry_size(e) > 0 && type == AE_IFREG) {
		if (copy_data(u, shown, err) < 0)
			return err->code;
	}
	r = archive_write_finish_entry(u->aw);
	if (r < ARCHIVE_WARN)
		return write_failed(u, shown, "finish", err);
	if (r == ARCHIVE_WARN)
		pp_warn("%s%s%s: %s", u->label ? u->label : "", u->label ? ": " : "", shown,
			archive_error_string(u->aw));
	if (type == AE_IFDIR) {
		/* libarchive defers the times of a directory it creates, but sets
		 * those of one that existed at once: later entries would then
		 * change them.  So every directory's times are set at the end. */
		if (u->ndirs == u->dirs_cap) {
			u->dirs_cap = u->dirs_cap ? 2 * u->dirs_cap : 64;
			u->dirs = realloc(u->dirs, u->dirs_cap * sizeof(*u->dirs));
			if (!u->dirs)
				abort();
		}
		struct dir_time *d = &u->dirs[u->ndirs++];
		d->ts[1] = (struct timespec){archive_entry_mtime(e), archive_entry_mtime_nsec(e)};
		d->ts[0] = archive_entry_atime_is_set(e)
				   ? (struct timespec){archive_entry_atime(e),
						       archive_entry_atime_nsec(e)}
				   : d->ts[1];
		d->path = path;
		path = NULL;
	}
	return 0;
}

/* ------------------------------------------------------------ worker */

static int run(struct pp_unpack *u, struct pp_error *err)
{
	if (archive_read_open(u->ar, u, NULL, ar_read, NULL) != ARCHIVE_OK) {
		if (u->rerr.code)
			return read_failed(u, err);
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
				return read_failed(u, err);
			return pp_error_set(err, PP_EPROTO, "tar: %s", archive_error_string(u->ar));
		}
		if (aborted(u))
			return pp_error_set(err, PP_EINTR, "stopped");
		if (apply_entry(u, e, err) < 0)
			return err->code;
	}
	/* Directory modes and times, last (creating entries inside would
	 * change them). */
	if (archive_write_close(u->aw) != ARCHIVE_OK)
		return pp_error_set(err, PP_EIO, "set directory attributes: %s",
				    archive_error_string(u->aw));
	for (size_t i = 0; i < u->ndirs; i++) {
		char b[256];
		if (utimensat(AT_FDCWD, u->dirs[i].path, u->dirs[i].ts, AT_SYMLINK_NOFOLLOW) < 0 &&
		    errno != ENOENT)
			return pp_error_errno(err, "set times of %s",
					      pp_printable(b, sizeof(b), u->dirs[i].path));
	}
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
