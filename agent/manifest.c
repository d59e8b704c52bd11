#include "prepull/manifest.h"

#include "prepull/digest.h"
#include "prepull/error.h"
#include "prepull/util.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/utsname.h>

#define SCHEMA1_MSG \
	"schema1 manifests are not supported; push the image again with a current client"
#define ATTESTATION_ANNOTATION "vnd.docker.reference.type"

/* Copies a media type without its ";params" and surrounding blanks. */
static void media_type_base(char *out, size_t n, const char *mt)
{
	size_t len = strcspn(mt, ";");
	while (len && (mt[len - 1] == ' ' || mt[len - 1] == '\t'))
		len--;
	while (len && (*mt == ' ' || *mt == '\t')) {
		mt++;
		len--;
	}
	if (len >= n)
		len = n - 1; /* too long to be one we know; still compares unequal */
	memcpy(out, mt, len);
	out[len] = '\0';
}

static bool is_schema1(const char *base)
{
	return strcasecmp(base, "application/vnd.docker.distribution.manifest.v1+prettyjws") == 0 ||
	       strcasecmp(base, "application/vnd.docker.distribution.manifest.v1+json") == 0 ||
	       strcasecmp(base, "text/plain") == 0;
}

/* Content types that say nothing about which manifest this is. */
static bool is_generic(const char *base)
{
	return base[0] == '\0' || strcasecmp(base, "application/json") == 0 ||
	       strcasecmp(base, "application/octet-stream") == 0 ||
	       strcasecmp(base, "binary/octet-stream") == 0 || strcmp(base, "*/*") == 0;
}

/* The spelling of a known manifest media type that consumers compare
 * exactly (containerd does): "Application/VND.OCI..." -> the constant.
 * Others are returned unchanged. */
static const char *canonical_type(const char *base)
{
	static const char *const known[] = {PP_MT_OCI_INDEX, PP_MT_DOCKER_LIST, PP_MT_OCI_MANIFEST,
					    PP_MT_DOCKER_MANIFEST};
	for (size_t i = 0; i < sizeof(known) / sizeof(*known); i++)
		if (strcasecmp(base, known[i]) == 0)
			return known[i];
	return base;
}

int pp_manifest_kind_of(const char *media_type, struct pp_error *err)
{
	char base[256], shown[96];

	if (!media_type)
		return pp_error_set(err, PP_EUNSUPPORTED, "manifest has no media type");
	media_type_base(base, sizeof(base), media_type);
	if (strcasecmp(base, PP_MT_OCI_INDEX) == 0 || strcasecmp(base, PP_MT_DOCKER_LIST) == 0)
		return PP_KIND_INDEX;
	if (strcasecmp(base, PP_MT_OCI_MANIFEST) == 0 ||
	    strcasecmp(base, PP_MT_DOCKER_MANIFEST) == 0)
		return PP_KIND_IMAGE;
	if (is_schema1(base))
		return pp_error_set(err, PP_EUNSUPPORTED, SCHEMA1_MSG);
	return pp_error_set(err, PP_EUNSUPPORTED, "unsupported manifest media type \"%s\"",
			    pp_printable(shown, sizeof(shown), base));
}

/* Reads an optional string member: 0 with *out NULL when absent, PP_EPROTO
 * when present with another type. */
static int get_string(const char **out, json_t *obj, const char *key, const char *where,
		      struct pp_error *err)
{
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (!v)
		return 0;
	if (!json_is_string(v))
		return pp_error_set(err, PP_EPROTO, "%s%s%s: must be a string", where,
				    *where ? "." : "", key);
	*out = json_string_value(v);
	return 0;
}

static int copy_platform_field(char *dst, size_t n, json_t *platform, const char *key,
			       bool required, const char *where, struct pp_error *err)
{
	const char *s;
	int ret = get_string(&s, platform, key, where, err);
	if (ret < 0)
		return ret;
	if (!s || !*s) {
		if (required)
			return pp_error_set(err, PP_EPROTO, "%s.%s: missing", where, key);
		dst[0] = '\0';
		return 0;
	}
	if (strlen(s) >= n)
		return pp_error_set(err, PP_EPROTO, "%s.%s: longer than %zu characters", where, key,
				    n - 1);
	strcpy(dst, s);
	return 0;
}

