#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prepull/error.h"
#include "prepull/manifest.h"

#define H1 "1111111111111111111111111111111111111111111111111111111111111111"
#define H2 "2222222222222222222222222222222222222222222222222222222222222222"
#define H3 "3333333333333333333333333333333333333333333333333333333333333333"
#define H4 "4444444444444444444444444444444444444444444444444444444444444444"
#define H5 "5555555555555555555555555555555555555555555555555555555555555555"
#define H6 "6666666666666666666666666666666666666666666666666666666666666666"

#define OCI_MANIFEST                                                                         \
	"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\"," \
	"\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\","            \
	"\"digest\":\"sha256:" H1 "\",\"size\":1469},"                                       \
	"\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\","        \
	"\"digest\":\"sha256:" H2 "\",\"size\":3623807},"                                    \
	"{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+zstd\","                    \
	"\"digest\":\"sha256:" H3 "\",\"size\":0,\"annotations\":{\"a\":\"b\"}}]}"

#define DOCKER_MANIFEST                                                                     \
	"{\"schemaVersion\":2,"                                                             \
	"\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\","           \
	"\"config\":{\"mediaType\":\"application/vnd.docker.container.image.v1+json\","     \
	"\"size\":7023,\"digest\":\"sha256:" H1 "\"},"                                      \
	"\"layers\":[{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\"," \
	"\"size\":32654,\"digest\":\"sha256:" H2 "\"}]}"

#define PLAT(os, arch) "\"platform\":{\"architecture\":\"" arch "\",\"os\":\"" os "\"}"
#define PLATV(os, arch, v) \
	"\"platform\":{\"architecture\":\"" arch "\",\"os\":\"" os "\",\"variant\":\"" v "\"}"
#define MDESC(hex)                                                                              \
	"\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:" hex \
	"\",\"size\":1000"

/* What buildx pushes: two images and their attestation manifests. */
#define OCI_INDEX                                                                                 \
	"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\","         \
	"\"manifests\":["                                                                         \
	"{" MDESC(H1) "," PLAT(                                                                   \
		"linux",                                                                          \
		"amd64") "},"                                                                     \
			 "{" MDESC(H2) "," PLATV(                                                 \
				 "linux", "arm64",                                                \
				 "v8") "},"                                                       \
				       "{" MDESC(H3) "," PLAT(                                    \
					       "unknown",                                         \
					       "unknown") ","                                     \
							  "\"annotations\":{\"vnd.docker."        \
							  "reference.digest\":\"sha256:" H1 "\"," \
							  "\"vnd.docker.reference.type\":"        \
							  "\"attestation-manifest\"}},"           \
							  "{" MDESC(H4) "," PLAT(                 \
								  "unknown",                      \
								  "unknown") ","                  \
									     "\"annotations\":{"  \
									     "\"vnd.docker."      \
									     "reference.type\":"  \
									     "\"attestation-"     \
									     "manifest\"}}]}"

static int parse(struct pp_manifest *m, const char *ct, const char *body, struct pp_error *err)
{
	return pp_manifest_parse(m, ct, body, strlen(body), err);
}

static void expect_fail(const char *ct, const char *body, int code, const char *needle)
{
	struct pp_manifest m;
	struct pp_error err = {0};
	int ret = parse(&m, ct, body, &err);
	if (ret != code)
		fail_msg("expected %d, got %d (%s) for %s", code, ret, err.msg, body);
	if (!strstr(err.msg, needle))
		fail_msg("message \"%s\" lacks \"%s\"", err.msg, needle);
	assert_null(m.media_type);
	assert_null(m.layers);
	assert_null(m.manifests);
}

