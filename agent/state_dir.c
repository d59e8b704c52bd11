/* Opening the state dir: see include/prepull/state_dir.h for why it is
 * private and why it has a version. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "prepull/error.h"
#include "prepull/log.h"
#include "prepull/state_dir.h"
#include "prepull/util.h"

/* Why another user could put their own files in place of what is below
 * this directory, or NULL: they own it, or they may write to it and the
 * sticky bit does not keep them from renaming entries they do not own. */
static const char *unsafe_ancestor(const struct stat *st, uid_t me)
{
	if (st->st_uid != 0 && st->st_uid != me)
		return "is owned by another user";
	if ((st->st_mode & (S_IWGRP | S_IWOTH)) && !(st->st_mode & S_ISVTX))
		return "is writable by other users";
	return NULL;
}

/* Checks every directory above `dir` (absolute, without a trailing slash)
 * that exists, from / down; the missing ones we create ourselves. */
static int check_ancestors(const char *dir, const char *abs, struct pp_error *err)
{
	uid_t me = geteuid();
	size_t len = strlen(abs);
	for (size_t i = 0; i < len; i++) {
		if (abs[i] != '/' || (i > 0 && abs[i - 1] == '/'))
			continue;
		cleanup_free char *prefix = pp_xstrndup(abs, i == 0 ? 1 : i);
		struct stat st;
		if (stat(prefix, &st) < 0) {
			if (errno == ENOENT)
				return 0;
			return pp_error_errno(err, "state dir %s: %s", dir, prefix);
		}
		const char *why = unsafe_ancestor(&st, me);
		if (why)
			return pp_error_set(
				err, PP_EIO,
				"state dir %s: %s %s (uid %ld, mode %04o), so the state "
				"dir could be replaced; refusing it: choose a --state-dir "
				"below directories only you or root can change",
				dir, prefix, why, (long)st.st_uid, (unsigned)(st.st_mode & 07777));
	}
	return 0;
}

/* mkdir 0700, with missing parents 0755 (as `mkdir -p -m 700` does). */
static int create_dir(const char *dir, struct pp_error *err)
{
	if (mkdir(dir, 0700) == 0 || errno == EEXIST)
		return 0;
	if (errno == ENOENT) {
		cleanup_free char *parent = pp_xstrdup(dir);
		char *slash = strrchr(parent, '/');
		if (slash && slash != parent) {
			*slash = '\0';
			if (pp_mkdir_p(parent, 0755) < 0)
				return pp_error_errno(err, "create state dir %s", dir);
		}
		if (mkdir(dir, 0700) == 0 || errno == EEXIST)
			return 0;
	}
	return pp_error_errno(err, "create state dir %s", dir);
}

/* The state dir itself: ours, and nobody else may write to it. */
static int check_owner(const char *dir, const struct stat *st, struct pp_error *err)
{
	if (!S_ISDIR(st->st_mode))
		return pp_error_set(err, PP_EIO, "state dir %s is not a directory", dir);
	if (st->st_uid != geteuid())
		return pp_error_set(err, PP_EIO,
				    "state dir %s is owned by uid %ld, not by this user (uid %ld); "
				    "refusing it: that user could replace the files prepull writes "
				    "there. Use a --state-dir of your own",
				    dir, (long)st->st_uid, (long)geteuid());
	if (st->st_mode & (S_IWGRP | S_IWOTH))
		return pp_error_set(err, PP_EIO,
				    "state dir %s is writable by other users (mode %04o); refusing "
				    "it: run `chmod 700 %s` or use another --state-dir",
				    dir, (unsigned)(st->st_mode & 07777), dir);
	return 0;
}