static void descriptor_free(struct pp_descriptor *d)
{
	free(d->media_type);
	free(d->digest);
	memset(d, 0, sizeof(*d));
}

/* Fills *d from one JSON descriptor; `where` names it in messages
 * ("layers[2]").  On failure *d holds nothing to free. */
static int parse_descriptor(struct pp_descriptor *d, json_t *j, const char *where,
			    struct pp_error *err)
{
	char sub[96];
	const char *mt, *digest;
	int ret;

	memset(d, 0, sizeof(*d));
	if (!json_is_object(j))
		return pp_error_set(err, PP_EPROTO, "%s: must be an object", where);

	ret = get_string(&mt, j, "mediaType", where, err);
	if (ret < 0)
		return ret;
	if (!mt || !*mt)
		return pp_error_set(err, PP_EPROTO, "%s.mediaType: missing", where);

	ret = get_string(&digest, j, "digest", where, err);
	if (ret < 0)
		return ret;
	if (!digest)
		return pp_error_set(err, PP_EPROTO, "%s.digest: missing", where);
	ret = pp_digest_validate(digest, err);
	if (ret < 0) {
		pp_error_wrap(err, "%s.digest", where);
		return ret; /* not wrap's value: err may be NULL */
	}

	json_t *size = json_object_get(j, "size");
	if (!size)
		return pp_error_set(err, PP_EPROTO, "%s.size: missing", where);
	if (!json_is_integer(size))
		return pp_error_set(err, PP_EPROTO, "%s.size: must be an integer", where);
	json_int_t sz = json_integer_value(size);
	if (sz < 0)
		return pp_error_set(err, PP_EPROTO, "%s.size: negative (%lld)", where,
				    (long long)sz);
	if (sz > PP_BLOB_MAX_BYTES)
		return pp_error_set(err, PP_EPROTO, "%s.size: %lld is larger than %lld bytes",
				    where, (long long)sz, (long long)PP_BLOB_MAX_BYTES);

	json_t *platform = json_object_get(j, "platform");
	if (platform) {
		snprintf(sub, sizeof(sub), "%s.platform", where);
		if (!json_is_object(platform))
			return pp_error_set(err, PP_EPROTO, "%s: must be an object", sub);
		ret = copy_platform_field(d->platform.os, sizeof(d->platform.os), platform, "os",
					  true, sub, err);
		if (ret == 0)
			ret = copy_platform_field(d->platform.arch, sizeof(d->platform.arch),
						  platform, "architecture", true, sub, err);
		if (ret == 0)
			ret = copy_platform_field(d->platform.variant, sizeof(d->platform.variant),
						  platform, "variant", false, sub, err);
		if (ret < 0)
			return ret;
		d->has_platform = true;
		if (strcmp(d->platform.os, "unknown") == 0 &&
		    strcmp(d->platform.arch, "unknown") == 0)
			d->is_attestation = true;
	}

	json_t *annotations = json_object_get(j, "annotations");
	if (annotations) {
		const char *type;
		snprintf(sub, sizeof(sub), "%s.annotations", where);
		if (!json_is_object(annotations))
			return pp_error_set(err, PP_EPROTO, "%s: must be an object", sub);
		ret = get_string(&type, annotations, ATTESTATION_ANNOTATION, sub, err);
		if (ret < 0)
			return ret;
		if (type && strcmp(type, "attestation-manifest") == 0)
			d->is_attestation = true;
	}

	d->media_type = pp_xstrdup(mt);
	d->digest = pp_xstrdup(digest);
	d->size = (int64_t)sz;
	return 0;
}

/* Parses a JSON array of descriptors named `key`. */
static int parse_descriptor_array(struct pp_descriptor **out, size_t *n_out, json_t *root,
				  const char *key, struct pp_error *err)
{
	json_t *arr = json_object_get(root, key);
	char where[64];

	*out = NULL;
	*n_out = 0;
	if (!arr)
		return pp_error_set(err, PP_EPROTO, "%s: missing", key);
	if (!json_is_array(arr))
		return pp_error_set(err, PP_EPROTO, "%s: must be an array", key);
	size_t n = json_array_size(arr);
	struct pp_descriptor *d = pp_xcalloc(n ? n : 1, sizeof(*d));
	for (size_t i = 0; i < n; i++) {
		snprintf(where, sizeof(where), "%s[%zu]", key, i);
		int ret = parse_descriptor(&d[i], json_array_get(arr, i), where, err);
		if (ret < 0) {
			for (size_t k = 0; k < i; k++)
				descriptor_free(&d[k]);
			free(d);
			return ret;
		}
	}
	*out = d;
	*n_out = n;
	return 0;
}