static void test_kind_of(void **state)
{
	struct pp_error err = {0};
	assert_int_equal(pp_manifest_kind_of(PP_MT_OCI_INDEX, &err), PP_KIND_INDEX);
	assert_int_equal(pp_manifest_kind_of(PP_MT_DOCKER_LIST, &err), PP_KIND_INDEX);
	assert_int_equal(pp_manifest_kind_of(PP_MT_OCI_MANIFEST, &err), PP_KIND_IMAGE);
	assert_int_equal(pp_manifest_kind_of(PP_MT_DOCKER_MANIFEST "; charset=utf-8", &err),
			 PP_KIND_IMAGE);
	assert_int_equal(pp_manifest_kind_of(
				 "application/vnd.docker.distribution.manifest.v1+prettyjws", &err),
			 PP_EUNSUPPORTED);
	assert_non_null(strstr(err.msg, "schema1 manifests are not supported"));
	assert_int_equal(
		pp_manifest_kind_of("application/vnd.docker.distribution.manifest.v1+json", &err),
		PP_EUNSUPPORTED);
	assert_int_equal(pp_manifest_kind_of("text/plain; charset=utf-8", &err), PP_EUNSUPPORTED);
	assert_non_null(strstr(err.msg, "schema1"));
	assert_int_equal(pp_manifest_kind_of("application/vnd.oci.image.config.v1+json", &err),
			 PP_EUNSUPPORTED);
	assert_non_null(strstr(err.msg, "unsupported manifest media type"));
	assert_int_equal(pp_manifest_kind_of(NULL, &err), PP_EUNSUPPORTED);
}

static void test_oci_manifest(void **state)
{
	struct pp_manifest m;
	struct pp_error err = {0};
	assert_int_equal(parse(&m, PP_MT_OCI_MANIFEST, OCI_MANIFEST, &err), 0);
	assert_int_equal(m.kind, PP_KIND_IMAGE);
	assert_string_equal(m.media_type, PP_MT_OCI_MANIFEST);
	assert_string_equal(m.config.media_type, "application/vnd.oci.image.config.v1+json");
	assert_string_equal(m.config.digest, "sha256:" H1);
	assert_int_equal(m.config.size, 1469);
	assert_int_equal(m.n_layers, 2);
	assert_string_equal(m.layers[0].digest, "sha256:" H2);
	assert_int_equal(m.layers[0].size, 3623807);
	assert_string_equal(m.layers[1].media_type, "application/vnd.oci.image.layer.v1.tar+zstd");
	assert_int_equal(m.layers[1].size, 0);
	assert_false(m.layers[1].has_platform);
	assert_null(m.manifests);
	pp_manifest_free(&m);
	assert_null(m.layers);
}

static void test_docker_manifest(void **state)
{
	struct pp_manifest m;
	struct pp_error err = {0};
	/* parameters after ';' are ignored */
	assert_int_equal(parse(&m, PP_MT_DOCKER_MANIFEST "; charset=utf-8", DOCKER_MANIFEST, &err),
			 0);
	assert_int_equal(m.kind, PP_KIND_IMAGE);
	assert_string_equal(m.media_type, PP_MT_DOCKER_MANIFEST);
	assert_int_equal(m.config.size, 7023);
	assert_int_equal(m.n_layers, 1);
	assert_string_equal(m.layers[0].media_type,
			    "application/vnd.docker.image.rootfs.diff.tar.gzip");
	pp_manifest_free(&m);
}

static void test_content_type_fallbacks(void **state)
{
	struct pp_manifest m;
	struct pp_error err = {0};

	/* no Content-Type: the body's mediaType */
	assert_int_equal(parse(&m, NULL, DOCKER_MANIFEST, &err), 0);
	assert_string_equal(m.media_type, PP_MT_DOCKER_MANIFEST);
	pp_manifest_free(&m);

	/* generic Content-Type: same */
	assert_int_equal(parse(&m, "application/json", OCI_INDEX, &err), 0);
	assert_int_equal(m.kind, PP_KIND_INDEX);
	assert_string_equal(m.media_type, PP_MT_OCI_INDEX);
	pp_manifest_free(&m);

	/* neither: keys decide */
	const char *bare_index = "{\"schemaVersion\":2,\"manifests\":[]}";
	assert_int_equal(parse(&m, NULL, bare_index, &err), 0);
	assert_int_equal(m.kind, PP_KIND_INDEX);
	assert_string_equal(m.media_type, PP_MT_OCI_INDEX);
	assert_int_equal(m.n_manifests, 0);
	pp_manifest_free(&m);

	const char *bare_image = "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"a/b\","
				 "\"digest\":\"sha256:" H1 "\",\"size\":2},\"layers\":[]}";
	assert_int_equal(parse(&m, "application/octet-stream", bare_image, &err), 0);
	assert_int_equal(m.kind, PP_KIND_IMAGE);
	assert_string_equal(m.media_type, PP_MT_OCI_MANIFEST);
	assert_int_equal(m.n_layers, 0);
	pp_manifest_free(&m);

	/* specific Content-Type, body without mediaType (allowed by OCI) */
	assert_int_equal(parse(&m, PP_MT_OCI_MANIFEST, bare_image, &err), 0);
	pp_manifest_free(&m);

	expect_fail(NULL, "{\"schemaVersion\":2}", PP_EPROTO, "neither");
}

