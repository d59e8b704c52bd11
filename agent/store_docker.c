/* The docker store: images pre-loaded into a Docker Engine so that
 * `docker run --pull=never IMAGE` starts at once.
 *
 * With the classic image store, verified blobs wait in an OCI-like blob
 * directory under the state dir (<state>/docker/blobs/sha256) and each
 * image is handed to POST /images/load as a docker-archive made on the fly
 * (tar_stream.c): manifest.json, the config and the layers, compressed
 * layers sent as they are.  A daemon older than 23.0 cannot read zstd
 * layers, so those are decompressed while they stream; the uncompressed
 * tar is what the config's DiffID names, so the image ID stays the config
 * digest.  Blobs of a loaded image are removed when the run ends: Docker
 * holds the image then, and a second copy would only take disk space.
 *
 * When the daemon keeps its images in containerd, the containerd store does
 * the work, in Docker's namespace "moby". */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "prepull/containerd_api.h"
#include "prepull/digest.h"
#include "prepull/docker_api.h"
#include "prepull/stop.h"
#include "prepull/error.h"
#include "prepull/image.h"
#include "prepull/log.h"
#include "prepull/manifest.h"
#include "prepull/options.h"
#include "prepull/store.h"
#include "prepull/tar_stream.h"
#include "prepull/util.h"

/* A blob in our directory and whether an image that still needs it is
 * not loaded yet. */
struct blob_use {
	char *digest;
	int unloaded; /* images of this run that need it and are not loaded */
	bool loaded;  /* some image of this run that needs it was loaded */
};

typedef char pp_digest_str[PP_DIGEST_STR_LEN + 1];

struct docker {
	struct pp_docker *d;
	char *dir;
	char *blob_dir;
	int lock_fd;
	struct blob_use *uses;
	size_t n_uses;
	pp_digest_str *chains; /* chain IDs of the layer stacks Docker holds */
	size_t n_chains;
	bool chains_read;
	char img_config[PP_DIGEST_STR_LEN + 1]; /* the image img_chains is for */
	pp_digest_str *img_chains;              /* its layers' chain IDs */
};

static struct blob_use *find_use(struct docker *k, const char *digest, bool add)
{
	for (size_t i = 0; i < k->n_uses; i++)
		if (strcmp(k->uses[i].digest, digest) == 0)
			return &k->uses[i];
	if (!add)
		return NULL;
	k->uses = pp_xrealloc(k->uses, (k->n_uses + 1) * sizeof(*k->uses));
	k->uses[k->n_uses] = (struct blob_use){.digest = pp_xstrdup(digest)};
	return &k->uses[k->n_uses++];
}

/* "name:tag" as docker shows it, or NULL for a reference without a tag
 * (docker load takes no digest references). */
static char *repo_tag(const struct pp_image *img)
{
	if (!img->ref.tag)
		return NULL;
	cleanup_free char *name = pp_docker_familiar_name(img->ref.domain, img->ref.path);
	return pp_xasprintf("%s:%s", name, img->ref.tag);
}

/* GET a JSON document from the Engine API; *out = NULL for a 404. */
static int get_json(struct docker *k, const char *path, json_t **out, struct pp_error *err)
{
	struct pp_buf body = {0};
	long status = 0;
	*out = NULL;
	int r = pp_docker_request(k->d, "GET", path, &body, &status, err);
	if (r == 0 && status != 200 && status != 404)
		r = pp_error_set(err, PP_EPROTO, "docker GET %s: HTTP %ld", path, status);
	if (r == 0 && status == 200) {
		json_error_t je;
		*out = json_loadb(body.data, body.len, 0, &je);
		if (!*out)
			r = pp_error_set(err, PP_EPROTO, "docker GET %s: %s", path, je.text);
	}
	pp_buf_free(&body);
	return r;
}

/* GET /images/<id>/json: *found, and *tagged when `want_tag` is among
 * its RepoTags. */
