/* The protobuf codec and gRPC framing: round trips, unknown fields skipped,
 * truncated and malformed input rejected. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "prepull/error.h"
#include "prepull/grpc.h"
#include "prepull/protobuf.h"

/* Reads every field; returns the last pp_pb_next result (0 or an error). */
static int walk(const void *data, size_t len, size_t *n_fields)
{
	struct pp_pb_reader r;
	struct pp_pb_field f;
	struct pp_error err = {0};
	int rc;
	size_t n = 0;
	pp_pb_reader_init(&r, data, len);
	while ((rc = pp_pb_next(&r, &f, &err)) > 0)
		n++;
	if (n_fields)
		*n_fields = n;
	return rc;
}

static void test_varint_round_trip(void **state)
{
	const uint64_t values[] = {0,          1,
				   127,        128,
				   300,        16383,
				   16384,      (1ULL << 32) - 1,
				   1ULL << 35, UINT64_MAX - 1,
				   UINT64_MAX, (uint64_t)-2};
	for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		struct pp_buf b = {0};
		pp_pb_put_uint(&b, 3, values[i]);
		struct pp_pb_reader r;
		struct pp_pb_field f;
		struct pp_error err = {0};
		pp_pb_reader_init(&r, b.data, b.len);
		assert_int_equal(pp_pb_next(&r, &f, &err), 1);
		assert_int_equal(f.num, 3);
		assert_int_equal(f.wire, PP_PB_VARINT);
		uint64_t v = 0;
		assert_int_equal(pp_pb_varint(&f, &v, &err), 0);
		assert_true(v == values[i]);
		assert_int_equal(pp_pb_next(&r, &f, &err), 0);
		pp_buf_free(&b);
	}
}

static void test_known_encoding(void **state)
{
	/* The protobuf documentation's example: field 1 = 150 is 08 96 01. */
	struct pp_buf b = {0};
	pp_pb_put_uint(&b, 1, 150);
	assert_int_equal(b.len, 3);
	assert_memory_equal(b.data, "\x08\x96\x01", 3);
	pp_buf_free(&b);
	/* field 2 = "testing" is 12 07 74 65 73 74 69 6e 67. */
	pp_pb_put_string(&b, 2, "testing");
	assert_int_equal(b.len, 9);
	assert_memory_equal(b.data, "\x12\x07testing", 9);
	pp_buf_free(&b);
	/* A large field number needs a multi-byte key. */
	pp_pb_put_uint(&b, PP_PB_MAX_FIELD, 1);
	assert_int_equal(walk(b.data, b.len, NULL), 0);
	pp_buf_free(&b);
}

static void test_nested_and_map_round_trip(void **state)
{
	struct pp_buf inner = {0}, outer = {0};
	pp_pb_put_string(&inner, 1, "application/vnd.oci.image.layer.v1.tar+gzip");
	pp_pb_put_string(&inner, 2, "sha256:abc");
	pp_pb_put_uint(&inner, 3, 12345);
	pp_pb_put_message(&outer, 1, &inner);
	pp_pb_put_map_entry(&outer, 7, "containerd.io/gc.root", "2024");
	pp_pb_put_map_entry(&outer, 7, "empty", "");
	pp_pb_put_string(&outer, 9, NULL); /* absent: writes nothing */

	struct pp_pb_reader r, sub;
	struct pp_pb_field f, g;
	struct pp_error err = {0};
	pp_pb_reader_init(&r, outer.data, outer.len);
	assert_int_equal(pp_pb_next(&r, &f, &err), 1);
	assert_int_equal(f.num, 1);
	assert_int_equal(pp_pb_sub(&f, &sub, &err), 0);
	char *mt = NULL, *dg = NULL;
	uint64_t size = 0;
	int rc;
	while ((rc = pp_pb_next(&sub, &g, &err)) > 0) {
		if (g.num == 1)
			assert_int_equal(pp_pb_string(&g, &mt, &err), 0);
		else if (g.num == 2)
			assert_int_equal(pp_pb_string(&g, &dg, &err), 0);
		else if (g.num == 3)
			assert_int_equal(pp_pb_varint(&g, &size, &err), 0);
	}
	assert_int_equal(rc, 0);
	assert_string_equal(mt, "application/vnd.oci.image.layer.v1.tar+gzip");
	assert_string_equal(dg, "sha256:abc");
	assert_true(size == 12345);
	free(mt);
	free(dg);

	const uint8_t *k, *v;
	size_t kl, vl;
	assert_int_equal(pp_pb_next(&r, &f, &err), 1);
	assert_int_equal(f.num, 7);
	assert_int_equal(pp_pb_map_entry(&f, &k, &kl, &v, &vl, &err), 0);
	assert_int_equal(kl, strlen("containerd.io/gc.root"));
	assert_memory_equal(k, "containerd.io/gc.root", kl);
	assert_int_equal(vl, 4);
	assert_memory_equal(v, "2024", 4);
	assert_int_equal(pp_pb_next(&r, &f, &err), 1);
	assert_int_equal(pp_pb_map_entry(&f, &k, &kl, &v, &vl, &err), 0);
	assert_int_equal(kl, 5);
	assert_int_equal(vl, 0);
	assert_int_equal(pp_pb_next(&r, &f, &err), 0);
	pp_buf_free(&inner);
	pp_buf_free(&outer);
}