static void test_schema1_rejected(void **state)
{
	const char *s1 = "{\"schemaVersion\":1,\"name\":\"x\",\"tag\":\"latest\","
			 "\"fsLayers\":[{\"blobSum\":\"sha256:" H1 "\"}],\"signatures\":[]}";
	const char *msg = "schema1 manifests are not supported; push the image again with a "
			  "current client";
	expect_fail("application/vnd.docker.distribution.manifest.v1+prettyjws", s1,
		    PP_EUNSUPPORTED, msg);
	expect_fail("application/vnd.docker.distribution.manifest.v1+json", s1, PP_EUNSUPPORTED,
		    msg);
	expect_fail("text/plain", s1, PP_EUNSUPPORTED, msg);
	expect_fail(NULL, s1, PP_EUNSUPPORTED, msg);
	expect_fail("application/json", "{\"fsLayers\":[]}", PP_EUNSUPPORTED, msg);
	expect_fail(NULL,
		    "{\"mediaType\":\"application/vnd.docker.distribution.manifest.v1+prettyjws\"}",
		    PP_EUNSUPPORTED, msg);
}

static void test_media_type_mismatch(void **state)
{
	expect_fail(PP_MT_DOCKER_MANIFEST, OCI_MANIFEST, PP_EPROTO, "disagrees");
	expect_fail(PP_MT_OCI_INDEX, OCI_MANIFEST, PP_EPROTO, "disagrees");
	/* a body that claims to be an index but carries layers */
	expect_fail(NULL, "{\"mediaType\":\"" PP_MT_OCI_INDEX "\",\"manifests\":[],\"layers\":[]}",
		    PP_EPROTO, "layers");
	expect_fail(PP_MT_OCI_MANIFEST,
		    "{\"config\":{\"mediaType\":\"a/b\",\"digest\":\"sha256:" H1 "\",\"size\":2},"
		    "\"layers\":[],\"manifests\":[]}",
		    PP_EPROTO, "manifests");
	expect_fail("application/vnd.oci.image.config.v1+json", OCI_MANIFEST, PP_EUNSUPPORTED,
		    "unsupported manifest media type");
	expect_fail(NULL, "{\"mediaType\":7,\"layers\":[]}", PP_EPROTO,
		    "mediaType: must be a string");
}

#define LAYER_WITH(field)                                                              \
	"{\"schemaVersion\":2,\"mediaType\":\"" PP_MT_OCI_MANIFEST "\","               \
	"\"config\":{\"mediaType\":\"a/b\",\"digest\":\"sha256:" H1 "\",\"size\":2},"  \
	"\"layers\":[{\"mediaType\":\"a/b\",\"digest\":\"sha256:" H2 "\",\"size\":1}," \
	"{\"mediaType\":\"a/b\",\"digest\":\"sha256:" H3 "\",\"size\":1},"             \
	"{\"mediaType\":\"a/b\"," field "}]}"