void pp_manifest_free(struct pp_manifest *m)
{
	if (!m)
		return;
	free(m->media_type);
	for (size_t i = 0; i < m->n_manifests; i++)
		descriptor_free(&m->manifests[i]);
	free(m->manifests);
	descriptor_free(&m->config);
	for (size_t i = 0; i < m->n_layers; i++)
		descriptor_free(&m->layers[i]);
	free(m->layers);
	memset(m, 0, sizeof(*m));
}

/* Decides the effective media type from the Content-Type and the body:
 * a specific Content-Type wins but must agree with the body's mediaType;
 * with a generic or no Content-Type the body's mediaType is used, and
 * without that the keys tell an index from an image manifest. */
static int effective_media_type(char **out, const char *content_type, json_t *root,
				struct pp_error *err)
{
	char ct[256], body_base[256], shown_ct[96], shown_body[96];
	const char *body_mt;
	int ret;

	*out = NULL;
	ct[0] = '\0';
	if (content_type)
		media_type_base(ct, sizeof(ct), content_type);
	if (is_schema1(ct))
		return pp_error_set(err, PP_EUNSUPPORTED, SCHEMA1_MSG);

	json_t *sv = json_object_get(root, "schemaVersion");
	if (sv && json_is_integer(sv) && json_integer_value(sv) == 1)
		return pp_error_set(err, PP_EUNSUPPORTED, SCHEMA1_MSG);
	if (sv && !(json_is_integer(sv) && json_integer_value(sv) == 2))
		return pp_error_set(err, PP_EPROTO, "schemaVersion: must be 2");

	ret = get_string(&body_mt, root, "mediaType", "", err);
	if (ret < 0)
		return ret;
	if (body_mt)
		media_type_base(body_base, sizeof(body_base), body_mt);

	if (!is_generic(ct)) {
		ret = pp_manifest_kind_of(ct, err);
		if (ret < 0)
			return ret;
		if (body_mt && strcasecmp(ct, body_base) != 0)
			return pp_error_set(
				err, PP_EPROTO,
				"Content-Type \"%s\" disagrees with the manifest's "
				"mediaType \"%s\"",
				pp_printable(shown_ct, sizeof(shown_ct), ct),
				pp_printable(shown_body, sizeof(shown_body), body_base));
		*out = pp_xstrdup(canonical_type(ct));
		return 0;
	}
	if (body_mt) {
		ret = pp_manifest_kind_of(body_base, err);
		if (ret < 0)
			return ret;
		*out = pp_xstrdup(canonical_type(body_base));
		return 0;
	}
	if (json_object_get(root, "fsLayers") || json_object_get(root, "signatures"))
		return pp_error_set(err, PP_EUNSUPPORTED, SCHEMA1_MSG);
	bool has_manifests = json_object_get(root, "manifests") != NULL;
	bool has_layers = json_object_get(root, "layers") != NULL;
	if (has_manifests && !has_layers) {
		*out = pp_xstrdup(PP_MT_OCI_INDEX);
		return 0;
	}
	if (has_layers && !has_manifests) {
		*out = pp_xstrdup(PP_MT_OCI_MANIFEST);
		return 0;
	}
	return pp_error_set(err, PP_EPROTO,
			    "no media type, and the body has %s \"manifests\" and \"layers\"",
			    has_manifests ? "both" : "neither");
}

