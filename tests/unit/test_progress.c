/* What one image's row on the live display says, for each state it can be
 * in: queued (no rate, no ETA), downloading (rate and ETA), waiting,
 * unpacking (bytes in, the store still at it), done, failed. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "prepull/image.h"
#include "prepull/progress.h"
#include "progress_int.h"

#define MIB (1024 * 1024)

/* An image of 3 layers, 3 MiB in all. */
static struct pp_image image(void)
{
	struct pp_image img = {0};
	img.total_bytes = 3 * MIB;
	img.manifest.n_layers = 3;
	return img;
}

static const char *row(const struct pp_image *img, struct pp_image_progress ip, double rate,
		       double idle, bool registered)
{
	static char buf[256];
	return progress_image_row(buf, sizeof(buf), img, &ip, rate, idle, registered);
}

static void test_queued(void **state)
{
	(void)state;
	struct pp_image img = image();
	struct pp_image_progress ip = {.have = 0, .fetched = 0, .layers_unpacked = -1};
	assert_int_equal(progress_state_of(&img, &ip, 100, false), PROGRESS_QUEUED);
	assert_string_equal(row(&img, ip, 0, 100, false), "queued, 0 B of 3.0 MiB (0%)");
	/* Resumed bytes from an earlier run: still queued, with what is in. */
	ip.have = MIB;
	assert_string_equal(row(&img, ip, 0, 0, false), "queued, 1.0 MiB of 3.0 MiB (33%)");
	assert_null(strstr(row(&img, ip, 1e-3, 0, false), "ETA"));
}

static void test_downloading(void **state)
{
	(void)state;
	struct pp_image img = image();
	struct pp_image_progress ip = {.have = MIB, .fetched = MIB, .layers_unpacked = -1};
	assert_int_equal(progress_state_of(&img, &ip, 0.5, false), PROGRESS_DOWNLOADING);
	assert_string_equal(row(&img, ip, 2.0 * MIB, 0.5, false),
			    "1.0 MiB of 3.0 MiB (33%), 2.1 MB/s, ETA 1s");
	/* No byte for a while: waiting, not an ETA from a rate that decays. */
	assert_int_equal(progress_state_of(&img, &ip, PROGRESS_IDLE_SECONDS, false),
			 PROGRESS_WAITING);
	assert_string_equal(row(&img, ip, 10, 5, false), "waiting, 1.0 MiB of 3.0 MiB (33%)");
}

static void test_unpacking_while_downloading(void **state)
{
	(void)state;
	struct pp_image img = image();
	/* Layers 1 and 2 are in (and the store has them); it has unpacked one. */
	struct pp_image_progress ip = {
		.have = 2 * MIB, .fetched = 2 * MIB, .layers_in = 2, .layers_unpacked = 1};
	assert_string_equal(row(&img, ip, 1.0 * MIB, 0, false),
			    "2.0 MiB of 3.0 MiB (66%), 1.0 MB/s, ETA 1s, 1 layer unpacking");
	ip.layers_unpacked = 0;
	assert_string_equal(row(&img, ip, 1.0 * MIB, 0, false),
			    "2.0 MiB of 3.0 MiB (66%), 1.0 MB/s, ETA 1s, 2 layers unpacking");
	/* A store that does not unpack says nothing of it. */
	ip.layers_unpacked = -1;
	assert_string_equal(row(&img, ip, 1.0 * MIB, 0, false),
			    "2.0 MiB of 3.0 MiB (66%), 1.0 MB/s, ETA 1s");
}

static void test_unpacking_after_the_last_byte(void **state)
{
	(void)state;
	struct pp_image img = image();
	struct pp_image_progress ip = {
		.have = 3 * MIB, .fetched = 3 * MIB, .layers_in = 3, .layers_unpacked = 2};
	/* However long since the last byte: unpacking, neither done nor waiting. */
	assert_int_equal(progress_state_of(&img, &ip, 60, false), PROGRESS_UNPACKING);
	assert_string_equal(row(&img, ip, 0, 60, false), "all 3.0 MiB in, unpacking layer 3 of 3");
	ip.layers_unpacked = 3;
	assert_int_equal(progress_state_of(&img, &ip, 60, false), PROGRESS_DONE);
	assert_string_equal(row(&img, ip, 0, 60, false), "done");
	/* The store does not unpack: in is done. */
	ip.layers_unpacked = -1;
	assert_string_equal(row(&img, ip, 0, 60, false), "done");
	/* Bytes all in the store before the run (nothing fetched): still unpacking. */
	ip = (struct pp_image_progress){.have = 3 * MIB, .layers_in = 3, .layers_unpacked = 0};
	assert_string_equal(row(&img, ip, 0, 0, false), "all 3.0 MiB in, unpacking layer 1 of 3");
	/* Layers the store finds only when the image is registered (kept as
	 * snapshots, --discard-layers): nothing is unpacking them now. */
	ip = (struct pp_image_progress){.have = 3 * MIB, .layers_in = 0, .layers_unpacked = 0};
	assert_int_equal(progress_state_of(&img, &ip, 60, false), PROGRESS_DONE);
}

static void test_done_and_failed(void **state)
{
	(void)state;
	struct pp_image img = image();
	struct pp_image_progress ip = {.have = MIB, .fetched = MIB, .layers_unpacked = 0};
	assert_string_equal(row(&img, ip, 0, 0, true), "done");
	ip.failed = true;
	assert_string_equal(row(&img, ip, 0, 0, false), "failed");
	assert_string_equal(row(&img, ip, 0, 0, true), "failed");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_queued),
		cmocka_unit_test(test_downloading),
		cmocka_unit_test(test_unpacking_while_downloading),
		cmocka_unit_test(test_unpacking_after_the_last_byte),
		cmocka_unit_test(test_done_and_failed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
