/* Choosing and opening a store from its spec. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "prepull/containerd_api.h"
#include "prepull/docker_api.h"
#include "prepull/digest.h"
#include "prepull/error.h"
#include "prepull/image.h"
#include "prepull/log.h"
#include "prepull/options.h"
#include "prepull/prefix.h"
#include "prepull/store.h"
#include "prepull/util.h"

/* Something listens on this unix socket (a socket file alone may be left
 * over from a daemon that stopped). */
static bool socket_accepts(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return false;
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	bool ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

static int open_spec(struct pp_store **out, const char *spec, const struct pp_options *opts,
		     struct pp_error *err)
{
	if (strncmp(spec, "oci:", 4) == 0) {
		if (!spec[4])
			return pp_error_set(err, PP_EUSAGE, "--store oci: needs a directory");
		return pp_store_oci_open(out, spec + 4, opts, err);
	}
	if (strcmp(spec, "auto") == 0) {
		/* A daemon that answers wins; an OCI layout needs none. */
		if (pp_docker_socket_answers(NULL))
			return pp_store_docker_open(out, NULL, opts, err);
		if (socket_accepts(PP_CONTAINERD_DEFAULT_SOCKET))
			return pp_store_containerd_open(out, NULL, opts, err);
		cleanup_free char *dir = pp_xasprintf("%s/oci", opts->state_dir);
		return pp_store_oci_open(out, dir, opts, err);
	}
	if (strcmp(spec, "containerd") == 0)
		return pp_store_containerd_open(out, NULL, opts, err);
	if (strncmp(spec, "containerd:", 11) == 0)
		return pp_store_containerd_open(out, spec + 11, opts, err);
	if (strcmp(spec, "docker") == 0)
		return pp_store_docker_open(out, NULL, opts, err);
	if (strncmp(spec, "docker:", 7) == 0)
		return pp_store_docker_open(out, spec + 7, opts, err);
	return pp_error_set(err, PP_EUSAGE,
			    "--store %s: unknown store (expected oci:DIR, containerd[:SOCKET], "
			    "docker[:SOCKET] or auto)",
			    spec);
}

/* A store whose blobs are on another filesystem than the state dir keeps
 * its partial files beside them.  The state dir lists those directories
 * (one per line in `stage-dirs`), so `prepull status` finds every partial
 * blob from the state dir alone. */
static void remember_stage_dir(const char *state_dir, const char *stage_dir)
{
	cleanup_free char *own = pp_xasprintf("%s/partial", state_dir);
	if (!stage_dir || strcmp(own, stage_dir) == 0)
		return;
	cleanup_free char *list = pp_xasprintf("%s/%s", state_dir, PP_STAGE_DIRS_FILE);
	FILE *f = fopen(list, "re");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	bool known = false;
	while (f && !known && (n = getline(&line, &cap, f)) > 0) {
		if (line[n - 1] == '\n')
			line[n - 1] = '\0';
		known = strcmp(line, stage_dir) == 0;
	}
	free(line);
	if (f)
		fclose(f);
	if (known)
		return;
	/* One short write with O_APPEND: runs that add at once cannot interleave. */
	cleanup_free char *entry = pp_xasprintf("%s\n", stage_dir);
	int fd = open(list, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || write(fd, entry, strlen(entry)) != (ssize_t)strlen(entry))
		pp_warn("cannot record %s in %s: %s; `prepull status` will not list its partial "
			"blobs",
			stage_dir, list, strerror(errno));
	if (fd >= 0)
		close(fd);
}

void pp_store_each_stage_dir(const char *state_dir,
			     void (*fn)(void *ctx, const char *dir, bool own), void *ctx)
{
	cleanup_free char *own = pp_xasprintf("%s/partial", state_dir);
	fn(ctx, own, true);
	cleanup_free char *list = pp_xasprintf("%s/%s", state_dir, PP_STAGE_DIRS_FILE);
	cleanup_file FILE *f = fopen(list, "re");
	cleanup_free char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	while (f && (len = getline(&line, &cap, f)) > 0) {
		if (line[len - 1] == '\n')
			line[--len] = '\0';
		if (len > 0)
			fn(ctx, line, false);
	}
}

int pp_store_open(struct pp_store **out, const char *spec, const struct pp_options *opts,
		  struct pp_error *err)
{
	int r = open_spec(out, spec, opts, err);
	if (r == 0 && opts->discard_layers && !(*out)->discards_layers) {
		r = pp_error_set(
			err, PP_EUSAGE,
			"--discard-layers needs a store that unpacks layers: containerd, or "
			"Docker with its containerd image store (this is %s)",
			(*out)->desc);
		pp_store_free(*out);
		*out = NULL;
		return r;
	}
	if (r == 0 && opts->state_dir)
		remember_stage_dir(opts->state_dir, (*out)->stage_dir);
	return r;
}

void pp_store_free(struct pp_store *s)
{
	if (!s)
		return;
	if (s->ops && s->ops->free)
		s->ops->free(s);
	free(s->desc);
	free(s->stage_dir);
	free(s);
}

char *pp_blob_dir_path(const char *blob_dir, const char *digest)
{
	return pp_xasprintf("%s/%s", blob_dir, pp_digest_hex(digest));
}

bool pp_blob_dir_has(const char *blob_dir, const char *digest, int64_t size)
{
	cleanup_free char *p = pp_blob_dir_path(blob_dir, digest);
	struct stat st;
	return stat(p, &st) == 0 && S_ISREG(st.st_mode) && (size < 0 || st.st_size == size);
}

int pp_blob_dir_read(const char *blob_dir, const char *digest, int64_t max, char **out, size_t *len,
		     struct pp_error *err)
{
	cleanup_free char *p = pp_blob_dir_path(blob_dir, digest);
	cleanup_close int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return pp_error_errno(err, "open %s", p);
	struct pp_buf b = {.limit = (size_t)max};
	if (pp_buf_read_fd(&b, fd) < 0) {
		int r = errno == EFBIG ? pp_error_set(err, PP_EIO, "%s is larger than %lld bytes",
						      p, (long long)max)
				       : pp_error_errno(err, "read %s", p);
		pp_buf_free(&b);
		return r;
	}
	*out = b.data ? b.data : pp_xstrdup("");
	*len = b.len;
	return 0;
}

int pp_blob_dir_commit(const char *blob_dir, const char *digest, const char *path,
		       struct pp_error *err)
{
	cleanup_free char *p = pp_blob_dir_path(blob_dir, digest);
	if (rename(path, p) < 0)
		return pp_error_errno(err, "rename %s to %s", path, p);
	if (pp_fsync_dir(blob_dir) < 0)
		return pp_error_errno(err, "sync %s", blob_dir);
	return 0;
}

int pp_blob_dir_put(const char *blob_dir, const char *stage_dir, const char *digest,
		    const void *data, size_t len, unsigned mode, struct pp_error *err)
{
	if (pp_blob_dir_has(blob_dir, digest, (int64_t)len))
		return 0;
	cleanup_free char *tmp = pp_xasprintf("%s/blob-XXXXXX", stage_dir ? stage_dir : blob_dir);
	int fd = mkostemp(tmp, O_CLOEXEC); /* O_EXCL: never someone else's file */
	if (fd < 0)
		return pp_error_errno(err, "create %s", tmp);
	const char *p = data;
	size_t left = len;
	int r = 0;
	while (left) {
		ssize_t w = write(fd, p, left);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			r = pp_error_errno(err, "write %s", tmp);
			break;
		}
		p += w;
		left -= (size_t)w;
	}
	if (r == 0 && fchmod(fd, mode) < 0)
		r = pp_error_errno(err, "chmod %s", tmp);
	if (r == 0 && fsync(fd) < 0)
		r = pp_error_errno(err, "sync %s", tmp);
	if (close(fd) < 0 && r == 0)
		r = pp_error_errno(err, "close %s", tmp);
	if (r == 0)
		r = pp_blob_dir_commit(blob_dir, digest, tmp, err);
	if (r < 0)
		unlink(tmp);
	return r;
}