/* Reads `version`: *found false when there is none. */
static int read_version(const char *dir, int dfd, bool *found, struct pp_error *err)
{
	*found = false;
	cleanup_close int fd =
		openat(dfd, PP_STATE_DIR_VERSION_FILE, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return 0;
	if (fd < 0)
		return pp_error_errno(err, "open %s/%s", dir, PP_STATE_DIR_VERSION_FILE);
	char buf[32];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n < 0)
		return pp_error_errno(err, "read %s/%s", dir, PP_STATE_DIR_VERSION_FILE);
	buf[n] = '\0';
	char *end;
	errno = 0;
	long v = strtol(buf, &end, 10);
	while (*end == '\n' || *end == ' ')
		end++;
	if (errno || end == buf || *end || v < 1)
		return pp_error_set(err, PP_EUNSUPPORTED,
				    "state dir %s: %s/%s does not hold a format version", dir, dir,
				    PP_STATE_DIR_VERSION_FILE);
	if (v > PP_STATE_DIR_VERSION)
		return pp_error_set(err, PP_EUNSUPPORTED,
				    "state dir %s has format version %ld, newer than this prepull "
				    "knows (%d); use a newer prepull or another --state-dir",
				    dir, v, PP_STATE_DIR_VERSION);
	*found = true;
	return 0;
}

/* partial/: created 0700; one an older prepull made 0755 is tightened. */
static int open_partial(const char *dir, int dfd, struct pp_error *err)
{
	if (mkdirat(dfd, "partial", 0700) == 0)
		return 0;
	if (errno != EEXIST)
		return pp_error_errno(err, "create %s/partial", dir);
	struct stat st;
	if (fstatat(dfd, "partial", &st, 0) < 0)
		return pp_error_errno(err, "%s/partial", dir);
	if (!S_ISDIR(st.st_mode))
		return pp_error_set(err, PP_EIO, "%s/partial is not a directory", dir);
	if (st.st_uid != geteuid())
		return pp_error_set(err, PP_EIO,
				    "%s/partial is owned by uid %ld, not by this user (uid %ld); "
				    "refusing it",
				    dir, (long)st.st_uid, (long)geteuid());
	if ((st.st_mode & 077) && fchmodat(dfd, "partial", 0700, 0) < 0)
		return pp_error_errno(err, "chmod 700 %s/partial", dir);
	return 0;
}

int pp_state_dir_open(const char *dir_arg, struct pp_error *err)
{
	cleanup_free char *dir = pp_xstrdup(dir_arg);
	size_t len = strlen(dir);
	while (len > 1 && dir[len - 1] == '/')
		dir[--len] = '\0';
	if (!*dir)
		return pp_error_set(err, PP_EUSAGE, "the state dir must not be empty");
	cleanup_free char *abs = NULL;
	if (dir[0] == '/') {
		abs = pp_xstrdup(dir);
	} else {
		char cwd[PATH_MAX];
		if (!getcwd(cwd, sizeof(cwd)))
			return pp_error_errno(err, "state dir %s: current directory", dir);
		abs = pp_xasprintf("%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd, dir);
	}
	int r;
	if ((r = check_ancestors(dir, abs, err)) < 0 || (r = create_dir(dir, err)) < 0)
		return r;
	cleanup_close int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct stat st;
	if (dfd < 0 || fstat(dfd, &st) < 0)
		return pp_error_errno(err, "open state dir %s", dir);
	/* Again, now that every directory above exists. */
	if ((r = check_ancestors(dir, abs, err)) < 0 || (r = check_owner(dir, &st, err)) < 0)
		return r;
	bool versioned;
	if ((r = read_version(dir, dfd, &versioned, err)) < 0)
		return r;
	if (!versioned) {
		/* New, or made by a prepull before versions (and before the
		 * state dir was private): version 1 from now on. */
		if ((st.st_mode & 077) && fchmod(dfd, 0700) < 0)
			return pp_error_errno(err, "chmod 700 %s", dir);
		cleanup_free char *path = pp_xasprintf("%s/%s", dir, PP_STATE_DIR_VERSION_FILE);
		char text[16];
		int n = snprintf(text, sizeof(text), "%d\n", PP_STATE_DIR_VERSION);
		if ((r = pp_write_file_atomic(path, text, (size_t)n, err)) < 0)
			return r;
		pp_debug("state dir %s: format version %d", dir, PP_STATE_DIR_VERSION);
	}
	return open_partial(dir, dfd, err);
}
