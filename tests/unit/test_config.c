#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prepull/config.h"
#include "prepull/error.h"
#include "prepull/options.h"

static struct pp_options defaults(void)
{
	struct pp_options o = {
		.store = "auto",
		.namespace = "k8s.io",
		.connections = PP_DEFAULT_CONNECTIONS,
		.auto_connections = true,
		.max_connections = PP_DEFAULT_MAX_CONNECTIONS,
		.stall_seconds = PP_DEFAULT_STALL_SECONDS,
	};
	return o;
}

static int parse(struct pp_config *cfg, struct pp_options *o, const char *text,
		 struct pp_error *err)
{
	return pp_config_parse(cfg, "/etc/prepull/config.json", text, strlen(text), o, err);
}

static void test_every_key(void **state)
{
	(void)state;
	struct pp_options o = defaults();
	struct pp_config cfg;
	struct pp_error err = {0};
	const char *text =
		"{\"images\": [\"a.example/x:1\", \"busybox\"], \"store\": \"oci:/s\","
		" \"namespace\": \"ns\", \"snapshotter\": \"native\","
		" \"platform\": \"linux/arm64\", \"connections\": 32, \"per_host\": 8,"
		" \"max_connections\": 40,"
		" \"chunk_size\": \"8M\", \"state_dir\": \"/st\", \"deadline\": \"10m\","
		" \"stall_timeout\": 45, \"ready_file\": \"/run/r\", \"plain_http\": true,"
		" \"insecure\": false, \"cache_fill\": \"bypass\"}";
	assert_int_equal(parse(&cfg, &o, text, &err), 0);
	assert_int_equal(cfg.n_images, 2);
	assert_string_equal(cfg.images[0], "a.example/x:1");
	assert_string_equal(cfg.images[1], "busybox");
	assert_string_equal(o.store, "oci:/s");
	assert_string_equal(o.namespace, "ns");
	assert_string_equal(o.snapshotter, "native");
	assert_string_equal(o.platform.arch, "arm64");
	assert_int_equal(o.connections, 32);
	assert_false(o.auto_connections); /* "connections" fixes the count, as -j does */
	assert_int_equal(o.max_connections, 40);
	assert_int_equal(o.per_host, 8);
	assert_int_equal(o.chunk_size, 8 << 20);
	assert_string_equal(o.state_dir, "/st");
	assert_true(o.deadline == 600);
	assert_true(o.stall_seconds == 45);
	assert_string_equal(o.ready_file, "/run/r");
	assert_true(o.plain_http);
	assert_false(o.insecure);
	assert_true(o.cache_fill_bypass);
	pp_config_free(&cfg);
}

static void test_numbers_and_absent_keys(void **state)
{
	(void)state;
	struct pp_options o = defaults();
	struct pp_config cfg;
	struct pp_error err = {0};
	assert_int_equal(parse(&cfg, &o, "{\"chunk_size\": 1048576, \"deadline\": 90.5}", &err), 0);
	assert_int_equal(o.chunk_size, 1048576);
	assert_true(o.deadline == 90.5);
	/* Keys the file does not name keep their values. */
	assert_string_equal(o.store, "auto");
	assert_int_equal(o.connections, PP_DEFAULT_CONNECTIONS);
	assert_true(o.auto_connections);
	assert_int_equal(o.max_connections, PP_DEFAULT_MAX_CONNECTIONS);
	assert_false(o.cache_fill_bypass); /* --cache-fill wait */
	assert_null(cfg.images);
	assert_int_equal(cfg.n_images, 0);
	pp_config_free(&cfg);
}

struct bad {
	const char *text;
	const char *needle; /* must appear in the message */
};

static const struct bad bads[] = {
	{"{\"imagez\": []}", "unknown key \"imagez\""},
	{"{\"chunk-size\": \"8M\"}", "did you mean \"chunk_size\""},
	{"{\"images\": \"busybox\"}", "\"images\": expected an array"},
	{"{\"images\": [\"ok\", 3]}", "\"images\"[1]"},
	{"{\"images\": [\"\"]}", "\"images\"[0]"},
	{"{\"connections\": \"16\"}",
	 "\"connections\": expected an integer from 1 to 256, got \"16\""},
	{"{\"connections\": 0}", "\"connections\""},
	{"{\"max_connections\": 0}", "\"max_connections\""},
	{"{\"max_connections\": 257}", "\"max_connections\""},
	{"{\"connections\": 1000}", "\"connections\""},
	{"{\"per_host\": 2.5}", "\"per_host\""},
	{"{\"chunk_size\": \"4Q\"}", "\"chunk_size\": expected a size"},
	{"{\"chunk_size\": 1}", "\"chunk_size\""},
	{"{\"deadline\": \"soon\"}", "\"deadline\": expected a duration"},
	{"{\"deadline\": 0}", "\"deadline\""},
	{"{\"deadline\": true}", "\"deadline\""},
	{"{\"stall_timeout\": \"0.5s\"}", "\"stall_timeout\""},
	{"{\"store\": 5}", "\"store\": expected a non-empty string, got 5"},
	{"{\"store\": \"\"}", "\"store\""},
	{"{\"state_dir\": null}", "\"state_dir\""},
	{"{\"plain_http\": \"yes\"}", "\"plain_http\": expected true or false"},
	{"{\"cache_fill\": \"skip\"}", "\"cache_fill\": expected \"wait\" or \"bypass\""},
	{"{\"platform\": \"linux/arm64/v8/x\"}", "\"platform\""},
	{"{\"ca_cert\": \"/nonexistent/ca.pem\"}", "\"ca_cert\": cannot read"},
	{"[\"busybox\"]", "expected a JSON object"},
	{"{\"images\": [\"a\"],}", "line 1"},
	{"", "line"},
	{"{\"store\": \"oci:/a\", \"store\": \"oci:/b\"}", "duplicate"},
};

static void test_bad_configs(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		struct pp_options o = defaults();
		struct pp_config cfg;
		struct pp_error err = {0};
		int r = parse(&cfg, &o, bads[i].text, &err);
		if (r != PP_EUSAGE || !strstr(err.msg, bads[i].needle) ||
		    strncmp(err.msg, "config /etc/prepull/config.json: ", 33) != 0) {
			fail_msg("config %s: r=%d msg=[%s], wanted [%s]", bads[i].text, r, err.msg,
				 bads[i].needle);
		}
		pp_config_free(&cfg);
	}
}

static void test_missing_file(void **state)
{
	(void)state;
	struct pp_options o = defaults();
	struct pp_config cfg;
	struct pp_error err = {0};
	assert_int_equal(pp_config_load(&cfg, "/nonexistent/prepull.json", &o, &err), PP_ENOTFOUND);
	assert_non_null(strstr(err.msg, "/nonexistent/prepull.json"));
	pp_config_free(&cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_key),
		cmocka_unit_test(test_numbers_and_absent_keys),
		cmocka_unit_test(test_bad_configs),
		cmocka_unit_test(test_missing_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