int pp_store_dir_has_blob(struct pp_store *s, const char *digest, int64_t size, bool *out,
			  struct pp_error *err)
{
	(void)err;
	*out = pp_blob_dir_has(s->blob_dir, digest, size);
	return 0;
}

int pp_store_dir_read_blob(struct pp_store *s, const char *digest, int64_t max, char **out,
			   size_t *len, struct pp_error *err)
{
	return pp_blob_dir_read(s->blob_dir, digest, max, out, len, err);
}

int pp_store_dir_commit_file(struct pp_store *s, const char *digest, const char *path,
			     struct pp_error *err)
{
	return pp_blob_dir_commit(s->blob_dir, digest, path, err);
}

int pp_store_dir_put_blob(struct pp_store *s, const char *digest, const void *data, size_t len,
			  struct pp_error *err)
{
	/* 0644: an OCI layout's files are read by other tools (skopeo, umoci). */
	return pp_blob_dir_put(s->blob_dir, s->stage_dir, digest, data, len, 0644, err);
}

/* Whether a file in `from` can be renamed into `to`.  Equal st_dev is not
 * enough: two mounts of one filesystem (a bind mount) share it, yet
 * rename(2) between them fails with EXDEV.  So try it: an empty file made
 * with O_EXCL, renamed to a hidden name in `to`, then removed. */
