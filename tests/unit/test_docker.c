#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "prepull/digest.h"
#include "prepull/docker_api.h"
#include "prepull/error.h"
#include "prepull/tar_stream.h"
#include "prepull/util.h"

static void expect_msg(const struct pp_error *err, const char *needle)
{
	if (!strstr(err->msg, needle))
		fail_msg("message \"%s\" lacks \"%s\"", err->msg, needle);
}

static void test_messages_ok(void **state)
{
	const char s[] = "{\"stream\":\"Loading layer\\n\"}\r\n"
			 "{\"status\":\"Loading\",\"progressDetail\":{\"current\":1,\"total\":2}}\n"
			 "{\"stream\":\"Loaded image: x:1\\n\"}\r\n";
	struct pp_buf text = {0};
	struct pp_error err = {0};
	assert_int_equal(pp_docker_parse_messages(s, strlen(s), &text, &err), 0);
	assert_string_equal(text.data, "Loading layer\nLoaded image: x:1\n");
	pp_buf_free(&text);
}

static void test_messages_error(void **state)
{
	struct pp_error err = {0};
	const char a[] =
		"{\"stream\":\"Loading\\n\"}\n"
		"{\"errorDetail\":{\"message\":\"no space left\"},\"error\":\"no space left\"}\n"
		"{\"error\":\"second\"}\n";
	assert_int_equal(pp_docker_parse_messages(a, strlen(a), NULL, &err), PP_EGENERIC);
	assert_string_equal(err.msg, "no space left");
	/* errorDetail alone is enough */
	const char b[] = "{\"errorDetail\":{\"message\":\"detail only\"}}";
	assert_int_equal(pp_docker_parse_messages(b, strlen(b), NULL, &err), PP_EGENERIC);
	assert_string_equal(err.msg, "detail only");
	/* not JSON */
	const char c[] = "{\"stream\":\"a\"}\ngarbage\n";
	assert_int_equal(pp_docker_parse_messages(c, strlen(c), NULL, &err), PP_EPROTO);
	expect_msg(&err, "not JSON: garbage");
	/* control characters never reach a terminal */
	const char d[] = "{\"error\":\"evil\\u001b[2J\"}";
	assert_int_equal(pp_docker_parse_messages(d, strlen(d), NULL, &err), PP_EGENERIC);
	assert_null(strchr(err.msg, 0x1b));
}

static void test_versions(void **state)
{
	int a = 0, b = 0;
	assert_int_equal(pp_docker_parse_version("20.10.24+dfsg1", &a, &b), 0);
	assert_int_equal(a, 20);
	assert_int_equal(b, 10);
	assert_int_equal(pp_docker_parse_version("1.41", &a, &b), 0);
	assert_int_equal(a, 1);
	assert_int_equal(b, 41);
	assert_int_equal(pp_docker_parse_version("dev", &a, &b), -1);
	assert_int_equal(pp_docker_parse_version("", &a, &b), -1);
	assert_int_equal(pp_docker_parse_version(NULL, &a, &b), -1);
	assert_int_equal(pp_docker_parse_version("27", &a, &b), -1);
}

static void test_familiar_name(void **state)
{
	char *s = pp_docker_familiar_name("docker.io", "library/busybox");
	assert_string_equal(s, "busybox");
	free(s);
	s = pp_docker_familiar_name("docker.io", "user/app");
	assert_string_equal(s, "user/app");
	free(s);
	s = pp_docker_familiar_name("docker.io", "library/a/b");
	assert_string_equal(s, "library/a/b");
	free(s);
	s = pp_docker_familiar_name("127.0.0.1:5000", "test/x");
	assert_string_equal(s, "127.0.0.1:5000/test/x");
	free(s);
}

/* Test data: a pseudo-random but compressible buffer. */
static char *make_data(size_t n)
{
	char *p = pp_xmalloc(n);
	uint32_t x = 12345;
	for (size_t i = 0; i < n; i++) {
		x = x * 1103515245 + 12345;
		p[i] = (char)('a' + (x >> 16) % 8);
	}
	return p;
}

static char *write_temp(const void *data, size_t len)
{
	char *path = pp_xstrdup("/tmp/prepull-test-docker.XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
	return path;
}

/* A zstd file: one-shot (size in the frame header) or streamed in
 * several frames without sizes. */
static char *zstd_file(const char *data, size_t len, bool with_size)
{
	size_t cap = ZSTD_compressBound(len) * 2 + 64;
	char *out = pp_xmalloc(cap);
	size_t n = 0;
	if (with_size) {
		n = ZSTD_compress(out, cap, data, len, 3);
		assert_false(ZSTD_isError(n));
	} else {
		/* two frames of unknown size */
		for (int f = 0; f < 2; f++) {
			ZSTD_CCtx *c = ZSTD_createCCtx();
			ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 0);
			size_t half = len / 2, off = f ? half : 0, sz = f ? len - half : half;
			ZSTD_inBuffer in = {data + off, sz, 0};
			ZSTD_outBuffer o = {out + n, cap - n, 0};
			size_t r;
			while ((r = ZSTD_compressStream2(c, &o, &in, ZSTD_e_end)) != 0)
				assert_false(ZSTD_isError(r));
			n += o.pos;
			ZSTD_freeCCtx(c);
		}
	}
	char *path = write_temp(out, n);
	free(out);
	return path;
}

