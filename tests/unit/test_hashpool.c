/* The hash workers: hashes fed from a file in slices on worker threads
 * come out as the one-shot digest of the same bytes, two at once, many
 * in parallel, urgent or not; a read error is left in the hash; the
 * owner's calls wait for the worker; a cancel leaves no job on a file
 * and cuts a running one short.  Built with ThreadSanitizer too
 * (scripts/test.sh). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hashpool.h"
#include "prepull/digest.h"
#include "prepull/util.h"

#define MiB (1024 * 1024)

static atomic_int wakes;

static void count_wake(void *ctx)
{
	(void)ctx;
	atomic_fetch_add(&wakes, 1);
}

/* A file of `size` random bytes; the bytes stay in *data. */
static int random_file(char *path, int64_t size, unsigned char **data)
{
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	*data = pp_xmalloc((size_t)size);
	for (int64_t i = 0; i < size; i++)
		(*data)[i] = (unsigned char)rand();
	assert_int_equal(pwrite(fd, *data, (size_t)size, 0), size);
	return fd;
}

static void test_same_digests(void **state)
{
	(void)state;
	char path[] = "/tmp/prepull-test-hashpool-XXXXXX";
	const int64_t size = 2 * MiB + 12345;
	unsigned char *data;
	int fd = random_file(path, size, &data);
	char want[PP_DIGEST_STR_LEN + 1], got[PP_DIGEST_STR_LEN + 1];
	pp_sha256_digest(data, (size_t)size, want);

	struct hashpool *p = hashpool_new(3, count_wake, NULL);
	enum { N = 12 };
	struct pp_sha256 *h[N];
	for (int i = 0; i < N; i++)
		h[i] = pp_sha256_new();
	/* Every hash takes the file in slices of its own sizes, posted as
	 * the last one is through, all of them at once. */
	int64_t posts = 0;
	for (bool more = true; more;) {
		more = false;
		bool waiting = false;
		for (int i = 0; i < N; i++) {
			if (pp_sha256_busy(h[i])) {
				more = waiting = true;
				continue;
			}
			int64_t fed = pp_sha256_fed(h[i]);
			if (fed == size)
				continue;
			int64_t to = fed + 1 + rand() % ((i + 1) * 100000);
			hashpool_post(p, fd, fed, to > size ? size : to, h[i], NULL, i % 3 == 0);
			posts++;
			more = true;
		}
		if (waiting)
			usleep(200); /* leave the cores to the workers */
	}
	for (int i = 0; i < N; i++) {
		assert_int_equal(pp_sha256_error(h[i]), 0);
		pp_sha256_final(h[i], got);
		assert_string_equal(got, want);
	}
	/* One read into two hashes, and the owner's final waits for it. */
	hashpool_post(p, fd, 0, size, h[0], h[1], false);
	pp_sha256_final(h[0], got);
	assert_string_equal(got, want);
	pp_sha256_final(h[1], got);
	assert_string_equal(got, want);
	assert_int_equal(hashpool_bytes(p), N * size + 2 * size);
	assert_true(hashpool_cpu_seconds(p) > 0);
	hashpool_free(p);
	assert_true(atomic_load(&wakes) >= posts + 1);
	for (int i = 0; i < N; i++)
		pp_sha256_free(h[i]);
	close(fd);
	unlink(path);
	free(data);
}

static void test_read_error(void **state)
{
	(void)state;
	char path[] = "/tmp/prepull-test-hashpool-XXXXXX";
	unsigned char *data;
	int fd = random_file(path, 1000, &data);
	struct hashpool *p = hashpool_new(1, count_wake, NULL);
	struct pp_sha256 *h = pp_sha256_new();
	hashpool_post(p, fd, 0, 5000, h, NULL, true); /* the file is shorter */
	pp_sha256_wait(h);
	assert_int_equal(pp_sha256_error(h), EIO);
	assert_int_equal(pp_sha256_fed(h), 1000);
	hashpool_free(p);
	pp_sha256_free(h);
	close(fd);
	unlink(path);
	free(data);
}

/* Cancelled jobs on a file are dropped, cut short at a read (a MiB) or
 * done by the time the call returns: their hashes are free, and no worker
 * reads the file after. */
static void test_cancel(void **state)
{
	(void)state;
	char path[] = "/tmp/prepull-test-hashpool-XXXXXX";
	const int64_t size = 2 * MiB;
	unsigned char *data;
	int fd = random_file(path, size, &data);
	struct hashpool *p = hashpool_new(1, count_wake, NULL);
	enum { N = 8 };
	struct pp_sha256 *h[N];
	for (int i = 0; i < N; i++) {
		h[i] = pp_sha256_new();
		hashpool_post(p, fd, 0, size, h[i], NULL, false);
	}
	hashpool_cancel(p, fd);
	close(fd);
	for (int i = 0; i < N; i++) {
		assert_false(pp_sha256_busy(h[i]));
		assert_int_equal(pp_sha256_error(h[i]), 0);
		int64_t fed = pp_sha256_fed(h[i]);
		assert_true(fed >= 0 && fed <= size && fed % MiB == 0);
		pp_sha256_free(h[i]);
	}
	hashpool_free(p);
	unlink(path);
	free(data);
}

/* A long job that is running when its file is cancelled stops at its next
 * read, not at its end: a close does not wait for a blob-hash job of
 * HASH_JOB_MAX.  (A GiB of a sparse file: about 0.6 s to hash whole.) */
static void test_cancel_cuts_running(void **state)
{
	(void)state;
	char path[] = "/tmp/prepull-test-hashpool-XXXXXX";
	const int64_t size = 1024LL * MiB;
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, size), 0);
	struct hashpool *p = hashpool_new(1, count_wake, NULL);
	struct pp_sha256 *h = pp_sha256_new();
	hashpool_post(p, fd, 0, size, h, NULL, true);
	while (pp_sha256_fed(h) == 0)
		usleep(1000);
	hashpool_cancel(p, fd);
	assert_false(pp_sha256_busy(h));
	assert_int_equal(pp_sha256_error(h), 0);
	int64_t fed = pp_sha256_fed(h);
	assert_true(fed > 0 && fed < size && fed % MiB == 0);
	pp_sha256_free(h);
	hashpool_free(p);
	close(fd);
	unlink(path);
}

static void test_default_threads(void **state)
{
	(void)state;
	int n = hashpool_default_threads();
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	assert_true(n >= 1 && n <= 4);
	assert_true(n == 1 || n == cores - 1 || n == 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_same_digests),    cmocka_unit_test(test_read_error),
		cmocka_unit_test(test_cancel),          cmocka_unit_test(test_cancel_cuts_running),
		cmocka_unit_test(test_default_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
