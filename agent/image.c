/* Resolving one image: tag or digest -> (index ->) platform manifest ->
 * config, with every digest checked against the exact bytes received. */
#include <string.h>

#include "prepull/digest.h"
#include "prepull/error.h"
#include "prepull/http.h"
#include "prepull/image.h"
#include "prepull/log.h"
#include "prepull/options.h"
#include "prepull/registry.h"

#define CONFIG_MAX_BYTES (16 * 1024 * 1024)

static char *strip_params(const char *ct)
{
	if (!ct)
		return NULL;
	size_t n = strcspn(ct, ";");
	while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
		n--;
	return pp_xstrndup(ct, n);
}

/* GETs a manifest by tag or digest and checks its digest.  `want_digest`
 * is the digest the bytes must hash to (NULL when asking by tag). */
static int get_manifest(struct pp_image *img, const char *ref, const char *want_digest,
			struct pp_buf *out_body, char **out_type, char **out_digest,
			struct pp_error *err)
{
	struct pp_http_response resp = {.retry_after = -1};
	int r = pp_registry_get_object(img->reg, img->ref.path, "manifests", ref,
				       PP_MANIFEST_ACCEPT, PP_MANIFEST_MAX_BYTES, &resp, err);
	if (r < 0)
		goto done;
	if (resp.status == 404) {
		r = pp_error_set(err, PP_ENOTFOUND, "manifest %s not found in %s/%s", ref,
				 img->ref.domain, img->ref.path);
		goto done;
	}
	if (resp.status == 401 || resp.status == 403) {
		r = pp_error_set(err, PP_EAUTH, "access to %s/%s denied (HTTP %ld)",
				 img->ref.domain, img->ref.path, resp.status);
		goto done;
	}
	if (resp.status != 200) {
		r = pp_http_status_error(err, &resp);
		pp_error_wrap(err, "manifest %s", ref);
		goto done;
	}
	char got[PP_DIGEST_STR_LEN + 1];
	pp_sha256_digest(resp.body.data ? resp.body.data : "", resp.body.len, got);
	if (want_digest && strcmp(got, want_digest) != 0) {
		r = pp_error_set(err, PP_EDIGEST, "manifest %s: content hashes to %s", want_digest,
				 got);
		goto done;
	}
	const char *dcd = resp.docker_content_digest;
	if (!want_digest && dcd && strncmp(dcd, "sha256:", 7) == 0 && strcmp(dcd, got) != 0) {
		r = pp_error_set(err, PP_EDIGEST,
				 "manifest %s: Docker-Content-Digest %s but content hashes to %s",
				 ref, dcd, got);
		goto done;
	}
	*out_body = resp.body;
	resp.body = (struct pp_buf){0};
	*out_type = strip_params(resp.content_type);
	*out_digest = pp_xstrdup(got);
	r = 0;
done:
	pp_http_response_reset(&resp);
	pp_buf_free(&resp.body);
	return r;
}

/* Reads the config from `local` when it is there, else from the registry. */
static int get_config(struct pp_image *img, const struct pp_blob_source *local,
		      struct pp_error *err)
{
	const struct pp_descriptor *c = &img->manifest.config;
	if (c->size > CONFIG_MAX_BYTES)
		return pp_error_set(err, PP_EUNSUPPORTED, "config %s is %lld bytes (limit %d)",
				    c->digest, (long long)c->size, CONFIG_MAX_BYTES);
	char *data = NULL;
	size_t len = 0;
	int r = local ? local->read(local->ctx, c->digest, c->size, CONFIG_MAX_BYTES, &data, &len,
				    err)
		      : 0;
	if (r < 0)
		return r;
	if (r > 0) {
		pp_buf_append(&img->config_bytes, data, len);
		free(data);
	} else {
		double t0 = pp_now();
		struct pp_http_response resp = {.retry_after = -1};
		r = pp_registry_get_object(img->reg, img->ref.path, "blobs", c->digest, NULL,
					   CONFIG_MAX_BYTES, &resp, err);
		if (r == 0 && resp.status != 200) {
			r = pp_http_status_error(err, &resp);
			pp_error_wrap(err, "config %s", pp_short_digest(c->digest));
		}
		if (r == 0) {
			img->config_fetched = true;
			img->config_seconds = pp_now() - t0;
			img->config_bytes = resp.body;
			resp.body = (struct pp_buf){0};
		}
		pp_http_response_reset(&resp);
		pp_buf_free(&resp.body);
		if (r < 0)
			return r;
	}
	char got[PP_DIGEST_STR_LEN + 1];
	pp_sha256_digest(img->config_bytes.data ? img->config_bytes.data : "",
			 img->config_bytes.len, got);
	if ((int64_t)img->config_bytes.len != c->size || strcmp(got, c->digest) != 0)
		return pp_error_set(
			err, PP_EDIGEST,
			"config %s: got %zu bytes hashing to %s, manifest says %lld bytes",
			c->digest, img->config_bytes.len, got, (long long)c->size);
	char **diff_ids = NULL;
	size_t n = 0;
	r = pp_config_diff_ids(&diff_ids, &n, img->config_bytes.data, img->config_bytes.len, err);
	if (r < 0)
		return pp_error_wrap(err, "config %s", pp_short_digest(c->digest));
	for (size_t i = 0; i < n; i++)
		free(diff_ids[i]);
	free(diff_ids);
	if (n != img->manifest.n_layers)
		return pp_error_set(err, PP_EPROTO,
				    "config %s lists %zu diff_ids but the manifest has %zu layers",
				    pp_short_digest(c->digest), n, img->manifest.n_layers);
	return 0;
}

