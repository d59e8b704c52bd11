#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prepull/error.h"
#include "prepull/reference.h"

#define D "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct good {
	const char *in, *domain, *path, *tag, *digest, *full;
};

static const struct good goods[] = {
	{"busybox", "docker.io", "library/busybox", "latest", NULL,
	 "docker.io/library/busybox:latest"},
	{"busybox:1.36", "docker.io", "library/busybox", "1.36", NULL,
	 "docker.io/library/busybox:1.36"},
	{"user/app:1.0", "docker.io", "user/app", "1.0", NULL, "docker.io/user/app:1.0"},
	{"docker.io/busybox", "docker.io", "library/busybox", "latest", NULL,
	 "docker.io/library/busybox:latest"},
	{"index.docker.io/busybox", "docker.io", "library/busybox", "latest", NULL,
	 "docker.io/library/busybox:latest"},
	{"index.docker.io/user/app", "docker.io", "user/app", "latest", NULL,
	 "docker.io/user/app:latest"},
	{"docker.io/library/busybox:latest", "docker.io", "library/busybox", "latest", NULL,
	 "docker.io/library/busybox:latest"},
	{"busybox@" D, "docker.io", "library/busybox", NULL, D, "docker.io/library/busybox@" D},
	{"busybox:1.36@" D, "docker.io", "library/busybox", "1.36", D,
	 "docker.io/library/busybox:1.36@" D},
	{"localhost/x", "localhost", "x", "latest", NULL, "localhost/x:latest"},
	{"localhost:5000/a/b@" D, "localhost:5000", "a/b", NULL, D, "localhost:5000/a/b@" D},
	{"localhost:5000/a/b:tag", "localhost:5000", "a/b", "tag", NULL, "localhost:5000/a/b:tag"},
	/* bare localhost with no '/' is a Docker Hub name, ":5000" its tag */
	{"localhost:5000", "docker.io", "library/localhost", "5000", NULL,
	 "docker.io/library/localhost:5000"},
	{"localhost", "docker.io", "library/localhost", "latest", NULL,
	 "docker.io/library/localhost:latest"},
	{"[::1]:5000/x:tag", "[::1]:5000", "x", "tag", NULL, "[::1]:5000/x:tag"},
	{"[::1]/x", "[::1]", "x", "latest", NULL, "[::1]/x:latest"},
	{"[2001:db8::1]:443/ns/img", "[2001:db8::1]:443", "ns/img", "latest", NULL,
	 "[2001:db8::1]:443/ns/img:latest"},
	{"127.0.0.1/x", "127.0.0.1", "x", "latest", NULL, "127.0.0.1/x:latest"},
	{"127.0.0.1:5000/x", "127.0.0.1:5000", "x", "latest", NULL, "127.0.0.1:5000/x:latest"},
	{"quay.io/coreos/etcd:v3.5.0", "quay.io", "coreos/etcd", "v3.5.0", NULL,
	 "quay.io/coreos/etcd:v3.5.0"},
	{"registry:5000/x", "registry:5000", "x", "latest", NULL, "registry:5000/x:latest"},
	/* uppercase in the first component makes it a domain */
	{"Registry/x", "Registry", "x", "latest", NULL, "Registry/x:latest"},
	{"ghcr.io/a/b/c/d", "ghcr.io", "a/b/c/d", "latest", NULL, "ghcr.io/a/b/c/d:latest"},
	{"a.b-c.example.com/a__b/c---d/e.f_g", "a.b-c.example.com", "a__b/c---d/e.f_g", "latest",
	 NULL, "a.b-c.example.com/a__b/c---d/e.f_g:latest"},
	{"x:_Tag.With-Mixed_1", "docker.io", "library/x", "_Tag.With-Mixed_1", NULL,
	 "docker.io/library/x:_Tag.With-Mixed_1"},
	{"nvcr.io/nvidia/pytorch:24.01-py3", "nvcr.io", "nvidia/pytorch", "24.01-py3", NULL,
	 "nvcr.io/nvidia/pytorch:24.01-py3"},
};

