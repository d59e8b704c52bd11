/* The size and duration parsers every option and config key goes through:
 * what they take, and that NaN, infinities and overflow are refused (a NaN
 * compares false with every bound, so a caller's range check would let it
 * through). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>

#include "prepull/util.h"

static void test_size(void **state)
{
	(void)state;
	assert_int_equal(pp_parse_size("1048576"), 1048576);
	assert_int_equal(pp_parse_size("4M"), 4 * 1024 * 1024);
	assert_int_equal(pp_parse_size("16MiB"), 16 * 1024 * 1024);
	assert_int_equal(pp_parse_size("512k"), 512 * 1024);
	assert_int_equal(pp_parse_size("1T"), 1LL << 40);
	assert_int_equal(pp_parse_size("2TiB"), 2LL << 40);
	assert_int_equal(pp_parse_size("1.5G"), 3LL << 29);
	assert_int_equal(pp_parse_size(""), -1);
	assert_int_equal(pp_parse_size("-1"), -1);
	assert_int_equal(pp_parse_size("12X"), -1);
}

static void test_size_not_a_number(void **state)
{
	(void)state;
	static const char *const bad[] = {"nan", "NaN",      "-nan", "nanM",  "nan(0x1)", "inf",
					  "INF", "infinity", "infG", "1e400", "0x10",     " 5"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		print_message("pp_parse_size(\"%s\")\n", bad[i]);
		assert_int_equal(pp_parse_size(bad[i]), -1);
	}
}

static void test_duration(void **state)
{
	(void)state;
	assert_true(pp_parse_duration("90") == 90);
	assert_true(pp_parse_duration("90s") == 90);
	assert_true(pp_parse_duration("5m") == 300);
	assert_true(pp_parse_duration("1h30m") == 5400);
	assert_true(pp_parse_duration("250ms") == 0.25);
	assert_true(pp_parse_duration("") == -1);
	assert_true(pp_parse_duration("5x") == -1);
}

static void test_duration_not_a_number(void **state)
{
	(void)state;
	static const char *const bad[] = {"nan",  "NAN",      "nans",  "-nan",  "1mnan", "inf",
					  "infs", "infinity", "1e400", "0x1p3", "nan(1)"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		double v = pp_parse_duration(bad[i]);
		print_message("pp_parse_duration(\"%s\") = %g\n", bad[i], v);
		assert_true(v == -1);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_size),
		cmocka_unit_test(test_size_not_a_number),
		cmocka_unit_test(test_duration),
		cmocka_unit_test(test_duration_not_a_number),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
