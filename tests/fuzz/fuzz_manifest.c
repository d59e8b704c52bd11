/* libFuzzer target for manifest, index and config parsing.  The first
 * byte picks the Content-Type, the rest is the body. */
#include "prepull/error.h"
#include "prepull/manifest.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What pp_manifest_parse promises of every descriptor it returns: a valid
 * digest and 0 <= size <= PP_BLOB_MAX_BYTES. */
static void check_descriptor(const struct pp_descriptor *d)
{
	if (!d->digest || pp_digest_validate(d->digest, NULL) != 0)
		abort();
	if (d->size < 0 || d->size > PP_BLOB_MAX_BYTES)
		abort();
}

static const char *const content_types[] = {
	NULL,
	PP_MT_OCI_MANIFEST,
	PP_MT_OCI_INDEX,
	PP_MT_DOCKER_MANIFEST,
	PP_MT_DOCKER_LIST,
	"application/json",
	"application/vnd.docker.distribution.manifest.v1+prettyjws",
	PP_MT_OCI_INDEX "; charset=utf-8",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const char *ct =
		content_types[data[0] % (sizeof(content_types) / sizeof(content_types[0]))];
	const char *body = (const char *)data + 1;
	size_t len = size - 1;
	struct pp_manifest m;
	struct pp_error err = {0};

	if (pp_manifest_parse(&m, ct, body, len, &err) == 0) {
		if (m.kind != PP_KIND_INDEX && m.kind != PP_KIND_IMAGE)
			abort();
		if (m.kind == PP_KIND_INDEX) {
			for (size_t i = 0; i < m.n_manifests; i++)
				check_descriptor(&m.manifests[i]);
			static const char *const wants[] = {"linux/amd64", "linux/arm64",
							    "linux/arm/v7", "windows/amd64"};
			for (size_t i = 0; i < sizeof(wants) / sizeof(wants[0]); i++) {
				struct pp_platform p;
				if (pp_platform_parse(&p, wants[i], NULL) != 0)
					abort();
				int r = pp_index_select(&m, &p, &err);
				if (r >= 0 &&
				    ((size_t)r >= m.n_manifests || m.manifests[r].is_attestation))
					abort();
			}
		} else {
			check_descriptor(&m.config);
			for (size_t i = 0; i < m.n_layers; i++)
				check_descriptor(&m.layers[i]);
		}
		pp_manifest_free(&m);
	}

	char **ids;
	size_t n;
	if (pp_config_diff_ids(&ids, &n, body, len, &err) == 0) {
		/* Every diff ID returned is a valid digest (chain IDs hash them). */
		for (size_t i = 0; i < n; i++)
			if (!ids[i] || pp_digest_validate(ids[i], NULL) != 0)
				abort();
		for (size_t i = 0; i < n; i++)
			free(ids[i]);
		free(ids);
	}
	return 0;
}