static void test_bad_sizes(void **state)
{
	expect_fail(NULL, LAYER_WITH("\"digest\":\"sha256:" H4 "\",\"size\":-1"), PP_EPROTO,
		    "layers[2].size: negative");
	expect_fail(NULL, LAYER_WITH("\"digest\":\"sha256:" H4 "\",\"size\":1099511627777"),
		    PP_EPROTO, "layers[2].size: 1099511627777 is larger than");
	expect_fail(NULL, LAYER_WITH("\"digest\":\"sha256:" H4 "\",\"size\":\"12\""), PP_EPROTO,
		    "layers[2].size: must be an integer");
	expect_fail(NULL, LAYER_WITH("\"digest\":\"sha256:" H4 "\",\"size\":1.5"), PP_EPROTO,
		    "layers[2].size: must be an integer");
	expect_fail(NULL, LAYER_WITH("\"digest\":\"sha256:" H4 "\",\"size\":null"), PP_EPROTO,
		    "layers[2].size: must be an integer");
	expect_fail(NULL, LAYER_WITH("\"digest\":\"sha256:" H4 "\""), PP_EPROTO,
		    "layers[2].size: missing");
	/* beyond int64: jansson refuses the number itself */
	expect_fail(NULL, LAYER_WITH("\"digest\":\"sha256:" H4 "\",\"size\":99999999999999999999"),
		    PP_EPROTO, "not valid JSON");

	/* exactly 1 TiB is the largest size accepted */
	struct pp_manifest m;
	struct pp_error err = {0};
	assert_int_equal(parse(&m, NULL,
			       LAYER_WITH("\"digest\":\"sha256:" H4 "\",\"size\":1099511627776"),
			       &err),
			 0);
	assert_int_equal(m.layers[2].size, PP_BLOB_MAX_BYTES);
	pp_manifest_free(&m);
}

static void test_bad_digests(void **state)
{
	expect_fail(NULL, LAYER_WITH("\"digest\":\"sha256:" H4 "00\",\"size\":1"), PP_EPROTO,
		    "layers[2].digest: invalid digest");
	expect_fail(NULL,
		    LAYER_WITH("\"digest\":\"sha256:"
			       "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\","
			       "\"size\":1"),
		    PP_EPROTO, "lowercase");
	expect_fail(NULL, LAYER_WITH("\"digest\":\"" H4 "\",\"size\":1"), PP_EPROTO,
		    "no algorithm");
	expect_fail(NULL, LAYER_WITH("\"digest\":\"sha512:" H4 H4 "\",\"size\":1"), PP_EUNSUPPORTED,
		    "layers[2].digest");
	expect_fail(NULL, LAYER_WITH("\"digest\":42,\"size\":1"), PP_EPROTO,
		    "layers[2].digest: must be a string");
	expect_fail(NULL, LAYER_WITH("\"size\":1"), PP_EPROTO, "layers[2].digest: missing");
	expect_fail(NULL,
		    "{\"mediaType\":\"" PP_MT_OCI_MANIFEST "\",\"config\":{\"mediaType\":\"a/b\","
		    "\"digest\":\"sha256:x\",\"size\":2},\"layers\":[]}",
		    PP_EPROTO, "config.digest");
}