static int inspect_image(struct docker *k, const char *id, const char *want_tag, bool *found,
			 bool *tagged, struct pp_error *err)
{
	cleanup_free char *path = pp_xasprintf("/images/%s/json", id);
	json_t *j;
	*found = *tagged = false;
	int r = get_json(k, path, &j, err);
	if (r < 0 || !j)
		return r;
	*found = true;
	json_t *t;
	size_t i;
	json_array_foreach(json_object_get(j, "RepoTags"), i, t)
	{
		if (want_tag && json_string_value(t) && strcmp(json_string_value(t), want_tag) == 0)
			*tagged = true;
	}
	json_decref(j);
	return 0;
}

static bool docker_has_chain(const struct docker *k, const char *chain)
{
	for (size_t i = 0; i < k->n_chains; i++)
		if (strcmp(k->chains[i], chain) == 0)
			return true;
	return false;
}

/* The chain IDs of every layer stack Docker holds, from each image's
 * RootFS.Layers (GET /images/json?all=1, then one /images/<id>/json per
 * image); read once per run.  A layer whose stack Docker has needs no
 * download: docker load takes the layer it has and never opens the file.
 * On an error Docker is taken to hold nothing, which only costs bytes. */
static void read_docker_chains(struct docker *k)
{
	if (k->chains_read)
		return;
	k->chains_read = true;
	struct pp_error err = {0};
	json_t *list;
	if (get_json(k, "/images/json?all=1", &list, &err) < 0) {
		pp_warn("cannot list Docker's images (%s); layers it has will be fetched anyway",
			err.msg);
		return;
	}
	size_t i;
	json_t *it;
	json_array_foreach(list, i, it)
	{
		const char *id = json_string_value(json_object_get(it, "Id"));
		if (!id || pp_digest_validate(id, NULL) < 0)
			continue;
		cleanup_free char *path = pp_xasprintf("/images/%s/json", id);
		json_t *img;
		if (get_json(k, path, &img, &err) < 0 || !img) {
			pp_debug("docker image %s: %s", pp_short_digest(id),
				 err.msg[0] ? err.msg : "gone");
			pp_error_clear(&err);
			continue;
		}
		json_t *layers = json_object_get(json_object_get(img, "RootFS"), "Layers");
		size_t j;
		json_t *l;
		char chain[PP_DIGEST_STR_LEN + 1] = "";
		json_array_foreach(layers, j, l)
		{
			const char *diff_id = json_string_value(l);
			if (!diff_id || pp_digest_validate(diff_id, NULL) < 0)
				break; /* the stack above a layer we cannot name is unknown */
			pp_chain_id(j ? chain : NULL, diff_id, chain);
			if (docker_has_chain(k, chain))
				continue;
			k->chains = pp_xrealloc(k->chains, (k->n_chains + 1) * sizeof(*k->chains));
			memcpy(k->chains[k->n_chains++], chain, sizeof(chain));
		}
		json_decref(img);
	}
	json_decref(list);
	pp_debug("docker holds %zu layer stacks", k->n_chains);
}

/* The chain IDs of an image's layers, in k->img_chains. */
static int image_chains(struct docker *k, const struct pp_image *img, struct pp_error *err)
{
	const struct pp_manifest *m = &img->manifest;
	if (k->img_chains && strcmp(k->img_config, m->config.digest) == 0)
		return 0;
	char **diff_ids = NULL;
	size_t n = 0;
	int r = pp_config_diff_ids(&diff_ids, &n, img->config_bytes.data, img->config_bytes.len,
				   err);
	if (r == 0 && n != m->n_layers)
		r = pp_error_set(err, PP_EPROTO, "config lists %zu diff_ids for %zu layers", n,
				 m->n_layers);
	if (r == 0) {
		free(k->img_chains);
		k->img_chains = pp_xcalloc(n ? n : 1, sizeof(*k->img_chains));
		for (size_t i = 0; i < n; i++)
			pp_chain_id(i ? k->img_chains[i - 1] : NULL, diff_ids[i], k->img_chains[i]);
		snprintf(k->img_config, sizeof(k->img_config), "%s", m->config.digest);
	}
	for (size_t i = 0; i < n; i++)
		free(diff_ids[i]);
	free(diff_ids);
	return r;
}