int pp_manifest_parse(struct pp_manifest *out, const char *content_type, const char *body,
		      size_t len, struct pp_error *err)
{
	struct pp_manifest m = {0};
	json_error_t jerr;
	json_t *root = NULL;
	int ret;

	memset(out, 0, sizeof(*out));
	if (len > PP_MANIFEST_MAX_BYTES)
		return pp_error_set(err, PP_EPROTO,
				    "manifest is %zu bytes, more than the %d allowed", len,
				    PP_MANIFEST_MAX_BYTES);
	if (!body)
		return pp_error_set(err, PP_EPROTO, "empty manifest");
	/* Duplicate keys are refused: two parsers reading different values
	 * from the same bytes is how confusion attacks start. */
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return pp_error_set(err, PP_EPROTO, "manifest is not valid JSON: line %d: %s",
				    jerr.line, jerr.text);
	if (!json_is_object(root)) {
		ret = pp_error_set(err, PP_EPROTO, "manifest is not a JSON object");
		goto done;
	}

	ret = effective_media_type(&m.media_type, content_type, root, err);
	if (ret < 0)
		goto done;
	ret = pp_manifest_kind_of(m.media_type, err);
	if (ret < 0)
		goto done;
	m.kind = (enum pp_manifest_kind)ret;

	if (m.kind == PP_KIND_INDEX) {
		if (json_object_get(root, "layers") || json_object_get(root, "config")) {
			ret = pp_error_set(err, PP_EPROTO,
					   "media type says index but the body has \"layers\" or "
					   "\"config\"");
			goto done;
		}
		ret = parse_descriptor_array(&m.manifests, &m.n_manifests, root, "manifests", err);
		if (ret < 0)
			goto done;
	} else {
		if (json_object_get(root, "manifests")) {
			ret = pp_error_set(err, PP_EPROTO,
					   "media type says image manifest but the body has "
					   "\"manifests\"");
			goto done;
		}
		json_t *config = json_object_get(root, "config");
		if (!config) {
			ret = pp_error_set(err, PP_EPROTO, "config: missing");
			goto done;
		}
		ret = parse_descriptor(&m.config, config, "config", err);
		if (ret < 0)
			goto done;
		ret = parse_descriptor_array(&m.layers, &m.n_layers, root, "layers", err);
		if (ret < 0)
			goto done;
	}
	*out = m;
	memset(&m, 0, sizeof(m));
	ret = 0;

done:
	pp_manifest_free(&m);
	json_decref(root);
	return ret;
}

/* --- platforms --- */

static void lower_copy(char *dst, size_t n, const char *s, size_t len)
{
	if (len >= n)
		len = n - 1;
	for (size_t i = 0; i < len; i++)
		dst[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] - 'A' + 'a') : s[i];
	dst[len] = '\0';
}

/* Rewrites kernel and distro spellings to GOARCH (+ variant), as
 * containerd's platforms.Normalize does. */
static void normalize_arch(char arch[32], char variant[32])
{
	static const struct {
		const char *from, *arch, *variant;
	} map[] = {
		{"x86_64", "amd64", NULL}, {"x86-64", "amd64", NULL}, {"aarch64", "arm64", NULL},
		{"armhf", "arm", "v7"},    {"armel", "arm", "v6"},    {"armv7l", "arm", "v7"},
		{"armv7", "arm", "v7"},    {"armv6l", "arm", "v6"},   {"armv6", "arm", "v6"},
		{"armv8l", "arm", "v8"},   {"i386", "386", NULL},     {"i686", "386", NULL},
	};
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		if (strcmp(arch, map[i].from) == 0) {
			strcpy(arch, map[i].arch);
			if (map[i].variant && !variant[0])
				strcpy(variant, map[i].variant);
			break;
		}
	}
	/* "8" is how some tools write "v8". */
	if (variant[0] >= '0' && variant[0] <= '9' && strlen(variant) < 31) {
		memmove(variant + 1, variant, strlen(variant) + 1);
		variant[0] = 'v';
	}
}

static bool platform_token_ok(const char *s, size_t len)
{
	if (len == 0 || len >= 32)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.'))
			return false;
	}
	return true;
}