static void test_good_references(void **state)
{
	for (size_t i = 0; i < sizeof(goods) / sizeof(goods[0]); i++) {
		const struct good *g = &goods[i];
		struct pp_ref r;
		struct pp_error err = {0};
		int ret = pp_ref_parse(&r, g->in, &err);
		if (ret != 0)
			fail_msg("%s: unexpected error %d: %s", g->in, ret, err.msg);
		assert_string_equal(r.domain, g->domain);
		assert_string_equal(r.path, g->path);
		if (g->tag)
			assert_string_equal(r.tag, g->tag);
		else
			assert_null(r.tag);
		if (g->digest)
			assert_string_equal(r.digest, g->digest);
		else
			assert_null(r.digest);
		assert_string_equal(r.full, g->full);
		pp_ref_free(&r);
		assert_null(r.full);
	}
}

struct bad {
	const char *in;
	const char *needle;
};

static const struct bad bads[] = {
	{"", "empty"},
	{"Foo", "invalid reference \"Foo\": repository name must be lowercase"},
	{"Foo/Bar", "invalid reference \"Foo/Bar\": repository name must be lowercase"},
	{"docker.io/User/app", "must be lowercase"},
	{"busybox:", "invalid tag"},
	{"busybox:-x", "invalid tag"},
	{"busybox:.x", "invalid tag"},
	{"busybox:a+b", "invalid tag"},
	{"busybox:a/b", "invalid registry port"}, /* a ":" before the last "/" is no tag */
	{"busybox@sha256:abc", "64 hex"},
	{"busybox@sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
	 "lowercase"},
	{"busybox@", "empty"},
	{"busybox@md5:d41d8cd98f00b204e9800998ecf8427e", "unknown algorithm"},
	{"busybox@sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c"
	 "5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
	 "only sha256"},
	{"busybox@" D "@" D, "non-hex"},
	{"/busybox", "empty path component"},
	{"busybox/", "empty path component"},
	{"a//b", "empty path component"},
	{"localhost/", "empty path component"},
	{"a..b", "invalid repository name component"},
	{"a___b", "invalid repository name component"},
	{"a._b", "invalid repository name component"},
	{"-a", "invalid repository name component"},
	{"a-", "invalid repository name component"},
	{"a b", "invalid repository name component"},
	{" busybox", "invalid repository name component"},
	{"host:port/x", "invalid registry port"},
	{"host:99999/x", "invalid registry port"},
	{"host:/x", "invalid registry port"},
	{"-host.com/x", "invalid registry host"},
	{"host..com/x", "invalid registry host"},
	{"ho_st.com/x", "invalid registry host"},
	{"::1/x", "invalid registry host"},
	{"[::1/x", "unterminated"},
	{"[::g]:5000/x", "invalid IPv6"},
	{"[]:5000/x", "invalid IPv6"},
	{"[::1]x/y", "after ']'"},
	{":tag", "missing repository name"},
	{"@" D, "missing repository name"},
	{"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "image ID"},
};

static void test_bad_references(void **state)
{
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		struct pp_ref r;
		struct pp_error err = {0};
		int ret = pp_ref_parse(&r, bads[i].in, &err);
		if (ret != PP_EUSAGE)
			fail_msg("\"%s\": expected PP_EUSAGE, got %d (%s)", bads[i].in, ret,
				 ret ? err.msg : r.full);
		assert_int_equal(err.code, PP_EUSAGE);
		if (!strstr(err.msg, bads[i].needle))
			fail_msg("\"%s\": message \"%s\" lacks \"%s\"", bads[i].in, err.msg,
				 bads[i].needle);
		assert_null(r.domain);
		assert_null(r.full);
		pp_ref_free(&r); /* safe on a failed parse */
	}
}

static void test_tag_length(void **state)
{
	char in[200];
	struct pp_ref r;
	struct pp_error err = {0};

	strcpy(in, "x:");
	memset(in + 2, 't', 128);
	in[130] = '\0';
	assert_int_equal(pp_ref_parse(&r, in, &err), 0);
	assert_int_equal(strlen(r.tag), 128);
	pp_ref_free(&r);

	in[130] = 't';
	in[131] = '\0';
	assert_int_equal(pp_ref_parse(&r, in, &err), PP_EUSAGE);
	assert_non_null(strstr(err.msg, "invalid tag"));
}

