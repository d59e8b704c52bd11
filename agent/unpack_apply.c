/* Streaming layer apply, the writing half: each tar entry libarchive's
 * reader hands the worker (unpack.c) is confined to the root and written
 * there, with archive_write_disk for the entries themselves and by hand
 * for whiteouts, hardlinks, parent directories the layer does not hold,
 * and directory times.  Runs on the worker thread only.
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
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "prepull/error.h"
#include "prepull/log.h"
#include "prepull/util.h"
#include "unpack_int.h"

#define MAX_LINKS 255 /* symlinks expanded per name, as containerd */

#define WHITEOUT_PREFIX ".wh."
#define WHITEOUT_OPAQUE ".wh..wh..opq"

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
			return unpack_read_failed(u, err);
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
				return unpack_read_failed(u, err);
			return pp_error_set(err, PP_EPROTO, "%s: tar: %s", shown,
					    archive_error_string(u->ar));
		}
		if (unpack_aborted(u))
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

int unpack_apply_entry(struct pp_unpack *u, struct archive_entry *e, struct pp_error *err)
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

/* ------------------------------------------------------------ the end */

int unpack_apply_finish(struct pp_unpack *u, struct pp_error *err)
{
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
	return 0;
}