static void test_malformed(void **state)
{
	expect_fail(NULL, "", PP_EPROTO, "not valid JSON");
	expect_fail(NULL, "[1,2]", PP_EPROTO, "not a JSON object");
	expect_fail(NULL, "{\"layers\":[] ", PP_EPROTO, "not valid JSON");
	expect_fail(NULL, "{\"layers\":[],\"layers\":[]}", PP_EPROTO, "not valid JSON");
	expect_fail(NULL, "{\"schemaVersion\":3,\"layers\":[]}", PP_EPROTO, "schemaVersion");
	expect_fail(PP_MT_OCI_MANIFEST, "{\"layers\":[]}", PP_EPROTO, "config: missing");
	expect_fail(PP_MT_OCI_MANIFEST,
		    "{\"config\":{\"mediaType\":\"a/b\",\"digest\":\"sha256:" H1 "\",\"size\":2}}",
		    PP_EPROTO, "layers: missing");
	expect_fail(PP_MT_OCI_MANIFEST,
		    "{\"config\":{\"mediaType\":\"a/b\",\"digest\":\"sha256:" H1 "\",\"size\":2},"
		    "\"layers\":{}}",
		    PP_EPROTO, "layers: must be an array");
	expect_fail(PP_MT_OCI_MANIFEST,
		    "{\"config\":{\"mediaType\":\"a/b\",\"digest\":\"sha256:" H1 "\",\"size\":2},"
		    "\"layers\":[1]}",
		    PP_EPROTO, "layers[0]: must be an object");
	expect_fail(PP_MT_OCI_MANIFEST, LAYER_WITH("\"digest\":\"sha256:" H4 "\",\"size\":1") "x",
		    PP_EPROTO, "not valid JSON");
	expect_fail(PP_MT_OCI_INDEX, "{\"manifests\":[{\"digest\":\"sha256:" H1 "\",\"size\":2}]}",
		    PP_EPROTO, "manifests[0].mediaType: missing");
	expect_fail(PP_MT_OCI_INDEX,
		    "{\"manifests\":[{" MDESC(H1) ",\"platform\":{\"os\":\"linux\"}}]}", PP_EPROTO,
		    "manifests[0].platform.architecture: missing");
	expect_fail(PP_MT_OCI_INDEX,
		    "{\"manifests\":[{" MDESC(H1) ",\"platform\":\"linux/amd64\"}]}", PP_EPROTO,
		    "manifests[0].platform: must be an object");
	expect_fail(PP_MT_OCI_INDEX, "{\"manifests\":[{" MDESC(H1) ",\"annotations\":[]}]}",
		    PP_EPROTO, "manifests[0].annotations: must be an object");

	/* embedded NUL: the length given is what counts */
	struct pp_manifest m;
	struct pp_error err = {0};
	static const char nul[] = "{\"a\":1}\0garbage";
	assert_int_equal(pp_manifest_parse(&m, NULL, nul, sizeof(nul) - 1, &err), PP_EPROTO);

	/* larger than 4 MiB is refused before parsing */
	assert_int_equal(pp_manifest_parse(&m, NULL, "{}", PP_MANIFEST_MAX_BYTES + 1, &err),
			 PP_EPROTO);
}

static void test_oci_index_and_attestations(void **state)
{
	struct pp_manifest m;
	struct pp_error err = {0};
	struct pp_platform want;

	assert_int_equal(parse(&m, PP_MT_OCI_INDEX, OCI_INDEX, &err), 0);
	assert_int_equal(m.kind, PP_KIND_INDEX);
	assert_int_equal(m.n_manifests, 4);
	assert_true(m.manifests[0].has_platform);
	assert_string_equal(m.manifests[0].platform.arch, "amd64");
	assert_false(m.manifests[0].is_attestation);
	assert_false(m.manifests[1].is_attestation);
	assert_string_equal(m.manifests[1].platform.variant, "v8");
	assert_true(m.manifests[2].is_attestation);
	assert_true(m.manifests[3].is_attestation);

	assert_int_equal(pp_platform_parse(&want, "linux/amd64", &err), 0);
	assert_int_equal(pp_index_select(&m, &want, &err), 0);
	/* arm64 with no variant is v8 */
	assert_int_equal(pp_platform_parse(&want, "linux/arm64", &err), 0);
	assert_int_equal(pp_index_select(&m, &want, &err), 1);
	assert_int_equal(pp_platform_parse(&want, "linux/arm64/v8", &err), 0);
	assert_int_equal(pp_index_select(&m, &want, &err), 1);
	assert_int_equal(pp_platform_parse(&want, "linux/aarch64", &err), 0);
	assert_int_equal(pp_index_select(&m, &want, &err), 1);

	/* attestations never match, not even for unknown/unknown */
	assert_int_equal(pp_platform_parse(&want, "unknown/unknown", &err), 0);
	assert_int_equal(pp_index_select(&m, &want, &err), PP_ENOTFOUND);

	assert_int_equal(pp_platform_parse(&want, "linux/riscv64", &err), 0);
	assert_int_equal(pp_index_select(&m, &want, &err), PP_ENOTFOUND);
	assert_int_equal(err.code, PP_ENOTFOUND);
	assert_non_null(strstr(err.msg, "linux/riscv64"));
	assert_non_null(strstr(err.msg, "linux/amd64, linux/arm64/v8"));
	assert_null(strstr(err.msg, "unknown"));
	pp_manifest_free(&m);
}