/* Docker holds layer `index` of the image with every layer below it. */
static int docker_holds_layer(struct docker *k, const struct pp_image *img, size_t index, bool *out,
			      struct pp_error *err)
{
	*out = false;
	int r = image_chains(k, img, err);
	if (r < 0)
		return r;
	read_docker_chains(k);
	*out = docker_has_chain(k, k->img_chains[index]);
	return 0;
}

static int docker_has_layer(struct pp_store *s, const struct pp_image *img, size_t index, bool *out,
			    struct pp_error *err)
{
	struct docker *k = s->priv;
	const struct pp_descriptor *d = &img->manifest.layers[index];
	*out = pp_blob_dir_has(k->blob_dir, d->digest, d->size);
	if (*out)
		return 0;
	int r = docker_holds_layer(k, img, index, out, err);
	if (r == 0 && *out)
		pp_info("%s: layer %s: Docker has it (chain %s); not fetched", img->ref.full,
			pp_short_digest(d->digest), pp_short_digest(k->img_chains[index]));
	return r;
}

/* POST /images/<id>/tag?repo=NAME&tag=TAG */
static int tag_image(struct docker *k, const char *id, const struct pp_image *img,
		     struct pp_error *err)
{
	cleanup_free char *name = pp_docker_familiar_name(img->ref.domain, img->ref.path);
	char *repo = curl_easy_escape(NULL, name, 0);
	char *tag = curl_easy_escape(NULL, img->ref.tag, 0);
	cleanup_free char *path = pp_xasprintf("/images/%s/tag?repo=%s&tag=%s", id, repo, tag);
	curl_free(repo);
	curl_free(tag);
	struct pp_buf body = {0};
	long status = 0;
	int r = pp_docker_request(k->d, "POST", path, &body, &status, err);
	if (r == 0 && status != 201 && status != 200) {
		char tmp[300];
		r = pp_error_set(err, PP_EPROTO, "docker tag %s: HTTP %ld: %s", id, status,
				 pp_printable(tmp, sizeof(tmp), body.data ? body.data : ""));
	}
	pp_buf_free(&body);
	return r;
}

static int docker_prepare_image(struct pp_store *s, const struct pp_image *img, bool *complete,
				struct pp_error *err)
{
	struct docker *k = s->priv;
	const char *id = img->manifest.config.digest;
	cleanup_free char *want = repo_tag(img);
	bool found = false, tagged = false;
	int r = inspect_image(k, id, want, &found, &tagged, err);
	if (r < 0)
		return r;
	if (found) {
		if (want && !tagged) {
			if ((r = tag_image(k, id, img, err)) < 0)
				return r;
			pp_info("%s: already in docker as %s; tagged %s", img->ref.full,
				pp_short_digest(id), want);
		} else {
			pp_info("%s: already in docker as %s; nothing to load", img->ref.full,
				pp_short_digest(id));
		}
		*complete = true;
		return 0;
	}
	for (size_t i = 0; i < img->manifest.n_layers; i++)
		find_use(k, img->manifest.layers[i].digest, true)->unloaded++;
	return 0;
}

struct load {
	struct pp_tar_stream *tar;
	struct pp_error err;
	bool failed;
};

static size_t read_archive(char *buf, size_t size, size_t n, void *ctx)
{
	struct load *l = ctx;
	if (pp_stop_requested) {
		pp_error_set(&l->err, PP_EINTR, "interrupted");
		l->failed = true;
		return CURL_READFUNC_ABORT;
	}
	ssize_t got = pp_tar_stream_read(l->tar, buf, size * n, &l->err);
	if (got < 0) {
		l->failed = true;
		return CURL_READFUNC_ABORT;
	}
	return (size_t)got;
}

/* The archive's entries: layers (zstd ones decompressed when the daemon
 * cannot read them), the config, manifest.json.  Every entry is named
 * blobs/sha256/<digest of its bytes>, as `docker save` names them. */
