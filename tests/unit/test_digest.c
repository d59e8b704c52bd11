#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "prepull/digest.h"
#include "prepull/error.h"

#define EMPTY_SHA "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define ABC_SHA "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

static void test_validate_ok(void **state)
{
	struct pp_error err = {0};
	assert_int_equal(pp_digest_validate(EMPTY_SHA, &err), 0);
	assert_int_equal(pp_digest_validate(ABC_SHA, &err), 0);
	assert_string_equal(pp_digest_hex(ABC_SHA), ABC_SHA + 7);
}

static void expect_bad(const char *d, int code, const char *needle)
{
	struct pp_error err = {0};
	assert_int_equal(pp_digest_validate(d, &err), code);
	assert_int_equal(err.code, code);
	if (!strstr(err.msg, needle))
		fail_msg("message \"%s\" lacks \"%s\"", err.msg, needle);
}

static void test_validate_bad(void **state)
{
	expect_bad(NULL, PP_EPROTO, "empty");
	expect_bad("", PP_EPROTO, "empty");
	expect_bad("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", PP_EPROTO,
		   "no algorithm");
	expect_bad(":e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", PP_EPROTO,
		   "no algorithm");
	expect_bad("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
		   PP_EPROTO, "lowercase");
	expect_bad("sha256:e3b0c442", PP_EPROTO, "64 hex");
	expect_bad(EMPTY_SHA "00", PP_EPROTO, "got 66");
	expect_bad("sha256:", PP_EPROTO, "got 0");
	expect_bad("sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		   PP_EPROTO, "non-hex");
	expect_bad("SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		   PP_EPROTO, "algorithm");
	expect_bad("md5:d41d8cd98f00b204e9800998ecf8427e", PP_EPROTO, "unknown algorithm");
	expect_bad("sha256 :e3b0", PP_EPROTO, "malformed algorithm");
	expect_bad("sha512:"
		   "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b"
		   "0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
		   PP_EUNSUPPORTED, "only sha256");
	expect_bad("blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
		   PP_EUNSUPPORTED, "not supported");
}

static void test_validate_message_is_printable(void **state)
{
	struct pp_error err = {0};
	char long_bad[600];
	memset(long_bad, 'x', sizeof(long_bad) - 1);
	long_bad[sizeof(long_bad) - 1] = '\0';
	memcpy(long_bad, "sha256:\x1b[31m", 12);
	assert_int_equal(pp_digest_validate(long_bad, &err), PP_EPROTO);
	assert_null(strchr(err.msg, '\x1b'));
	assert_true(strlen(err.msg) < 300);
}

static void test_sha256_oneshot(void **state)
{
	char out[PP_DIGEST_STR_LEN + 1];
	pp_sha256_digest("", 0, out);
	assert_string_equal(out, EMPTY_SHA);
	pp_sha256_digest("abc", 3, out);
	assert_string_equal(out, ABC_SHA);
}

static void test_sha256_streaming_copy_reset(void **state)
{
	char out[PP_DIGEST_STR_LEN + 1], mid[PP_DIGEST_STR_LEN + 1];
	struct pp_sha256 *h = pp_sha256_new();
	struct pp_sha256 *snap = pp_sha256_new();

	pp_sha256_update(h, "a", 1);
	pp_sha256_update(h, "", 0);
	pp_sha256_copy(snap, h);
	pp_sha256_update(h, "bc", 2);
	pp_sha256_final(h, out);
	assert_string_equal(out, ABC_SHA);

	/* The copy carries on from "a" on its own. */
	pp_sha256_update(snap, "bc", 2);
	pp_sha256_final(snap, mid);
	assert_string_equal(mid, ABC_SHA);

	/* final resets: the next final with no input is the empty digest. */
	pp_sha256_final(h, out);
	assert_string_equal(out, EMPTY_SHA);
	assert_int_equal(pp_digest_validate(out, NULL), 0);

	pp_sha256_free(h);
	pp_sha256_free(snap);
	pp_sha256_free(NULL);
}

static void test_sha256_large(void **state)
{
	/* One million 'a': a well-known test vector. */
	static char buf[1000000];
	char out[PP_DIGEST_STR_LEN + 1];
	memset(buf, 'a', sizeof(buf));
	pp_sha256_digest(buf, sizeof(buf), out);
	assert_string_equal(
		out, "sha256:cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
	struct pp_sha256 *h = pp_sha256_new();
	for (size_t off = 0; off < sizeof(buf); off += 4096)
		pp_sha256_update(h, buf + off, sizeof(buf) - off < 4096 ? sizeof(buf) - off : 4096);
	char out2[PP_DIGEST_STR_LEN + 1];
	pp_sha256_final(h, out2);
	assert_string_equal(out, out2);
	pp_sha256_free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_validate_ok),
		cmocka_unit_test(test_validate_bad),
		cmocka_unit_test(test_validate_message_is_printable),
		cmocka_unit_test(test_sha256_oneshot),
		cmocka_unit_test(test_sha256_streaming_copy_reset),
		cmocka_unit_test(test_sha256_large),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