#define DOCKER_LIST                                                                                            \
	"{\"schemaVersion\":2,\"mediaType\":\"" PP_MT_DOCKER_LIST "\",\"manifests\":["                         \
	"{" MDESC(H1) "," PLAT(                                                                                \
		"linux",                                                                                       \
		"amd64") "},"                                                                                  \
			 "{" MDESC(H2) "," PLATV(                                                              \
				 "linux", "arm",                                                               \
				 "v6") "},"                                                                    \
				       "{" MDESC(H3) "," PLATV(                                                \
					       "linux", "arm",                                                 \
					       "v7") "},"                                                      \
						     "{" MDESC(H4) "," PLAT(                                   \
							     "linux",                                          \
							     "arm64") "},"                                     \
								      "{" MDESC(H5) "," PLAT(                  \
									      "linux",                         \
									      "s390x") "},"                    \
										       "{" MDESC(H6) "," PLAT( \
											       "w"             \
											       "i"             \
											       "n"             \
											       "d"             \
											       "o"             \
											       "w"             \
											       "s",            \
											       "a"             \
											       "m"             \
											       "d"             \
											       "6"             \
											       "4") "}]}"

static void test_select_variants(void **state)
{
	struct pp_manifest m;
	struct pp_error err = {0};
	struct pp_platform want;

	assert_int_equal(parse(&m, PP_MT_DOCKER_LIST, DOCKER_LIST, &err), 0);
	assert_int_equal(m.kind, PP_KIND_INDEX);

	assert_int_equal(pp_platform_parse(&want, "linux/arm/v7", &err), 0);
	assert_int_equal(pp_index_select(&m, &want, &err), 2);
	assert_int_equal(pp_platform_parse(&want, "linux/arm/v6", &err), 0);
	assert_int_equal(pp_index_select(&m, &want, &err), 1);
	/* v8 (32-bit) runs v7 images: the closest one wins */
	assert_int_equal(pp_platform_parse(&want, "linux/arm/v8", &err), 0);
	assert_int_equal(pp_index_select(&m, &want, &err), 2);
	/* v5 cannot run v6 or v7 */
	assert_int_equal(pp_platform_parse(&want, "linux/arm/v5", &err), 0);
	assert_int_equal(pp_index_select(&m, &want, &err), PP_ENOTFOUND);
	assert_non_null(strstr(err.msg, "linux/arm/v6, linux/arm/v7, linux/arm64"));
	/* no wanted variant: the first arm entry */
	assert_int_equal(pp_platform_parse(&want, "linux/arm", &err), 0);
	assert_int_equal(pp_index_select(&m, &want, &err), 1);
	/* arm64 entry without variant serves arm64/v8 */
	assert_int_equal(pp_platform_parse(&want, "linux/arm64/v8", &err), 0);
	assert_int_equal(pp_index_select(&m, &want, &err), 3);
	assert_int_equal(pp_platform_parse(&want, "windows/amd64", &err), 0);
	assert_int_equal(pp_index_select(&m, &want, &err), 5);
	assert_int_equal(pp_platform_parse(&want, "linux/s390x", &err), 0);
	assert_int_equal(pp_index_select(&m, &want, &err), 4);
	assert_int_equal(pp_platform_parse(&want, "linux/ppc64le", &err), 0);
	assert_int_equal(pp_index_select(&m, &want, &err), PP_ENOTFOUND);
	assert_non_null(strstr(err.msg, "no manifest for linux/ppc64le"));
	pp_manifest_free(&m);
}

