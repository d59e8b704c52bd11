/* The sanitiser that stands between a server's bytes and every line and
 * JSON event prepull prints (pp_sanitize, and pp_error_* which use it). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "prepull/error.h"
#include "prepull/sanitize.h"
#include "prepull/util.h"

static const char *san(const char *in)
{
	static char buf[512];
	return pp_sanitize(buf, sizeof(buf), in, strlen(in));
}

/* No byte below 0x20 or DEL, valid UTF-8 as jansson sees it, and stable. */
static void assert_clean(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		assert_true(*p >= 0x20 && *p != 0x7f);
	json_t *j = json_string(s);
	assert_non_null(j);
	json_decref(j);
	assert_true(pp_is_sanitized(s));
	char again[2048];
	assert_string_equal(pp_sanitize(again, sizeof(again), s, strlen(s)), s);
}

static void test_kept(void **state)
{
	(void)state;
	assert_string_equal(san("plain ASCII, with \\ and \"quotes\""),
			    "plain ASCII, with \\ and \"quotes\"");
	/* Valid UTF-8 text stays readable: é, 日本, an emoji. */
	assert_string_equal(san("caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80"),
			    "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80");
	assert_true(pp_is_sanitized("caf\xc3\xa9"));
	assert_string_equal(san(""), "");
}