int pp_platform_parse(struct pp_platform *out, const char *s, struct pp_error *err)
{
	const char *part[3];
	size_t plen[3];
	size_t n = 0;
	char shown[96];

	memset(out, 0, sizeof(*out));
	if (!s)
		s = "";
	const char *p = s;
	for (;;) {
		const char *slash = strchr(p, '/');
		if (n == 3)
			goto bad;
		part[n] = p;
		plen[n] = slash ? (size_t)(slash - p) : strlen(p);
		if (!platform_token_ok(part[n], plen[n]))
			goto bad;
		n++;
		if (!slash)
			break;
		p = slash + 1;
	}
	if (n == 1) {
		/* "linux" alone means this machine's architecture; "arm64" alone
		 * means linux/arm64, as containerd reads them. */
		struct pp_platform def;
		pp_platform_default(&def);
		if (plen[0] == 5 && strncasecmp(part[0], "linux", 5) == 0) {
			*out = def;
			return 0;
		}
		strcpy(out->os, "linux");
		lower_copy(out->arch, sizeof(out->arch), part[0], plen[0]);
	} else {
		lower_copy(out->os, sizeof(out->os), part[0], plen[0]);
		lower_copy(out->arch, sizeof(out->arch), part[1], plen[1]);
		if (n == 3)
			lower_copy(out->variant, sizeof(out->variant), part[2], plen[2]);
	}
	normalize_arch(out->arch, out->variant);
	return 0;

bad:
	memset(out, 0, sizeof(*out));
	return pp_error_set(err, PP_EUSAGE, "invalid platform \"%s\": expected os/arch[/variant]",
			    pp_printable(shown, sizeof(shown), s));
}

void pp_platform_default(struct pp_platform *out)
{
	struct utsname u;

	memset(out, 0, sizeof(*out));
	strcpy(out->os, "linux");
	if (uname(&u) != 0) {
		strcpy(out->arch, "amd64");
		return;
	}
	lower_copy(out->arch, sizeof(out->arch), u.machine, strlen(u.machine));
	normalize_arch(out->arch, out->variant);
}

const char *pp_platform_format(const struct pp_platform *p, char *buf, size_t n)
{
	if (p->variant[0])
		snprintf(buf, n, "%s/%s/%s", p->os, p->arch, p->variant);
	else
		snprintf(buf, n, "%s/%s", p->os, p->arch);
	return buf;
}

/* Variants an architecture's CPUs can run, newest first, and what an
 * entry without a variant means (containerd: arm -> v7, amd64 -> v1). */
static const struct {
	const char *arch;
	const char *plain;
	const char *order[5];
} variant_ladders[] = {
	{"arm", "v7", {"v8", "v7", "v6", "v5", NULL}},
	{"amd64", "v1", {"v4", "v3", "v2", "v1", NULL}},
};

static int ladder_pos(const char *const *order, const char *v)
{
	for (int i = 0; order[i]; i++)
		if (strcmp(order[i], v) == 0)
			return i;
	return -1;
}

/* How well `have` serves `want`: 0 is best, -1 means not at all.  arm64
 * without a variant is v8.  A wanted arm or amd64 variant also runs the
 * older ones (arm v7 runs v6 and v5), closest first.  With no wanted
 * variant any entry goes, a plain one first. */
static int platform_rank(const struct pp_platform *want, const struct pp_platform *have_raw)
{
	struct pp_platform have = *have_raw;

	normalize_arch(have.arch, have.variant);
	if (strcasecmp(want->os, have.os) != 0 || strcmp(want->arch, have.arch) != 0)
		return -1;

	const char *wv = want->variant, *hv = have.variant;
	if (strcmp(have.arch, "arm64") == 0) {
		if (!*wv)
			wv = "v8";
		if (!*hv)
			hv = "v8";
	}
	if (strcmp(wv, hv) == 0)
		return 0;
	if (!*want->variant)
		return 1;
	for (size_t i = 0; i < sizeof(variant_ladders) / sizeof(variant_ladders[0]); i++) {
		if (strcmp(have.arch, variant_ladders[i].arch) != 0)
			continue;
		const char *const *order = variant_ladders[i].order;
		int wi = ladder_pos(order, wv);
		int hi = ladder_pos(order, *hv ? hv : variant_ladders[i].plain);
		if (wi >= 0 && hi >= wi)
			return hi - wi;
	}
	return -1;
}

int pp_index_select(const struct pp_manifest *m, const struct pp_platform *want,
		    struct pp_error *err)
{
	struct pp_platform w = *want;
	int best = -1, best_rank = 0, fallback = -1;

