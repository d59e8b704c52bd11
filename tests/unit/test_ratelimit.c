#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "prepull/error.h"
#include "prepull/http.h"
#include "prepull/util.h"

/* Feeds header lines to the capture callback, as curl would. */
static void feed(struct pp_http_response *r, const char *const *lines)
{
	for (; *lines; lines++)
		pp_http_header_cb((char *)*lines, 1, strlen(*lines), r);
}

static void test_docker_hub_429(void **state)
{
	(void)state;
	struct pp_http_response r = {.retry_after = -1};
	const char *lines[] = {"HTTP/1.1 429 Too Many Requests\r\n",
			       "ratelimit-limit: 100;w=21600\r\n",
			       "ratelimit-remaining: 0;w=21600\r\n", "Retry-After: 60\r\n", NULL};
	feed(&r, lines);
	struct pp_error err = {0};
	pp_http_status_error(&err, &r);
	assert_string_equal(err.msg,
			    "HTTP 429 (rate limit: 100 per 21600 s, 0 left, retry after 60 s)");
	pp_http_response_reset(&r);
}

static void test_other_shapes(void **state)
{
	(void)state;
	struct pp_http_response r = {.retry_after = -1};
	const char *no_window[] = {"HTTP/1.1 429 Too Many Requests\r\n", "RateLimit-Limit: 200\r\n",
				   NULL};
	feed(&r, no_window);
	struct pp_error err = {0};
	pp_http_status_error(&err, &r);
	assert_string_equal(err.msg, "HTTP 429 (rate limit: 200)");
	/* Not a 429, or no number: nothing added. */
	const char *ok[] = {"HTTP/1.1 503 Unavailable\r\n", "RateLimit-Limit: 200\r\n", NULL};
	feed(&r, ok);
	pp_http_status_error(&err, &r);
	assert_string_equal(err.msg, "HTTP 503");
	const char *junk[] = {"HTTP/1.1 429 x\r\n", "RateLimit-Limit: lots\r\n", NULL};
	feed(&r, junk);
	pp_http_status_error(&err, &r);
	assert_string_equal(err.msg, "HTTP 429");
	pp_http_response_reset(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_docker_hub_429),
		cmocka_unit_test(test_other_shapes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