static void test_escaped(void **state)
{
	(void)state;
	/* The reported case: a Latin-1 byte, then a colour escape sequence. */
	assert_string_equal(san("Bearer \xe9\x1b[31m"), "Bearer \\xe9\\x1b[31m");
	assert_string_equal(san("a\nb\rc\td\x7f"), "a\\x0ab\\x0dc\\x09d\\x7f");
	assert_string_equal(san("\xc0\xaf"), "\\xc0\\xaf");                   /* overlong '/' */
	assert_string_equal(san("\xed\xa0\x80"), "\\xed\\xa0\\x80");          /* a surrogate */
	assert_string_equal(san("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80"); /* > U+10FFFF */
	assert_string_equal(san("x\xe6\x97"), "x\\xe6\\x97");                 /* cut short */
	assert_string_equal(san("\x80z"), "\\x80z");     /* stray continuation */
	assert_string_equal(san("\xc2\x9b"), "\\u009b"); /* C1 CSI */
	assert_string_equal(san("ab\xe2\x80\xae"
				"cd"),
			    "ab\\u202ecd");                  /* bidi override */
	assert_string_equal(san("\xe2\x80\xa8"), "\\u2028"); /* line separator */
	assert_false(pp_is_sanitized("\x1b[0m"));
	assert_false(pp_is_sanitized("\xe9"));
	assert_clean(san("Bearer \xe9\x1b[31m\xc2\x9b\xe2\x80\xae"));
}

/* Cut at a character boundary, with "..." that fits in the buffer. */
static void test_cut(void **state)
{
	(void)state;
	char buf[10];
	assert_string_equal(pp_sanitize(buf, sizeof(buf), "abcdefghijkl", 12), "abcdef...");
	assert_string_equal(pp_sanitize(buf, sizeof(buf), "abcdefghi", 9), "abcdefghi");
	/* An escape is never cut in two... */
	assert_string_equal(pp_sanitize(buf, sizeof(buf), "abc\x1b\x1b\x1b", 6), "abc...");
	/* ...nor a multi-byte character. */
	assert_string_equal(pp_sanitize(buf, sizeof(buf), "abcd\xe6\x97\xa5\xe6\x97\xa5", 10),
			    "abcd...");
	/* len bounds what is read: no NUL is needed within it. */
	assert_string_equal(pp_sanitize(buf, sizeof(buf), "abcdef", 3), "abc");
	char tiny[4];
	assert_string_equal(pp_sanitize(tiny, sizeof(tiny), "abcdef", 6), "...");
	char *d = pp_sanitize_dup("\x1b\x1b\x1b\x1b");
	assert_string_equal(d, "\\x1b\\x1b\\x1b\\x1b"); /* the dup is never cut */
	free(d);
	d = pp_sanitize_dup(NULL);
	assert_string_equal(d, "");
	free(d);
}

/* Random bytes: whatever comes in, what comes out prints and encodes. */
static void test_random(void **state)
{
	(void)state;
	srand(12345);
	for (int i = 0; i < 20000; i++) {
		unsigned char in[65];
		size_t len = (size_t)(rand() % 64);
		for (size_t k = 0; k < len; k++) {
			int r = rand() % 4;
			/* Bias towards lead and continuation bytes and controls. */
			in[k] = (unsigned char)(r == 0   ? 0x80 + rand() % 0x80
						: r == 1 ? 0xc0 + rand() % 0x40
						: r == 2 ? rand() % 0x20
							 : rand() % 0x100);
			if (!in[k])
				in[k] = 'x';
		}
		in[len] = '\0';
		char out[80];
		pp_sanitize(out, sizeof(out), (const char *)in, len);
		assert_true(strlen(out) < sizeof(out));
		assert_clean(out);
		char *d = pp_sanitize_dup((const char *)in);
		assert_clean(d);
		free(d);
	}
}

/* pp_error_* clean the message they format, also where formatting or a
 * prefix cut a character in two. */
static void test_error_messages(void **state)
{
	(void)state;
	struct pp_error err = {0};
	pp_error_set(&err, PP_EAUTH, "malformed header %s", "Bearer \xe9\x1b[31m");
	assert_string_equal(err.msg, "malformed header Bearer \\xe9\\x1b[31m");
	assert_int_equal(err.code, PP_EAUTH);
	pp_error_wrap(&err, "registry %s", "r\x1b");
	assert_string_equal(err.msg, "registry r\\x1b: malformed header Bearer \\xe9\\x1b[31m");

	/* A message of 3-byte characters cut by vsnprintf and by wrapping. */
	char big[3 * 400 + 1];
	for (int i = 0; i < 400; i++)
		memcpy(big + 3 * i, "\xe6\x97\xa5", 3);
	big[sizeof(big) - 1] = '\0';
	pp_error_set(&err, PP_EPROTO, "x%s", big);
	assert_clean(err.msg);
	for (int i = 0; i < 5; i++) {
		pp_error_wrap(&err, "%s", "\xe6\x97\xa5\xe6\x97\xa5 prefix");
		assert_clean(err.msg);
	}
	errno = ENOENT;
	pp_error_errno(&err, "open %s", "/tmp/\x1b]0;title\x07");
	assert_string_equal(err.msg, "open /tmp/\\x1b]0;title\\x07: No such file or directory");
}

/* A symlink at the path is replaced, its target untouched; the file is 0644. */
static void test_write_atomic_symlink(void **state)
{
	(void)state;
	char dir[] = "/tmp/prepull-test-util-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char victim[256], path[256];
	snprintf(victim, sizeof(victim), "%s/victim", dir);
	snprintf(path, sizeof(path), "%s/index.json", dir);
	FILE *f = fopen(victim, "w");
	assert_non_null(f);
	fputs("precious", f);
	fclose(f);
	assert_int_equal(symlink(victim, path), 0);
	struct pp_error err = {0};
	assert_int_equal(pp_write_file_atomic(path, "new", 3, &err), 0);
	struct stat st;
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0644);
	char buf[32] = {0};
	f = fopen(victim, "r");
	assert_non_null(f);
	assert_non_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	assert_string_equal(buf, "precious");
	unlink(path);
	unlink(victim);
	assert_int_equal(rmdir(dir), 0); /* no temp file left behind */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kept),
		cmocka_unit_test(test_escaped),
		cmocka_unit_test(test_cut),
		cmocka_unit_test(test_random),
		cmocka_unit_test(test_error_messages),
		cmocka_unit_test(test_write_atomic_symlink),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