static void test_select_edge_cases(void **state)
{
	struct pp_manifest m;
	struct pp_error err = {0};
	struct pp_platform want;

	assert_int_equal(pp_platform_parse(&want, "linux/amd64", &err), 0);

	/* empty index */
	assert_int_equal(parse(&m, PP_MT_OCI_INDEX, "{\"manifests\":[]}", &err), 0);
	assert_int_equal(pp_index_select(&m, &want, &err), PP_ENOTFOUND);
	assert_non_null(strstr(err.msg, "lists no platforms"));
	pp_manifest_free(&m);

	/* an entry with no platform is the fallback */
	assert_int_equal(parse(&m, PP_MT_OCI_INDEX,
			       "{\"manifests\":[{" MDESC(H1) "," PLAT("linux", "arm64") "},{" MDESC(
				       H2) "}]}",
			       &err),
			 0);
	assert_int_equal(pp_index_select(&m, &want, &err), 1);
	pp_manifest_free(&m);

	/* amd64/v3 wanted: a plain amd64 entry runs, a v4 one does not */
	assert_int_equal(
		parse(&m, PP_MT_OCI_INDEX,
		      "{\"manifests\":[{" MDESC(H1) "," PLATV("linux", "amd64", "v4") "},{" MDESC(
			      H2) "," PLAT("linux", "amd64") "}]}",
		      &err),
		0);
	assert_int_equal(pp_platform_parse(&want, "linux/amd64/v3", &err), 0);
	assert_int_equal(pp_index_select(&m, &want, &err), 1);
	/* plain amd64 wanted prefers the entry without a variant */
	assert_int_equal(pp_platform_parse(&want, "linux/amd64", &err), 0);
	assert_int_equal(pp_index_select(&m, &want, &err), 1);
	pp_manifest_free(&m);

	/* platform field too long for struct pp_platform */
	expect_fail(PP_MT_OCI_INDEX,
		    "{\"manifests\":[{" MDESC(H1) "," PLAT(
			    "linux", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa") "}]}",
		    PP_EPROTO, "manifests[0].platform.architecture: longer than");
}

static void test_platform_parse_format(void **state)
{
	struct pp_platform p;
	struct pp_error err = {0};
	char buf[100];

	assert_int_equal(pp_platform_parse(&p, "linux/arm64/v8", &err), 0);
	assert_string_equal(p.os, "linux");
	assert_string_equal(p.arch, "arm64");
	assert_string_equal(p.variant, "v8");
	assert_string_equal(pp_platform_format(&p, buf, sizeof(buf)), "linux/arm64/v8");

	assert_int_equal(pp_platform_parse(&p, "linux/amd64", &err), 0);
	assert_string_equal(p.variant, "");
	assert_string_equal(pp_platform_format(&p, buf, sizeof(buf)), "linux/amd64");

	assert_int_equal(pp_platform_parse(&p, "Linux/X86_64", &err), 0);
	assert_string_equal(pp_platform_format(&p, buf, sizeof(buf)), "linux/amd64");
	assert_int_equal(pp_platform_parse(&p, "linux/armhf", &err), 0);
	assert_string_equal(pp_platform_format(&p, buf, sizeof(buf)), "linux/arm/v7");
	assert_int_equal(pp_platform_parse(&p, "arm64", &err), 0);
	assert_string_equal(pp_platform_format(&p, buf, sizeof(buf)), "linux/arm64");

	static const char *const bad[] = {"",
					  "/",
					  "linux/",
					  "/amd64",
					  "linux//v7",
					  "linux/arm/v7/x",
					  "linux/am d64",
					  "linux/amd64/",
					  "linux/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int ret = pp_platform_parse(&p, bad[i], &err);
		if (ret != PP_EUSAGE)
			fail_msg("\"%s\": expected PP_EUSAGE, got %d", bad[i], ret);
		assert_non_null(strstr(err.msg, "invalid platform"));
	}
}