static void test_unknown_fields_skipped(void **state)
{
	/* A message with fields of every wire type around the one we want. */
	struct pp_buf b = {0};
	pp_pb_put_uint(&b, 15, 99);
	pp_pb_put_bytes(&b, 16, "\x01\x02\x03", 3);
	const uint8_t fixed64[] = {(13 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8};
	const uint8_t fixed32[] = {(14 << 3) | 5, 0xff, 0xff, 0xff, 0x7f};
	pp_buf_append(&b, fixed64, sizeof(fixed64));
	pp_buf_append(&b, fixed32, sizeof(fixed32));
	pp_pb_put_string(&b, 2, "wanted");
	pp_pb_put_uint(&b, 1000, 1);

	struct pp_pb_reader r;
	struct pp_pb_field f;
	struct pp_error err = {0};
	char *s = NULL;
	int rc;
	size_t n = 0;
	pp_pb_reader_init(&r, b.data, b.len);
	while ((rc = pp_pb_next(&r, &f, &err)) > 0) {
		n++;
		if (f.num == 2)
			assert_int_equal(pp_pb_string(&f, &s, &err), 0);
		if (f.num == 13)
			assert_true(f.u == 0x0807060504030201ULL);
		if (f.num == 14)
			assert_true(f.u == 0x7fffffffULL);
	}
	assert_int_equal(rc, 0);
	assert_int_equal(n, 6);
	assert_string_equal(s, "wanted");
	free(s);
	pp_buf_free(&b);
}

static void test_truncated_rejected(void **state)
{
	struct pp_buf b = {0}, inner = {0};
	pp_pb_put_string(&inner, 1, "hello");
	pp_pb_put_uint(&b, 1, 1ULL << 40);
	pp_pb_put_message(&b, 2, &inner);
	const uint8_t f64[] = {(3 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8};
	pp_buf_append(&b, f64, sizeof(f64));
	assert_int_equal(walk(b.data, b.len, NULL), 0);
	/* Every proper prefix that cuts a field is an error, never a read past
	 * the end (ASan watches); prefixes ending on a field boundary are fine. */
	size_t boundaries[] = {0, 7, 7 + 9, b.len};
	for (size_t cut = 0; cut < b.len; cut++) {
		uint8_t *copy = malloc(cut ? cut : 1);
		memcpy(copy, b.data, cut);
		bool boundary = false;
		for (size_t i = 0; i < sizeof(boundaries) / sizeof(boundaries[0]); i++)
			boundary |= boundaries[i] == cut;
		int rc = walk(copy, cut, NULL);
		if (boundary)
			assert_int_equal(rc, 0);
		else
			assert_int_equal(rc, PP_EPROTO);
		free(copy);
	}
	pp_buf_free(&b);
	pp_buf_free(&inner);
}

static void test_malformed_rejected(void **state)
{
	struct pp_error err = {0};
	/* field number 0 */
	assert_int_equal(walk("\x00\x01", 2, NULL), PP_EPROTO);
	/* groups (wire types 3, 4) and the undefined 6, 7 */
	assert_int_equal(walk("\x0b", 1, NULL), PP_EPROTO);
	assert_int_equal(walk("\x0c", 1, NULL), PP_EPROTO);
	assert_int_equal(walk("\x0e\x00", 2, NULL), PP_EPROTO);
	assert_int_equal(walk("\x0f\x00", 2, NULL), PP_EPROTO);
	/* a varint of 11 bytes, and one whose tenth byte overflows */
	assert_int_equal(walk("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12, NULL),
			 PP_EPROTO);
	assert_int_equal(walk("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02", 11, NULL), PP_EPROTO);
	/* the largest 10-byte varint is fine */
	assert_int_equal(walk("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11, NULL), 0);
	/* a length far past the end, and one that wraps a size_t */
	assert_int_equal(walk("\x12\x05"
			      "abc",
			      5, NULL),
			 PP_EPROTO);
	assert_int_equal(walk("\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11, NULL), PP_EPROTO);
	/* a field number above 2^29-1 */
	assert_int_equal(walk("\xf8\xff\xff\xff\xff\x01\x00", 7, NULL), PP_EPROTO);

	/* Type mismatches are errors, not misreads. */
	struct pp_pb_reader r;
	struct pp_pb_field f;
	char *s = NULL;
	uint64_t v;
	pp_pb_reader_init(&r, "\x08\x01", 2);
	assert_int_equal(pp_pb_next(&r, &f, &err), 1);
	assert_int_equal(pp_pb_string(&f, &s, &err), PP_EPROTO);
	assert_null(s);
	pp_pb_reader_init(&r, "\x0a\x01x", 3);
	assert_int_equal(pp_pb_next(&r, &f, &err), 1);
	assert_int_equal(pp_pb_varint(&f, &v, &err), PP_EPROTO);
	/* a NUL inside a string */
	pp_pb_reader_init(&r,
			  "\x0a\x03"
			  "a\0b",
			  5);
	assert_int_equal(pp_pb_next(&r, &f, &err), 1);
	assert_int_equal(pp_pb_string(&f, &s, &err), PP_EPROTO);
	/* a map entry whose key is a varint */
	pp_pb_reader_init(&r, "\x3a\x02\x08\x01", 4);
	assert_int_equal(pp_pb_next(&r, &f, &err), 1);
	const uint8_t *k, *val;
	size_t kl, vl;
	assert_int_equal(pp_pb_map_entry(&f, &k, &kl, &val, &vl, &err), PP_EPROTO);
	/* a nested message that is itself truncated */
	pp_pb_reader_init(&r, "\x0a\x02\x12\x05", 4);
	assert_int_equal(pp_pb_next(&r, &f, &err), 1);
	struct pp_pb_reader sub;
	assert_int_equal(pp_pb_sub(&f, &sub, &err), 0);
	assert_int_equal(pp_pb_next(&sub, &f, &err), PP_EPROTO);
	/* empty input is an empty message */
	assert_int_equal(walk(NULL, 0, NULL), 0);
}

static void test_grpc_frames(void **state)
{
	struct pp_buf body = {0};
	struct pp_error err = {0};
	pp_grpc_frame(&body, "abc", 3);
	pp_grpc_frame(&body, NULL, 0);
	pp_grpc_frame(&body, "hello", 5);
	assert_int_equal(body.len, 5 + 3 + 5 + 5 + 5);
	assert_memory_equal(body.data,
			    "\x00\x00\x00\x00\x03"
			    "abc",
			    8);
	size_t pos = 0;
	const uint8_t *msg;
	size_t len;
	assert_int_equal(pp_grpc_next_message(&body, &pos, &msg, &len, &err), 1);
	assert_int_equal(len, 3);
	assert_memory_equal(msg, "abc", 3);
	assert_int_equal(pp_grpc_next_message(&body, &pos, &msg, &len, &err), 1);
	assert_int_equal(len, 0);
	assert_int_equal(pp_grpc_next_message(&body, &pos, &msg, &len, &err), 1);
	assert_int_equal(len, 5);
	assert_int_equal(pp_grpc_next_message(&body, &pos, &msg, &len, &err), 0);

	/* truncated header, truncated body, compressed flag */
	struct pp_buf bad = {0};
	pp_buf_append(&bad, "\x00\x00\x00", 3);
	pos = 0;
	assert_int_equal(pp_grpc_next_message(&bad, &pos, &msg, &len, &err), PP_EPROTO);
	pp_buf_free(&bad);
	pp_buf_append(&bad,
		      "\x00\x00\x00\x00\x09"
		      "abc",
		      8);
	pos = 0;
	assert_int_equal(pp_grpc_next_message(&bad, &pos, &msg, &len, &err), PP_EPROTO);
	pp_buf_free(&bad);
	pp_buf_append(&bad,
		      "\x01\x00\x00\x00\x01"
		      "a",
		      6);
	pos = 0;
	assert_int_equal(pp_grpc_next_message(&bad, &pos, &msg, &len, &err), PP_EPROTO);
	pp_buf_free(&bad);
	pp_buf_append(&bad,
		      "\x00\xff\xff\xff\xff"
		      "a",
		      6);
	pos = 0;
	assert_int_equal(pp_grpc_next_message(&bad, &pos, &msg, &len, &err), PP_EPROTO);
	pp_buf_free(&bad);
	pp_buf_free(&body);

	assert_string_equal(pp_grpc_code_name(6), "ALREADY_EXISTS");
	assert_string_equal(pp_grpc_code_name(99), "UNKNOWN");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_varint_round_trip),
		cmocka_unit_test(test_known_encoding),
		cmocka_unit_test(test_nested_and_map_round_trip),
		cmocka_unit_test(test_unknown_fields_skipped),
		cmocka_unit_test(test_truncated_rejected),
		cmocka_unit_test(test_malformed_rejected),
		cmocka_unit_test(test_grpc_frames),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
