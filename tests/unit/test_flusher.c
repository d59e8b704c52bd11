/* The flush thread: a posted fd is flushed on the thread; a flush that
 * failed hands its errno to the next forget of that fd, once, and to no
 * other fd; a forget drops a queued flush and waits for a running one,
 * so none runs after it; NULL is accepted everywhere.
 * Built with ThreadSanitizer too (scripts/test.sh). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "flusher.h"

/* Waits up to 10 s for the thread to have done `n` flushes. */
static int wait_flushes(struct flusher *f, int n)
{
	int done = 0;
	double secs;
	for (int i = 0; i < 10000; i++) {
		flusher_stats(f, &done, &secs);
		if (done >= n)
			break;
		usleep(1000);
	}
	return done;
}

static int temp_file(void)
{
	char path[] = "/tmp/prepull-flusher-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(write(fd, "bytes", 5), 5);
	return fd;
}

static void test_flushes_and_forgets(void **state)
{
	(void)state;
	struct flusher *f = flusher_new();
	assert_non_null(f);
	int fd = temp_file();
	flusher_post(f, fd);
	assert_int_equal(wait_flushes(f, 1), 1);
	assert_int_equal(flusher_forget(f, fd), 0);
	/* Posted again and again: after the forget, no flush of it runs or
	 * waits, so the fd may be closed. */
	for (int i = 0; i < 100; i++)
		flusher_post(f, fd);
	assert_int_equal(flusher_forget(f, fd), 0);
	int before, after;
	double secs;
	flusher_stats(f, &before, &secs);
	usleep(20000);
	flusher_stats(f, &after, &secs);
	assert_int_equal(before, after);
	close(fd);
	flusher_free(f);
}

static void test_error_handed_back_once(void **state)
{
	(void)state;
	struct flusher *f = flusher_new();
	assert_non_null(f);
	int p[2];
	assert_int_equal(pipe(p), 0); /* fdatasync on a pipe fails with EINVAL */
	int good = temp_file();
	flusher_post(f, p[0]);
	assert_int_equal(wait_flushes(f, 1), 1);
	flusher_post(f, good);
	assert_int_equal(wait_flushes(f, 2), 2);
	assert_int_equal(flusher_forget(f, good), 0); /* not another fd's error */
	assert_int_equal(flusher_forget(f, p[0]), EINVAL);
	assert_int_equal(flusher_forget(f, p[0]), 0); /* once */
	close(p[0]);
	close(p[1]);
	close(good);
	flusher_free(f);
}

static void test_many_fds(void **state)
{
	(void)state;
	struct flusher *f = flusher_new();
	assert_non_null(f);
	enum { N = 80 }; /* more than the queue holds */
	int fds[N];
	for (int i = 0; i < N; i++)
		fds[i] = temp_file();
	for (int i = 0; i < N; i++)
		flusher_post(f, fds[i]);
	/* Every forget leaves no flush of its fd behind, queued or running. */
	for (int i = N - 1; i >= 0; i--) {
		assert_int_equal(flusher_forget(f, fds[i]), 0);
		close(fds[i]);
	}
	flusher_free(f);
}

static void test_null(void **state)
{
	(void)state;
	int n = -1;
	double secs = -1;
	flusher_post(NULL, 3);
	assert_int_equal(flusher_forget(NULL, 3), 0);
	flusher_stats(NULL, &n, &secs);
	assert_int_equal(n, 0);
	flusher_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_flushes_and_forgets),
		cmocka_unit_test(test_error_handed_back_once),
		cmocka_unit_test(test_many_fds),
		cmocka_unit_test(test_null),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