int pp_image_resolve(struct pp_image *img, const struct pp_options *opts,
		     const struct pp_blob_source *local, struct pp_error *err)
{
	int r = pp_registry_get(&img->reg, img->ref.domain, opts, err);
	if (r < 0)
		return r;
	const char *ref = img->ref.digest ? img->ref.digest : img->ref.tag;
	r = get_manifest(img, ref, img->ref.digest, &img->top_bytes, &img->top_media_type,
			 &img->top_digest, err);
	if (r < 0)
		return r;

	struct pp_manifest top = {0};
	r = pp_manifest_parse(&top, img->top_media_type, img->top_bytes.data, img->top_bytes.len,
			      err);
	if (r < 0)
		return pp_error_wrap(err, "manifest %s", pp_short_digest(img->top_digest));
	/* From here on the parsed type, not the raw Content-Type: a registry
	 * may have said application/json or spelt the type in capitals, and
	 * stores record it where consumers compare it exactly. */
	free(img->top_media_type);
	img->top_media_type = pp_xstrdup(top.media_type);
	if (top.kind == PP_KIND_IMAGE) {
		img->manifest = top;
		img->manifest_digest = pp_xstrdup(img->top_digest);
		img->manifest_media_type = pp_xstrdup(top.media_type);
		pp_buf_append(&img->manifest_bytes, img->top_bytes.data, img->top_bytes.len);
		img->platform = opts->platform;
	} else {
		r = pp_index_select(&top, &opts->platform, err);
		if (r < 0) {
			pp_manifest_free(&top);
			return r;
		}
		const struct pp_descriptor *d = &top.manifests[r];
		img->platform = d->platform;
		char *digest = pp_xstrdup(d->digest);
		pp_manifest_free(&top);
		char *type = NULL, *got = NULL;
		r = get_manifest(img, digest, digest, &img->manifest_bytes, &type, &got, err);
		free(digest);
		if (r < 0) {
			free(type);
			return r;
		}
		img->manifest_digest = got;
		r = pp_manifest_parse(&img->manifest, type, img->manifest_bytes.data,
				      img->manifest_bytes.len, err);
		free(type);
		if (r < 0)
			return pp_error_wrap(err, "manifest %s",
					     pp_short_digest(img->manifest_digest));
		if (img->manifest.kind != PP_KIND_IMAGE)
			return pp_error_set(
				err, PP_EUNSUPPORTED,
				"manifest %s: an index inside an index is not supported",
				pp_short_digest(img->manifest_digest));
		img->manifest_media_type = pp_xstrdup(img->manifest.media_type);
	}
	r = get_config(img, local, err);
	if (r < 0)
		return r;
	img->total_bytes = img->manifest.config.size;
	for (size_t i = 0; i < img->manifest.n_layers; i++)
		img->total_bytes += img->manifest.layers[i].size;
	return 0;
}

void pp_image_free(struct pp_image *img)
{
	pp_ref_free(&img->ref);
	free(img->top_digest);
	free(img->top_media_type);
	pp_buf_free(&img->top_bytes);
	free(img->manifest_digest);
	free(img->manifest_media_type);
	pp_buf_free(&img->manifest_bytes);
	pp_manifest_free(&img->manifest);
	pp_buf_free(&img->config_bytes);
}