static int plan_archive(struct docker *k, const struct pp_image *img, char **diff_ids,
			struct pp_tar_entry *entries, size_t *n_entries, char **names, char **paths,
			char **manifest_json, int *n_unzstd, struct pp_error *err)
{
	const struct pp_manifest *m = &img->manifest;
	json_t *layers = json_array();
	size_t n = 0;
	int r = 0;
	*n_unzstd = 0;
	for (size_t i = 0; i < m->n_layers; i++) {
		const struct pp_descriptor *d = &m->layers[i];
		char *path = pp_blob_dir_path(k->blob_dir, d->digest);
		struct stat st;
		if (stat(path, &st) < 0 || st.st_size != d->size) {
			free(path);
			bool held = false;
			if ((r = docker_holds_layer(k, img, i, &held, err)) < 0)
				break;
			if (!held) {
				r = pp_error_set(err, PP_ENOTFOUND, "layer %s is not in %s",
						 pp_short_digest(d->digest), k->blob_dir);
				break;
			}
			/* Named in manifest.json, not sent: Docker has it by chain ID. */
			cleanup_free char *name =
				pp_xasprintf("blobs/sha256/%s", pp_digest_hex(d->digest));
			json_array_append_new(layers, json_string(name));
			continue;
		}
		bool unzstd = !k->d->zstd_layers && pp_file_is_zstd(path);
		const char *content = unzstd ? diff_ids[i] : d->digest;
		char *name = pp_xasprintf("blobs/sha256/%s", pp_digest_hex(content));
		json_array_append_new(layers, json_string(name));
		bool dup = false;
		for (size_t j = 0; j < n && !dup; j++)
			dup = strcmp(names[j], name) == 0;
		if (dup) {
			free(name);
			free(path);
			continue;
		}
		if (unzstd)
			(*n_unzstd)++;
		names[n] = name;
		paths[n] = path;
		entries[n] = (struct pp_tar_entry){
			.name = name,
			.source = unzstd ? PP_TAR_FILE_UNZSTD : PP_TAR_FILE,
			.path = path,
			.expect_digest = unzstd ? diff_ids[i] : NULL,
		};
		n++;
	}
	if (r < 0) {
		json_decref(layers);
		*n_entries = n;
		return r;
	}
	const char *cfg = m->config.digest;
	names[n] = pp_xasprintf("blobs/sha256/%s", pp_digest_hex(cfg));
	entries[n] = (struct pp_tar_entry){.name = names[n],
					   .source = PP_TAR_MEMORY,
					   .data = img->config_bytes.data,
					   .len = img->config_bytes.len};
	n++;
	cleanup_free char *tag = repo_tag(img);
	json_t *tags = json_array();
	if (tag)
		json_array_append_new(tags, json_string(tag));
	json_t *doc = json_pack("[{s:s, s:o, s:o}]", "Config", names[n - 1], "RepoTags", tags,
				"Layers", layers);
	*manifest_json = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	names[n] = pp_xstrdup("manifest.json");
	entries[n] = (struct pp_tar_entry){.name = names[n],
					   .source = PP_TAR_MEMORY,
					   .data = *manifest_json,
					   .len = strlen(*manifest_json)};
	n++;
	*n_entries = n;
	return 0;
}

