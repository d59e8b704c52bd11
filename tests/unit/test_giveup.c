/* The give-up rule (engine_gave_up): a blob fails at a failed request once
 * it has gone --give-up-after without progress, and progress is new bytes
 * with known hashes kept in the partial file, never bytes received and
 * then thrown away. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>

#include "engine_int.h"
#include "prepull/options.h"

#define MiB (1024 * 1024)

struct fixture {
	struct pp_options opts;
	struct pp_engine e;
	struct blob b;
};

static int setup(void **state)
{
	struct fixture *f = pp_xcalloc(1, sizeof(*f));
	f->opts = (struct pp_options){.connections = 4, .per_host = 4, .give_up_seconds = 5};
	f->e.opts = &f->opts;
	f->b.size = 4 * MiB;
	f->b.fd = f->b.jfd = -1;
	engine_plan_chunks(&f->e, &f->b, MiB);
	blob_set_state(&f->b, BLOB_RUNNING);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	pp_sha256_free(f->b.hash);
	pp_sha256_free(f->b.frontier);
	free(f->b.chunks);
	free(f);
	return 0;
}

/* Pretends the blob's last progress was `secs` ago. */
static void age(struct fixture *f, double secs)
{
	f->b.progress_at = pp_now() - secs;
}

static void test_no_progress_gives_up(void **state)
{
	struct fixture *f = *state;
	assert_false(engine_gave_up(&f->e, &f->b)); /* just started */
	age(f, 4.9);
	assert_false(engine_gave_up(&f->e, &f->b));
	age(f, 5.1);
	assert_true(engine_gave_up(&f->e, &f->b));
}

static void test_kept_bytes_are_progress(void **state)
{
	struct fixture *f = *state;
	age(f, 60);
	f->b.chunks[2].received = 1000; /* a failed request left 1000 bytes */
	assert_false(engine_gave_up(&f->e, &f->b));
	assert_int_equal(f->b.kept_max, 1000);
	/* A finished chunk is progress too. */
	age(f, 60);
	f->b.chunks[0].received = MiB;
	assert_false(engine_gave_up(&f->e, &f->b));
}

static void test_thrown_away_bytes_are_not(void **state)
{
	struct fixture *f = *state;
	f->b.chunks[0].received = 512 * 1024;
	assert_false(engine_gave_up(&f->e, &f->b));
	/* The stream broke and the server ignores Range: the blob starts
	 * over from byte 0 and brings the same bytes again, never more. */
	for (int round = 0; round < 3; round++) {
		f->b.chunks[0].received = 0;
		age(f, 10);
		f->b.chunks[0].received = 512 * 1024;
		assert_true(engine_gave_up(&f->e, &f->b));
	}
	/* Past what was kept before is progress again. */
	f->b.chunks[0].received = 512 * 1024 + 1;
	assert_false(engine_gave_up(&f->e, &f->b));
}

static void test_default_limit(void **state)
{
	struct fixture *f = *state;
	f->opts.give_up_seconds = 0; /* unset: the default, 2m */
	age(f, PP_DEFAULT_GIVE_UP_SECONDS - 1);
	assert_false(engine_gave_up(&f->e, &f->b));
	age(f, PP_DEFAULT_GIVE_UP_SECONDS + 1);
	assert_true(engine_gave_up(&f->e, &f->b));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_no_progress_gives_up, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kept_bytes_are_progress, setup, teardown),
		cmocka_unit_test_setup_teardown(test_thrown_away_bytes_are_not, setup, teardown),
		cmocka_unit_test_setup_teardown(test_default_limit, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
