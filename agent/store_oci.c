/* The OCI image layout store: oci-layout, index.json, blobs/sha256/<hex>.
 * Needs no daemon; `skopeo inspect oci:DIR:TAG` and `ctr images import`
 * read it. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "prepull/digest.h"
#include "prepull/error.h"
#include "prepull/image.h"
#include "prepull/log.h"
#include "prepull/options.h"
#include "prepull/store.h"
#include "prepull/util.h"

struct oci {
	char *dir;
	char *blob_dir;
};

static json_t *platform_json(const struct pp_platform *p)
{
	json_t *j = json_pack("{s:s, s:s}", "architecture", p->arch, "os", p->os);
	if (p->variant[0])
		json_object_set_new(j, "variant", json_string(p->variant));
	return j;
}

static int oci_register_image(struct pp_store *s, const struct pp_image *img, struct pp_error *err)
{
	struct oci *o = s->priv;
	int r;
	/* Everything the entry points at goes in first, byte-exact as fetched. */
	if ((r = pp_store_dir_put_blob(s, img->manifest.config.digest, img->config_bytes.data,
				       img->config_bytes.len, err)) < 0 ||
	    (r = pp_store_dir_put_blob(s, img->manifest_digest, img->manifest_bytes.data,
				       img->manifest_bytes.len, err)) < 0)
		return r;
	if (strcmp(img->top_digest, img->manifest_digest) != 0 &&
	    (r = pp_store_dir_put_blob(s, img->top_digest, img->top_bytes.data, img->top_bytes.len,
				       err)) < 0)
		return r;

	/* Read-modify-write of index.json under a lock, so two prepull runs
	 * into the same layout keep each other's entries. */
	cleanup_close int dfd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || flock(dfd, LOCK_EX) < 0)
		return pp_error_errno(err, "lock %s", o->dir);
	cleanup_free char *index_path = pp_xasprintf("%s/index.json", o->dir);
	json_error_t jerr;
	json_t *index = json_load_file(index_path, 0, &jerr);
	if (!index || !json_is_array(json_object_get(index, "manifests"))) {
		json_decref(index);
		return pp_error_set(err, PP_EIO, "%s: not a valid OCI index: %s", index_path,
				    jerr.text);
	}
	json_t *manifests = json_object_get(index, "manifests");
	for (size_t i = json_array_size(manifests); i-- > 0;) {
		json_t *ann = json_object_get(json_array_get(manifests, i), "annotations");
		const char *name =
			json_string_value(json_object_get(ann, "io.containerd.image.name"));
		if (name && strcmp(name, img->ref.full) == 0)
			json_array_remove(manifests, i);
	}
	json_t *ann = json_pack("{s:s}", "io.containerd.image.name", img->ref.full);
	if (img->ref.tag)
		json_object_set_new(ann, "org.opencontainers.image.ref.name",
				    json_string(img->ref.tag));
	json_t *entry = json_pack("{s:s, s:s, s:I, s:o, s:o}", "mediaType",
				  img->manifest_media_type, "digest", img->manifest_digest, "size",
				  (json_int_t)img->manifest_bytes.len, "platform",
				  platform_json(&img->platform), "annotations", ann);
	json_array_append_new(manifests, entry);
	char *text = json_dumps(index, JSON_INDENT(2));
	json_decref(index);
	r = pp_write_file_atomic(index_path, text, strlen(text), err);
	free(text);
	return r;
}

static void oci_free(struct pp_store *s)
{
	struct oci *o = s->priv;
	if (!o)
		return;
	free(o->dir);
	free(o->blob_dir);
	free(o);
}

/* A partial file is private (0600) while it is fetched; in the layout a
 * blob is readable like every other file there, by skopeo or umoci run as
 * another user. */
static int oci_commit_file(struct pp_store *s, const char *digest, const char *path,
			   struct pp_error *err)
{
	if (chmod(path, 0644) < 0)
		return pp_error_errno(err, "chmod %s", path);
	return pp_store_dir_commit_file(s, digest, path, err);
}

static const struct pp_store_ops oci_ops = {
	.name = "oci",
	.has_blob = pp_store_dir_has_blob,
	.read_blob = pp_store_dir_read_blob,
	.commit_file = oci_commit_file,
	.put_blob = pp_store_dir_put_blob,
	.register_image = oci_register_image,
	.free = oci_free,
};

static int ensure_file(const char *path, const char *content, struct pp_error *err)
{
	struct stat st;
	if (stat(path, &st) == 0)
		return 0;
	return pp_write_file_atomic(path, content, strlen(content), err);
}

int pp_store_oci_open(struct pp_store **out, const char *dir, const struct pp_options *opts,
		      struct pp_error *err)
{
	if (pp_mkdir_p(dir, 0755) < 0)
		return pp_error_errno(err, "create %s", dir);
	char abs[PATH_MAX];
	if (!realpath(dir, abs))
		return pp_error_errno(err, "resolve %s", dir);
	struct oci *o = pp_xcalloc(1, sizeof(*o));
	o->dir = pp_xstrdup(abs);
	o->blob_dir = pp_xasprintf("%s/blobs/sha256", abs);
	struct pp_store *s = pp_xcalloc(1, sizeof(*s));
	s->ops = &oci_ops;
	s->priv = o;
	s->blob_dir = o->blob_dir;
	s->desc = pp_xasprintf("oci:%s", abs);
	int r = 0;
	cleanup_free char *layout = pp_xasprintf("%s/oci-layout", abs);
	cleanup_free char *index = pp_xasprintf("%s/index.json", abs);
	if (pp_mkdir_p(o->blob_dir, 0755) < 0) {
		r = pp_error_errno(err, "create %s", o->blob_dir);
		goto fail;
	}
	if ((r = ensure_file(layout, "{\"imageLayoutVersion\":\"1.0.0\"}", err)) < 0 ||
	    (r = ensure_file(index,
			     "{\"schemaVersion\":2,\"mediaType\":\"application/"
			     "vnd.oci.image.index.v1+json\",\"manifests\":[]}",
			     err)) < 0)
		goto fail;
	char *fallback = pp_xasprintf("%s/.prepull-partial", abs);
	s->stage_dir = pp_store_stage_dir(opts->state_dir, o->blob_dir, fallback, 0700);
	free(fallback);
	*out = s;
	return 0;
fail:
	pp_store_free(s);
	return r;
}