static void test_zstd_size(void **state)
{
	size_t len = 3 * 1024 * 1024 + 17;
	char *data = make_data(len);
	for (int with_size = 0; with_size < 2; with_size++) {
		char *path = zstd_file(data, len, with_size);
		assert_true(pp_file_is_zstd(path));
		int64_t size = 0;
		bool counted = false;
		struct pp_error err = {0};
		assert_int_equal(pp_zstd_content_size(path, &size, &counted, &err), 0);
		assert_int_equal(size, (int64_t)len);
		assert_int_equal(counted, !with_size);
		unlink(path);
		free(path);
	}
	char *plain = write_temp("\x1f\x8b\x08\x00", 4);
	assert_false(pp_file_is_zstd(plain));
	unlink(plain);
	free(plain);
	free(data);
}

/* Reads the whole stream in odd-sized pieces. */
static int drain(struct pp_tar_stream *t, struct pp_buf *out, struct pp_error *err)
{
	char buf[7777];
	for (;;) {
		ssize_t n = pp_tar_stream_read(t, buf, sizeof(buf), err);
		if (n < 0)
			return (int)n;
		if (n == 0)
			return 0;
		pp_buf_append(out, buf, (size_t)n);
	}
}

static void test_tar_stream(void **state)
{
	size_t len = 2 * 1024 * 1024 + 5;
	char *data = make_data(len);
	char digest[PP_DIGEST_STR_LEN + 1];
	pp_sha256_digest(data, len, digest);
	char *z1 = zstd_file(data, len, true);
	char *z2 = zstd_file(data, len, false);
	char *raw = write_temp(data, 1000);
	const char mem[] = "[{\"Config\":\"c\"}]";
	struct pp_tar_entry entries[] = {
		{.name = "raw", .source = PP_TAR_FILE, .path = raw},
		{.name = "z1", .source = PP_TAR_FILE_UNZSTD, .path = z1, .expect_digest = digest},
		{.name = "z2", .source = PP_TAR_FILE_UNZSTD, .path = z2},
		{.name = "empty", .source = PP_TAR_MEMORY, .data = "", .len = 0},
		{.name = "manifest.json", .source = PP_TAR_MEMORY, .data = mem, .len = strlen(mem)},
	};
	struct pp_tar_stream *t = NULL;
	struct pp_error err = {0};
	assert_int_equal(pp_tar_stream_new(&t, entries, 5, &err), 0);
	struct pp_buf out = {0};
	assert_int_equal(drain(t, &out, &err), 0);
	assert_int_equal(pp_tar_stream_offset(t), (int64_t)out.len);
	pp_tar_stream_free(t);

	/* libarchive reads back what was meant. */
	struct archive *a = archive_read_new();
	archive_read_support_format_tar(a);
	assert_int_equal(archive_read_open_memory(a, out.data, out.len), ARCHIVE_OK);
	struct archive_entry *ae;
	const struct {
		const char *name;
		const void *data;
		size_t len;
	} want[] = {{"raw", data, 1000},
		    {"z1", data, len},
		    {"z2", data, len},
		    {"empty", "", 0},
		    {"manifest.json", mem, strlen(mem)}};
	char *got = pp_xmalloc(len + 1);
	for (size_t i = 0; i < 5; i++) {
		assert_int_equal(archive_read_next_header(a, &ae), ARCHIVE_OK);
		assert_string_equal(archive_entry_pathname(ae), want[i].name);
		assert_int_equal(archive_entry_size(ae), (int64_t)want[i].len);
		size_t n = 0;
		la_ssize_t k;
		while ((k = archive_read_data(a, got + n, len + 1 - n)) > 0)
			n += (size_t)k;
		assert_int_equal(n, want[i].len);
		assert_memory_equal(got, want[i].data, n);
	}
	assert_int_equal(archive_read_next_header(a, &ae), ARCHIVE_EOF);
	archive_read_free(a);
	free(got);
	pp_buf_free(&out);

	/* A DiffID that does not match fails the stream. */
	struct pp_tar_entry bad[] = {
		{.name = "z",
		 .source = PP_TAR_FILE_UNZSTD,
		 .path = z2,
		 .expect_digest =
			 "sha256:"
			 "0000000000000000000000000000000000000000000000000000000000000000"},
	};
	assert_int_equal(pp_tar_stream_new(&t, bad, 1, &err), 0);
	assert_int_equal(drain(t, &out, &err), PP_EDIGEST);
	expect_msg(&err, "decompressed content hashes to");
	assert_true(out.len < len);
	pp_tar_stream_free(t);
	pp_buf_free(&out);

	unlink(z1);
	unlink(z2);
	unlink(raw);
	free(z1);
	free(z2);
	free(raw);
	free(data);
}

static void test_zstd_truncated(void **state)
{
	size_t len = 1024 * 1024;
	char *data = make_data(len);
	char *z = zstd_file(data, len, false);
	/* cut it inside the first frame */
	FILE *f = fopen(z, "r+");
	fseek(f, 0, SEEK_END);
	long sz = ftell(f);
	assert_int_equal(ftruncate(fileno(f), sz / 3), 0);
	fclose(f);
	int64_t size = 0;
	bool counted = false;
	struct pp_error err = {0};
	assert_int_equal(pp_zstd_content_size(z, &size, &counted, &err), PP_EDIGEST);
	expect_msg(&err, "truncated");
	unlink(z);
	free(z);
	free(data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_messages_ok),    cmocka_unit_test(test_messages_error),
		cmocka_unit_test(test_versions),       cmocka_unit_test(test_familiar_name),
		cmocka_unit_test(test_zstd_size),      cmocka_unit_test(test_tar_stream),
		cmocka_unit_test(test_zstd_truncated),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