static int load_image(struct docker *k, const struct pp_image *img, struct pp_error *err)
{
	const struct pp_manifest *m = &img->manifest;
	size_t cap = m->n_layers + 2;
	struct pp_tar_entry *entries = pp_xcalloc(cap, sizeof(*entries));
	char **names = pp_xcalloc(cap, sizeof(*names));
	char **paths = pp_xcalloc(cap, sizeof(*paths));
	char *manifest_json = NULL;
	char **diff_ids = NULL;
	size_t n_diff = 0, n = 0;
	int n_unzstd = 0;
	struct load l = {0};
	struct pp_buf text = {0};
	double t0 = pp_now();
	int r = pp_config_diff_ids(&diff_ids, &n_diff, img->config_bytes.data,
				   img->config_bytes.len, err);
	if (r < 0)
		goto done;
	if (n_diff != m->n_layers) {
		r = pp_error_set(err, PP_EPROTO, "config lists %zu diff_ids for %zu layers", n_diff,
				 m->n_layers);
		goto done;
	}
	r = plan_archive(k, img, diff_ids, entries, &n, names, paths, &manifest_json, &n_unzstd,
			 err);
	if (r < 0)
		goto done;
	if (n_unzstd)
		pp_info("%s: Docker %s cannot read zstd layers: %d layer%s decompressed while "
			"loading",
			img->ref.full, k->d->version, n_unzstd, n_unzstd == 1 ? "" : "s");
	if ((r = pp_tar_stream_new(&l.tar, entries, n, err)) < 0)
		goto done;
	r = pp_docker_post_stream(k->d, "/images/load?quiet=0", "application/x-tar", read_archive,
				  &l, &text, err);
	if (r < 0 && l.failed) {
		/* Our side stopped the upload: that is the reason to give. */
		*err = l.err;
		r = err->code ? err->code : PP_EGENERIC;
	}
	if (r < 0)
		goto done;
	char sent[32];
	pp_format_bytes(sent, sizeof(sent), (double)pp_tar_stream_offset(l.tar));
	/* "Loaded image: NAME:TAG" / "Loaded image ID: sha256:…" */
	for (char *line = text.data, *next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		if (*line)
			pp_debug("docker: %s", line);
	}
	pp_info("%s: loaded into docker as %s (%s streamed in %.1f s)", img->ref.full,
		pp_short_digest(m->config.digest), sent, pp_now() - t0);
done:
	for (size_t i = 0; i < n_diff; i++)
		free(diff_ids[i]);
	free(diff_ids);
	for (size_t i = 0; i < cap; i++) {
		free(names[i]);
		free(paths[i]);
	}
	free(names);
	free(paths);
	free(entries);
	free(manifest_json);
	pp_tar_stream_free(l.tar);
	pp_buf_free(&text);
	return r;
}

static int docker_register_image(struct pp_store *s, const struct pp_image *img,
				 struct pp_error *err)
{
	struct docker *k = s->priv;
	const char *id = img->manifest.config.digest;
	cleanup_free char *tag = repo_tag(img);
	int r = load_image(k, img, err);
	if (r < 0)
		return pp_error_wrap(err, "docker load of %s", tag ? tag : id);
	/* The load answered with success: the image must now be there. */
	bool found = false, tagged = false;
	if ((r = inspect_image(k, id, tag, &found, &tagged, err)) < 0)
		return r;
	if (!found)
		return pp_error_set(err, PP_EPROTO,
				    "docker load of %s reported success but Docker has no image %s",
				    tag ? tag : id, id);
	if (tag && !tagged && (r = tag_image(k, id, img, err)) < 0)
		return r;
	if (!tag)
		pp_warn("%s: loaded without a tag (docker load takes no digest references): use "
			"the image ID %s",
			img->ref.full, id);
	for (size_t i = 0; i < img->manifest.n_layers; i++) {
		struct blob_use *u = find_use(k, img->manifest.layers[i].digest, true);
		if (u->unloaded > 0)
			u->unloaded--;
		u->loaded = true;
	}
	return 0;
}

static void docker_free(struct pp_store *s)
{
	struct docker *k = s->priv;
	if (!k)
		return;
	/* Docker holds what was loaded; blobs still needed by an image that
	 * did not get in stay for the next run. */
	for (size_t i = 0; i < k->n_uses; i++) {
		struct blob_use *u = &k->uses[i];
		if (u->loaded && u->unloaded == 0) {
			cleanup_free char *p = pp_blob_dir_path(k->blob_dir, u->digest);
			if (unlink(p) < 0 && errno != ENOENT)
				pp_warn("remove %s: %s", p, strerror(errno));
		}
		free(u->digest);
	}
	free(k->uses);
	free(k->chains);
	free(k->img_chains);
	pp_docker_free(k->d);
	if (k->lock_fd >= 0)
		close(k->lock_fd);
	free(k->dir);
	free(k->blob_dir);
	free(k);
}