	normalize_arch(w.arch, w.variant);
	if (m->kind != PP_KIND_INDEX)
		return pp_error_set(err, PP_EGENERIC, "not an index");
	for (size_t i = 0; i < m->n_manifests; i++) {
		const struct pp_descriptor *d = &m->manifests[i];
		if (d->is_attestation)
			continue;
		if (!d->has_platform) {
			/* An entry with no platform is taken only when nothing
			 * names ours, and only if it is an image manifest. */
			if (fallback < 0 &&
			    pp_manifest_kind_of(d->media_type, NULL) == PP_KIND_IMAGE)
				fallback = (int)i;
			continue;
		}
		int r = platform_rank(&w, &d->platform);
		if (r >= 0 && (best < 0 || r < best_rank)) {
			best = (int)i;
			best_rank = r;
		}
	}
	if (best >= 0)
		return best;
	if (fallback >= 0)
		return fallback;

	char wanted[100], list[700], one[100];
	size_t used = 0;
	list[0] = '\0';
	for (size_t i = 0; i < m->n_manifests; i++) {
		const struct pp_descriptor *d = &m->manifests[i];
		if (d->is_attestation || !d->has_platform)
			continue;
		pp_platform_format(&d->platform, one, sizeof(one));
		int k = snprintf(list + used, sizeof(list) - used, "%s%s", used ? ", " : "", one);
		if (k < 0 || (size_t)k >= sizeof(list) - used) {
			strcpy(list + sizeof(list) - 5, "...");
			break;
		}
		used += (size_t)k;
	}
	pp_platform_format(&w, wanted, sizeof(wanted));
	if (!list[0])
		return pp_error_set(err, PP_ENOTFOUND,
				    "no manifest for %s: the index lists no platforms", wanted);
	return pp_error_set(err, PP_ENOTFOUND, "no manifest for %s in the index; it has %s", wanted,
			    list);
}

int pp_config_diff_ids(char ***out, size_t *n_out, const char *body, size_t len,
		       struct pp_error *err)
{
	json_error_t jerr;
	char **ids = NULL;
	size_t n = 0;
	int ret;

	*out = NULL;
	*n_out = 0;
	if (!body)
		return pp_error_set(err, PP_EPROTO, "empty image config");
	json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return pp_error_set(err, PP_EPROTO, "image config is not valid JSON: line %d: %s",
				    jerr.line, jerr.text);
	json_t *rootfs = json_is_object(root) ? json_object_get(root, "rootfs") : NULL;
	if (!json_is_object(root)) {
		ret = pp_error_set(err, PP_EPROTO, "image config is not a JSON object");
		goto done;
	}
	if (!json_is_object(rootfs)) {
		ret = pp_error_set(err, PP_EPROTO, "rootfs: %s",
				   rootfs ? "must be an object" : "missing");
		goto done;
	}
	json_t *arr = json_object_get(rootfs, "diff_ids");
	if (!json_is_array(arr)) {
		ret = pp_error_set(err, PP_EPROTO, "rootfs.diff_ids: %s",
				   arr ? "must be an array" : "missing");
		goto done;
	}
	n = json_array_size(arr);
	ids = pp_xcalloc(n ? n : 1, sizeof(*ids));
	for (size_t i = 0; i < n; i++) {
		json_t *v = json_array_get(arr, i);
		if (!json_is_string(v)) {
			ret = pp_error_set(err, PP_EPROTO, "rootfs.diff_ids[%zu]: must be a string",
					   i);
			goto done;
		}
		ret = pp_digest_validate(json_string_value(v), err);
		if (ret < 0) {
			pp_error_wrap(err, "rootfs.diff_ids[%zu]", i);
			goto done;
		}
		ids[i] = pp_xstrdup(json_string_value(v));
	}
	*out = ids;
	*n_out = n;
	ids = NULL;
	ret = 0;

done:
	if (ids) {
		for (size_t i = 0; i < n; i++)
			free(ids[i]);
		free(ids);
	}
	json_decref(root);
	return ret;
}

void pp_chain_id(const char *parent, const char *diff_id, char out[PP_DIGEST_STR_LEN + 1])
{
	if (!parent) {
		snprintf(out, PP_DIGEST_STR_LEN + 1, "%s", diff_id);
		return;
	}
	char text[2 * PP_DIGEST_STR_LEN + 2];
	int len = snprintf(text, sizeof(text), "%s %s", parent, diff_id);
	pp_sha256_digest(text, (size_t)len, out);
}
