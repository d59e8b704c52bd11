/* Manifest, index and config parsing, and platform selection.
 * Input is untrusted registry bytes: every field is type-checked. */
#ifndef PREPULL_MANIFEST_H
#define PREPULL_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "prepull/digest.h"

struct pp_error;

#define PP_MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define PP_MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define PP_MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define PP_MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
/* What we send in Accept on manifest requests. */
#define PP_MANIFEST_ACCEPT \
	PP_MT_OCI_INDEX ", " PP_MT_DOCKER_LIST ", " PP_MT_OCI_MANIFEST ", " PP_MT_DOCKER_MANIFEST

/* Manifests larger than this are refused (the spec asks clients to cope with 4 MB). */
#define PP_MANIFEST_MAX_BYTES (4 * 1024 * 1024)
/* Blob sizes above this are treated as absurd. */
#define PP_BLOB_MAX_BYTES (1LL << 40)

struct pp_platform {
	char os[32];
	char arch[32];
	char variant[32]; /* "" when none */
};

struct pp_descriptor {
	char *media_type;
	char *digest;
	int64_t size;
	bool has_platform;
	struct pp_platform platform;
	bool is_attestation; /* vnd.docker.reference.type=attestation-manifest or unknown/unknown */
};

enum pp_manifest_kind { PP_KIND_INDEX = 1, PP_KIND_IMAGE = 2 };

struct pp_manifest {
	enum pp_manifest_kind kind;
	char *media_type; /* the effective media type */
	/* PP_KIND_INDEX */
	struct pp_descriptor *manifests;
	size_t n_manifests;
	/* PP_KIND_IMAGE */
	struct pp_descriptor config;
	struct pp_descriptor *layers;
	size_t n_layers;
};

/* Classifies a media type (parameters after ';' ignored).  Returns
 * PP_KIND_INDEX, PP_KIND_IMAGE, or PP_EUNSUPPORTED with a message for
 * schema1 ("schema1 manifests are not supported") and unknown types. */
int pp_manifest_kind_of(const char *media_type, struct pp_error *err);

/* Parses a manifest or index.  `content_type` is the response's
 * Content-Type (may be NULL: the body's mediaType is used).  If both are
 * present and disagree, PP_EPROTO.  Every descriptor's digest is validated
 * (pp_digest_validate) and size must be 0 <= size <= PP_BLOB_MAX_BYTES.
 * Caller frees with pp_manifest_free. */
int pp_manifest_parse(struct pp_manifest *out, const char *content_type, const char *body,
		      size_t len, struct pp_error *err);
void pp_manifest_free(struct pp_manifest *m);

/* "linux/arm64", "linux/arm/v7", "linux/amd64".  PP_EUSAGE when malformed. */
int pp_platform_parse(struct pp_platform *out, const char *s, struct pp_error *err);
/* This machine's platform (linux/<uname arch as GOARCH>[/variant]). */
void pp_platform_default(struct pp_platform *out);
/* "linux/arm64/v8" into buf. */
const char *pp_platform_format(const struct pp_platform *p, char *buf, size_t n);

/* Chooses the manifest for `want` from an index: attestation entries are
 * skipped; arm64 with no variant matches v8; an empty wanted variant
 * matches any (preferring none / the first).  Returns the index in
 * m->manifests, or PP_ENOTFOUND with a message listing what the index has. */
int pp_index_select(const struct pp_manifest *m, const struct pp_platform *want,
		    struct pp_error *err);

/* Reads rootfs.diff_ids from an image config.  Caller frees each and the array. */
int pp_config_diff_ids(char ***out, size_t *n_out, const char *body, size_t len,
		       struct pp_error *err);

/* The chain ID of a layer stack: the first layer's is its diff ID, each
 * next one sha256("<parent chain ID> <diff ID>").  `parent` is NULL for the
 * bottom layer. */
void pp_chain_id(const char *parent, const char *diff_id, char out[PP_DIGEST_STR_LEN + 1]);

#endif