static void test_name_length(void **state)
{
	/* "example.com/" is 12 characters: 12 + 243 = 255 is the limit. */
	char in[400];
	struct pp_ref r;
	struct pp_error err = {0};

	strcpy(in, "example.com/");
	memset(in + 12, 'a', 243);
	in[255] = '\0';
	assert_int_equal(pp_ref_parse(&r, in, &err), 0);
	assert_int_equal(strlen(r.domain) + 1 + strlen(r.path), 255);
	pp_ref_free(&r);

	strcpy(in + 255, "a:tag");
	assert_int_equal(pp_ref_parse(&r, in, &err), PP_EUSAGE);
	assert_non_null(strstr(err.msg, "longer than 255"));
	/* the quoted input is cut short, not the whole 260 characters */
	assert_true(strlen(err.msg) < 260);

	/* The limit counts the normalised name: docker.io/library/ + 238 > 255. */
	memset(in, 'b', 238);
	in[238] = '\0';
	assert_int_equal(pp_ref_parse(&r, in, &err), PP_EUSAGE);
	in[237] = '\0'; /* docker.io/library/ is 18: 18 + 237 = 255 */
	assert_int_equal(pp_ref_parse(&r, in, &err), 0);
	pp_ref_free(&r);
}

static void test_message_is_printable(void **state)
{
	struct pp_ref r;
	struct pp_error err = {0};
	assert_int_equal(pp_ref_parse(&r, "bad\x1b[2J/x\n", &err), PP_EUSAGE);
	assert_null(strchr(err.msg, '\x1b'));
	assert_null(strchr(err.msg, '\n'));
}

static void test_name_and_api_host(void **state)
{
	struct pp_ref r;
	struct pp_error err = {0};

	assert_int_equal(pp_ref_parse(&r, "alpine:3", &err), 0);
	char *name = pp_ref_name(&r);
	assert_string_equal(name, "docker.io/library/alpine");
	free(name);
	assert_string_equal(pp_ref_api_host(&r), "registry-1.docker.io");
	assert_string_equal(pp_domain_config_key(r.domain), "https://index.docker.io/v1/");
	pp_ref_free(&r);

	assert_int_equal(pp_ref_parse(&r, "localhost:5000/a/b:1", &err), 0);
	name = pp_ref_name(&r);
	assert_string_equal(name, "localhost:5000/a/b");
	free(name);
	assert_string_equal(pp_ref_api_host(&r), "localhost:5000");
	assert_string_equal(pp_domain_config_key(r.domain), "localhost:5000");
	pp_ref_free(&r);
}

static void test_domain_is_local(void **state)
{
	static const char *const local[] = {
		"localhost",
		"localhost:5000",
		"127.0.0.1",
		"127.0.0.1:5000",
		"127.1.2.3:80",
		"[::1]",
		"[::1]:5000",
		"::1",
		"LOCALHOST:443",
		"[0:0:0:0:0:0:0:1]:5000",
		"[::ffff:127.0.0.1]:5000",
	};
	static const char *const remote[] = {
		"docker.io",
		"registry:5000",
		"128.0.0.1",
		"10.0.0.1:5000",
		"[::2]:5000",
		"[2001:db8::1]",
		"localhost.example.com",
		"127.0.0.1.nip.io",
		"127.0.0",
		"",
		"[::1",
		"[::1]x",
	};
	for (size_t i = 0; i < sizeof(local) / sizeof(local[0]); i++)
		if (!pp_domain_is_local(local[i]))
			fail_msg("%s should be local", local[i]);
	for (size_t i = 0; i < sizeof(remote) / sizeof(remote[0]); i++)
		if (pp_domain_is_local(remote[i]))
			fail_msg("%s should not be local", remote[i]);
	assert_false(pp_domain_is_local(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_references),
		cmocka_unit_test(test_bad_references),
		cmocka_unit_test(test_tag_length),
		cmocka_unit_test(test_name_length),
		cmocka_unit_test(test_message_is_printable),
		cmocka_unit_test(test_name_and_api_host),
		cmocka_unit_test(test_domain_is_local),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