static void test_platform_default(void **state)
{
	struct pp_platform p;
	char buf[100];
	pp_platform_default(&p);
	assert_string_equal(p.os, "linux");
	assert_true(p.arch[0] != '\0');
	/* never a kernel spelling */
	assert_string_not_equal(p.arch, "x86_64");
	assert_string_not_equal(p.arch, "aarch64");
	assert_string_not_equal(p.arch, "armv7l");
	/* round-trips through parse */
	struct pp_platform q;
	assert_int_equal(pp_platform_parse(&q, pp_platform_format(&p, buf, sizeof(buf)), NULL), 0);
	assert_memory_equal(&p, &q, sizeof(p));
#if defined(__x86_64__)
	assert_string_equal(buf, "linux/amd64");
#elif defined(__aarch64__)
	assert_string_equal(buf, "linux/arm64");
#endif
}

static void test_config_diff_ids(void **state)
{
	char **ids;
	size_t n;
	struct pp_error err = {0};
	const char *cfg = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{},"
			  "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:" H1 "\","
			  "\"sha256:" H2 "\"]}}";

	assert_int_equal(pp_config_diff_ids(&ids, &n, cfg, strlen(cfg), &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(ids[0], "sha256:" H1);
	assert_string_equal(ids[1], "sha256:" H2);
	for (size_t i = 0; i < n; i++)
		free(ids[i]);
	free(ids);

	const char *empty = "{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}";
	assert_int_equal(pp_config_diff_ids(&ids, &n, empty, strlen(empty), &err), 0);
	assert_int_equal(n, 0);
	free(ids);

	static const struct {
		const char *body, *needle;
	} bad[] = {
		{"{}", "rootfs: missing"},
		{"{\"rootfs\":[]}", "rootfs: must be an object"},
		{"{\"rootfs\":{\"type\":\"layers\"}}", "rootfs.diff_ids: missing"},
		{"{\"rootfs\":{\"diff_ids\":\"sha256:" H1 "\"}}",
		 "rootfs.diff_ids: must be an array"},
		{"{\"rootfs\":{\"diff_ids\":[\"sha256:" H1 "\",7]}}",
		 "rootfs.diff_ids[1]: must be a string"},
		{"{\"rootfs\":{\"diff_ids\":[\"sha256:" H1 "\",\"sha256:abc\"]}}",
		 "rootfs.diff_ids[1]: invalid digest"},
		{"[]", "not a JSON object"},
		{"nope", "not valid JSON"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ids = (char **)1;
		n = 99;
		int ret = pp_config_diff_ids(&ids, &n, bad[i].body, strlen(bad[i].body), &err);
		assert_int_equal(ret, PP_EPROTO);
		if (!strstr(err.msg, bad[i].needle))
			fail_msg("message \"%s\" lacks \"%s\"", err.msg, bad[i].needle);
		assert_null(ids);
		assert_int_equal(n, 0);
	}
}

/* The chain ID rule of the OCI image spec (layer stacks in Docker and
 * containerd snapshots): values worked out independently with Python's
 * hashlib. */
static void test_chain_id(void **state)
{
	(void)state;
	const char *a = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
	const char *b = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
	char c0[PP_DIGEST_STR_LEN + 1], c1[PP_DIGEST_STR_LEN + 1], c2[PP_DIGEST_STR_LEN + 1];
	pp_chain_id(NULL, a, c0);
	assert_string_equal(c0, a);
	pp_chain_id(c0, b, c1);
	assert_string_equal(
		c1, "sha256:ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c");
	pp_chain_id(c1, a, c2);
	assert_string_equal(
		c2, "sha256:406364a4bd8d39df8107071d4494fa73814420337124657ec5999b072e5d3352");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kind_of),
		cmocka_unit_test(test_oci_manifest),
		cmocka_unit_test(test_docker_manifest),
		cmocka_unit_test(test_content_type_fallbacks),
		cmocka_unit_test(test_schema1_rejected),
		cmocka_unit_test(test_media_type_mismatch),
		cmocka_unit_test(test_bad_sizes),
		cmocka_unit_test(test_bad_digests),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_oci_index_and_attestations),
		cmocka_unit_test(test_select_variants),
		cmocka_unit_test(test_select_edge_cases),
		cmocka_unit_test(test_platform_parse_format),
		cmocka_unit_test(test_platform_default),
		cmocka_unit_test(test_config_diff_ids),
		cmocka_unit_test(test_chain_id),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