static const struct pp_store_ops docker_ops = {
	.name = "docker",
	.has_blob = pp_store_dir_has_blob,
	.has_layer = docker_has_layer,
	.read_blob = pp_store_dir_read_blob,
	.commit_file = pp_store_dir_commit_file,
	.put_blob = pp_store_dir_put_blob,
	.prepare_image = docker_prepare_image,
	.register_image = docker_register_image,
	.free = docker_free,
};

/* One prepull at a time loads from this blob directory: another one
 * could remove blobs this one is about to send. */
static int lock_dir(struct docker *k, struct pp_error *err)
{
	cleanup_free char *p = pp_xasprintf("%s/lock", k->dir);
	k->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (k->lock_fd < 0)
		return pp_error_errno(err, "open %s", p);
	if (flock(k->lock_fd, LOCK_EX | LOCK_NB) == 0)
		return 0;
	if (errno != EWOULDBLOCK)
		return pp_error_errno(err, "lock %s", p);
	pp_info("another prepull is using %s; waiting for it", k->dir);
	while (flock(k->lock_fd, LOCK_EX) < 0)
		if (errno != EINTR || pp_stop_requested)
			return pp_error_errno(err, "lock %s", p);
	return 0;
}

/* Docker keeps its images in containerd: the containerd store places
 * them in Docker's namespace.  It copies what it needs from the options,
 * so a copy on the stack with the namespace changed will do. */
static int open_through_containerd(struct pp_store **out, const struct pp_docker *d,
				   const struct pp_options *opts, struct pp_error *err)
{
	struct pp_options moby_opts = *opts;
	moby_opts.namespace = "moby";
	/* Where Docker's containerd listens when /info does not say: the
	 * system one, or the one dockerd started itself. */
	const char *addr = d->containerd_address;
	if (!addr) {
		const char *own = "/var/run/docker/containerd/containerd.sock";
		struct stat st;
		addr = PP_CONTAINERD_DEFAULT_SOCKET;
		if (!(stat(addr, &st) == 0 && S_ISSOCK(st.st_mode)) && stat(own, &st) == 0 &&
		    S_ISSOCK(st.st_mode))
			addr = own;
	}
	pp_debug("Docker %s at %s uses the containerd image store: placing images through "
		 "containerd at %s, namespace moby",
		 d->version, d->socket, addr);
	return pp_store_containerd_open(out, addr, &moby_opts, err);
}

int pp_store_docker_open(struct pp_store **out, const char *socket, const struct pp_options *opts,
			 struct pp_error *err)
{
	struct pp_docker *d = NULL;
	int r = pp_docker_connect(&d, socket, err);
	if (r < 0)
		return r;
	if (d->containerd_store) {
		r = open_through_containerd(out, d, opts, err);
		pp_docker_free(d);
		return r;
	}
	struct docker *k = pp_xcalloc(1, sizeof(*k));
	k->d = d;
	k->lock_fd = -1;
	k->dir = pp_xasprintf("%s/docker", opts->state_dir);
	k->blob_dir = pp_xasprintf("%s/blobs/sha256", k->dir);
	struct pp_store *s = pp_xcalloc(1, sizeof(*s));
	s->ops = &docker_ops;
	s->priv = k;
	s->blob_dir = k->blob_dir;
	s->desc = pp_xasprintf("docker:%s", d->socket);
	if (pp_mkdir_p(k->blob_dir, 0700) < 0) {
		r = pp_error_errno(err, "create %s", k->blob_dir);
		goto fail;
	}
	if ((r = lock_dir(k, err)) < 0)
		goto fail;
	char *fallback = pp_xasprintf("%s/partial", k->dir);
	s->stage_dir = pp_store_stage_dir(opts->state_dir, k->blob_dir, fallback, 0700);
	free(fallback);
	pp_debug("Docker %s (API %d.%d, classic image store%s)", d->version, d->api_major,
		 d->api_minor, d->zstd_layers ? "" : ", zstd layers decompressed for it");
	*out = s;
	return 0;
fail:
	pp_store_free(s);
	return r;
}
