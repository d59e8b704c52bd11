#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "prepull/error.h"
#include "prepull/journal.h"

#define BLOB "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D_A "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define D_B "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define D_C "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"

/* A journal of a 3-chunk blob (chunks of 100 bytes, the last of 50). */
static char *new_journal(int *fd)
{
	char *path = strdup("/tmp/prepull-test-journal-XXXXXX");
	int tmp = mkstemp(path);
	assert_true(tmp >= 0);
	close(tmp);
	struct pp_error err = {0};
	assert_int_equal(pp_journal_create(fd, path, BLOB, 250, 100, &err), 0);
	return path;
}

static void test_round_trip(void **state)
{
	(void)state;
	int fd;
	char *path = new_journal(&fd);
	struct pp_error err = {0};
	assert_int_equal(pp_journal_append_part(fd, path, 0, 40, D_A, &err), 0);
	assert_int_equal(pp_journal_append_done(fd, path, 0, D_B, &err), 0);
	assert_int_equal(pp_journal_append_part(fd, path, 2, 10, D_C, &err), 0);
	close(fd);
	struct pp_journal j = {0};
	assert_int_equal(pp_journal_load(&j, path, &err), 0);
	assert_string_equal(j.digest, BLOB);
	assert_int_equal(j.size, 250);
	assert_int_equal(j.chunk_size, 100);
	assert_int_equal(j.n_chunks, 3);
	assert_string_equal(j.chunks[0].done, D_B); /* done after part: done */
	assert_int_equal(j.chunks[0].part_len, 0);
	assert_string_equal(j.chunks[1].done, "");
	assert_int_equal(j.chunks[1].part_len, 0);
	assert_string_equal(j.chunks[2].done, "");
	assert_int_equal(j.chunks[2].part_len, 10);
	assert_string_equal(j.chunks[2].part, D_C);
	pp_journal_free(&j);
	unlink(path);
	free(path);
}

/* A repair fetches a done chunk again: its checkpoints come after the
 * `done` line and must win, since the bytes on disk are changing; a new
 * `done` line then wins over them. */
static void test_later_line_wins(void **state)
{
	(void)state;
	int fd;
	char *path = new_journal(&fd);
	struct pp_error err = {0};
	assert_int_equal(pp_journal_append_done(fd, path, 0, D_A, &err), 0);
	assert_int_equal(pp_journal_append_done(fd, path, 1, D_A, &err), 0);
	assert_int_equal(pp_journal_append_part(fd, path, 0, 60, D_B, &err), 0);
	assert_int_equal(pp_journal_append_part(fd, path, 1, 60, D_B, &err), 0);
	assert_int_equal(pp_journal_append_done(fd, path, 1, D_C, &err), 0);
	close(fd);
	struct pp_journal j = {0};
	assert_int_equal(pp_journal_load(&j, path, &err), 0);
	assert_string_equal(j.chunks[0].done, "");
	assert_int_equal(j.chunks[0].part_len, 60);
	assert_string_equal(j.chunks[0].part, D_B);
	assert_string_equal(j.chunks[1].done, D_C);
	assert_int_equal(j.chunks[1].part_len, 0);
	pp_journal_free(&j);
	unlink(path);
	free(path);
}

/* A torn last line and lines that name no chunk are skipped. */
static void test_torn_and_bad_lines(void **state)
{
	(void)state;
	int fd;
	char *path = new_journal(&fd);
	struct pp_error err = {0};
	assert_int_equal(pp_journal_append_done(fd, path, 0, D_A, &err), 0);
	const char junk[] = "done 7 " D_B "\npart 1 100 " D_B "\ndone 1 sha256:abc\ndone 2 " D_C;
	assert_int_equal(write(fd, junk, sizeof(junk) - 1), (ssize_t)(sizeof(junk) - 1));
	close(fd);
	struct pp_journal j = {0};
	assert_int_equal(pp_journal_load(&j, path, &err), 0);
	assert_string_equal(j.chunks[0].done, D_A);
	assert_string_equal(j.chunks[1].done, "");
	assert_int_equal(j.chunks[1].part_len, 0); /* a part as long as the chunk is no part */
	assert_string_equal(j.chunks[2].done, ""); /* no newline: torn */
	pp_journal_free(&j);
	unlink(path);
	free(path);
}

/* A header whose numbers would overflow the chunk count is refused (the
 * blob then starts over), not trusted. */
static void test_absurd_header(void **state)
{
	(void)state;
	const char *bad[] = {
		"prepull-journal 1 " BLOB " 250 9223372036854775799\n",
		"prepull-journal 1 " BLOB " 250 0\n",
		"prepull-journal 1 " BLOB " 2199023255553 1048576\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char path[] = "/tmp/prepull-test-journal-XXXXXX";
		int fd = mkstemp(path);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, bad[i], strlen(bad[i])), (ssize_t)strlen(bad[i]));
		close(fd);
		struct pp_journal j = {0};
		struct pp_error err = {0};
		assert_true(pp_journal_load(&j, path, &err) < 0);
		assert_non_null(strstr(err.msg, "malformed header"));
		pp_journal_free(&j);
		unlink(path);
	}
}

/* Negative numbers are refused: in the header the journal is not trusted
 * at all; a line with a negative chunk index or length is skipped. */
static void test_negative_numbers(void **state)
{
	(void)state;
	const char *bad[] = {
		"prepull-journal 1 " BLOB " -250 100\n",
		"prepull-journal 1 " BLOB " 250 -100\n",
		"prepull-journal 1 " BLOB " -0 100\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct pp_journal j = {0};
		struct pp_error err = {0};
		assert_true(pp_journal_parse(&j, bad[i], strlen(bad[i]), &err) < 0);
		assert_non_null(strstr(err.msg, "malformed header"));
		pp_journal_free(&j);
	}
	const char lines[] = "prepull-journal 1 " BLOB " 250 100\n"
			     "part 1 -5 " D_B "\n"
			     "done -1 " D_A "\n"
			     "part -2 10 " D_C "\n"
			     "done 2 " D_C "\n";
	struct pp_journal j = {0};
	struct pp_error err = {0};
	assert_int_equal(pp_journal_parse(&j, lines, sizeof(lines) - 1, &err), 0);
	assert_int_equal(j.size, 250);
	assert_int_equal(j.n_chunks, 3);
	for (size_t i = 0; i < 2; i++) {
		assert_string_equal(j.chunks[i].done, "");
		assert_int_equal(j.chunks[i].part_len, 0);
	}
	assert_string_equal(j.chunks[2].done, D_C);
	pp_journal_free(&j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),         cmocka_unit_test(test_later_line_wins),
		cmocka_unit_test(test_torn_and_bad_lines), cmocka_unit_test(test_absurd_header),
		cmocka_unit_test(test_negative_numbers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