static bool rename_works(const char *from, const char *to)
{
	cleanup_free char *src = pp_xasprintf("%s/.prepull-probe-XXXXXX", from);
	int fd = mkostemp(src, O_CLOEXEC); /* O_EXCL: never someone else's file */
	if (fd < 0)
		return false;
	close(fd);
	cleanup_free char *dst = pp_xasprintf("%s/%s", to, strrchr(src, '/') + 1);
	if (rename(src, dst) == 0) {
		unlink(dst);
		return true;
	}
	pp_debug("staging: cannot rename from %s to %s: %s", from, to, strerror(errno));
	unlink(src);
	return false;
}

char *pp_store_stage_dir(const char *state_dir, const char *blobs, const char *fallback,
			 unsigned mode)
{
	char *partial = pp_xasprintf("%s/partial", state_dir);
	if (pp_mkdir_p(partial, 0700) == 0 && rename_works(partial, blobs))
		return partial;
	free(partial);
	pp_mkdir_p(fallback, mode);
	/* One an older prepull made may be wider than asked: partial files
	 * are nobody else's business.  One that is not ours is only named. */
	struct stat st;
	if (lstat(fallback, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == geteuid())
		chmod(fallback, mode);
	else
		pp_warn("staging directory %s is not a directory of this user", fallback);
	return pp_xstrdup(fallback);
}

int pp_store_has_blob(struct pp_store *s, const char *digest, int64_t size, bool *out,
		      struct pp_error *err)
{
	return s->ops->has_blob(s, digest, size, out, err);
}

int pp_store_read_blob(struct pp_store *s, const char *digest, int64_t max, char **out, size_t *len,
		       struct pp_error *err)
{
	return s->ops->read_blob(s, digest, max, out, len, err);
}

int pp_store_commit_file(struct pp_store *s, const char *digest, const char *path,
			 struct pp_error *err)
{
	return s->ops->commit_file(s, digest, path, err);
}

int pp_store_put_blob(struct pp_store *s, const char *digest, const void *data, size_t len,
		      struct pp_error *err)
{
	return s->ops->put_blob(s, digest, data, len, err);
}

int pp_store_has_layer(struct pp_store *s, const struct pp_image *img, size_t index, bool *out,
		       struct pp_error *err)
{
	if (s->ops->has_layer)
		return s->ops->has_layer(s, img, index, out, err);
	const struct pp_descriptor *d = &img->manifest.layers[index];
	return s->ops->has_blob(s, d->digest, d->size, out, err);
}

int pp_store_prepare_image(struct pp_store *s, const struct pp_image *img, bool *complete,
			   struct pp_error *err)
{
	*complete = false;
	return s->ops->prepare_image ? s->ops->prepare_image(s, img, complete, err) : 0;
}

int pp_store_layer_consumer(struct pp_store *s, const struct pp_image *img, size_t index,
			    struct pp_prefix_consumer *out, struct pp_error *err)
{
	out->ops = NULL;
	out->ctx = NULL;
	return s->ops->layer_consumer ? s->ops->layer_consumer(s, img, index, out, err) : 0;
}

int pp_store_register_image(struct pp_store *s, const struct pp_image *img, struct pp_error *err)
{
	return s->ops->register_image(s, img, err);
}

int pp_store_layers_unpacked(struct pp_store *s, const struct pp_image *img, size_t *unpacked,
			     size_t *ready, struct pp_error *err)
{
	size_t r = 0;
	*unpacked = 0;
	if (!ready)
		ready = &r;
	*ready = 0;
	return s->ops->layers_unpacked ? s->ops->layers_unpacked(s, img, unpacked, ready, err) : 0;
}

int pp_store_layer_unpack(struct pp_store *s, const struct pp_image *img, size_t index,
			  struct pp_layer_unpack *out)
{
	*out = (struct pp_layer_unpack){0};
	return s->ops->layer_unpack ? s->ops->layer_unpack(s, img, index, out) : 0;
}
