#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>
#include <unistd.h>

#include "prepull/error.h"
#include "prepull/hosts.h"
#include "prepull/options.h"

static int parse(struct pp_hosts_file *f, const char *text, struct pp_error *err)
{
	return pp_hosts_parse(f, "hosts.toml", text, strlen(text), err);
}

/* A mirror for Docker Hub, the upstream kept as the server. */
static void test_docker_hub_mirror(void **state)
{
	(void)state;
	const char *text = "server = \"https://registry-1.docker.io\"\n"
			   "\n"
			   "[host.\"https://public-mirror.example.com\"]\n"
			   "  capabilities = [\"pull\"]\n";
	struct pp_hosts_file f;
	struct pp_error err = {0};
	assert_int_equal(parse(&f, text, &err), 0);
	assert_string_equal(f.server, "https://registry-1.docker.io");
	assert_int_equal(f.n_hosts, 1);
	assert_string_equal(f.hosts[0].url, "https://public-mirror.example.com");
	assert_int_equal(f.hosts[0].caps, PP_CAP_PULL);
	assert_int_equal(f.top.caps, PP_CAP_ALL);
	pp_hosts_file_free(&f);
}

/* Several hosts tried in order, with TLS settings of every shape. */
static void test_hosts_in_order(void **state)
{
	(void)state;
	const char *text = "# the registry itself\n"
			   "server = \"https://registry.example.com\"\n"
			   "ca = \"/etc/certs/upstream.pem\"\n"
			   "\n"
			   "[host.\"https://mirror-a.example.com\"]\n"
			   "  capabilities = [\"pull\", \"resolve\"]\n"
			   "  ca = [\"/etc/certs/a.pem\", '/etc/certs/a2.pem']\n"
			   "  client = [[\"/etc/certs/client.cert\", \"/etc/certs/client.key\"],"
			   "[\"/etc/certs/client.pem\", \"\"]]\n"
			   "\n"
			   "[host.\"http://mirror-b.example.com:5000/custom/v2\"]\n"
			   "  capabilities = [\"pull\"]   # blobs only\n"
			   "  skip_verify = true\n"
			   "  override_path = true\n"
			   "  client = \"/etc/certs/b.pem\"\n"
			   "\n"
			   "[host.\"https://mirror-c.example.com\"]\n";
	struct pp_hosts_file f;
	struct pp_error err = {0};
	assert_int_equal(parse(&f, text, &err), 0);
	assert_int_equal(f.top.n_ca, 1);
	assert_string_equal(f.top.ca[0], "/etc/certs/upstream.pem");
	assert_int_equal(f.n_hosts, 3);
	const struct pp_hosts_entry *a = &f.hosts[0], *b = &f.hosts[1], *c = &f.hosts[2];
	assert_string_equal(a->url, "https://mirror-a.example.com");
	assert_int_equal(a->caps, PP_CAP_PULL | PP_CAP_RESOLVE);
	assert_int_equal(a->n_ca, 2);
	assert_string_equal(a->ca[1], "/etc/certs/a2.pem");
	assert_int_equal(a->n_clients, 2);
	assert_string_equal(a->clients[0].cert, "/etc/certs/client.cert");
	assert_string_equal(a->clients[0].key, "/etc/certs/client.key");
	assert_string_equal(a->clients[1].cert, "/etc/certs/client.pem");
	assert_null(a->clients[1].key);
	assert_false(a->skip_verify);
	assert_string_equal(b->url, "http://mirror-b.example.com:5000/custom/v2");
	assert_int_equal(b->caps, PP_CAP_PULL);
	assert_true(b->skip_verify);
	assert_true(b->override_path);
	assert_int_equal(b->n_clients, 1);
	assert_null(b->clients[0].key);
	assert_int_equal(c->caps, PP_CAP_ALL); /* no capabilities key: all of them */
	pp_hosts_file_free(&f);
}

/* Headers: strings and arrays of strings, on a host and at the top. */
static void test_headers(void **state)
{
	(void)state;
	const char *text = "[header]\n"
			   "  x-top = \"1\"\n"
			   "[host.\"https://mirror.example.com\"]\n"
			   "  capabilities = [\"pull\", \"resolve\"]\n"
			   "[host.\"https://mirror.example.com\".header]\n"
			   "  x-custom-2 = [\"value1\", \"value2\"]\n"
			   "  \"X-Quoted\" = \"tab\\there \\u00e9\"\n"
			   "  x-empty = []\n";
	struct pp_hosts_file f;
	struct pp_error err = {0};
	assert_int_equal(parse(&f, text, &err), 0);
	assert_int_equal(f.top.n_headers, 1);
	assert_string_equal(f.top.headers[0].name, "x-top");
	const struct pp_hosts_entry *h = &f.hosts[0];
	assert_int_equal(h->n_headers, 2);
	assert_string_equal(h->headers[0].name, "x-custom-2");
	assert_int_equal(h->headers[0].n_values, 2);
	assert_string_equal(h->headers[0].values[1], "value2");
	assert_string_equal(h->headers[1].name, "X-Quoted");
	assert_string_equal(h->headers[1].values[0], "tab\there \xc3\xa9");
	pp_hosts_file_free(&f);
}

/* Arrays over several lines with comments and a trailing comma; unknown
 * keys and tables skipped; CRLF line ends. */
static void test_tolerated(void **state)
{
	(void)state;
	const char *text = "\xef\xbb\xbfserver = 'https://r.example.com'\r\n"
			   "future_key = 42\r\n"
			   "[host.\"https://m.example.com\"]\r\n"
			   "  capabilities = [\r\n"
			   "    \"pull\", # this one\r\n"
			   "    \"resolve\",\r\n"
			   "  ]\r\n"
			   "  dial_timeout = \"5s\"\r\n"
			   "  when = 1979-05-27T07:32:00Z\r\n"
			   "[something.else]\r\n"
			   "  skip_verify = \"not a bool, but not ours either\"\r\n"
			   "[[array.of.tables]]\r\n"
			   "  x = 1\r\n";
	struct pp_hosts_file f;
	struct pp_error err = {0};
	assert_int_equal(parse(&f, text, &err), 0);
	assert_string_equal(f.server, "https://r.example.com");
	assert_int_equal(f.n_hosts, 1);
	assert_int_equal(f.hosts[0].caps, PP_CAP_PULL | PP_CAP_RESOLVE);
	pp_hosts_file_free(&f);
}

struct bad {
	const char *text;
	const char *msg;
};

static const struct bad bads[] = {
	{"server = \"x\"\n\n[host.\"https://m\"]\n  capabilities \"pull\"\n",
	 "hosts.toml:4: expected '=' after key"},
	{"server = \"https://x\n", "hosts.toml:1: unterminated string"},
	{"a = \"\\q\"\n", "hosts.toml:1: unknown escape '\\q' in a string"},
	{"a = \"\\u00\"\n", "hosts.toml:1: \\u needs 4 hex digits"},
	{"a = \"\\u0000\"\n", "hosts.toml:1: \\u escape names no usable character"},
	{"a = \"\"\"x\"\"\"\n", "hosts.toml:1: multi-line strings are not supported"},
	{"a = {b = 1}\n", "hosts.toml:1: inline tables are not supported"},
	{"a =\n", "hosts.toml:1: expected a value"},
	{"[host.\"h\"]\ncapabilities = [\"pull\", \"fly\"]\n",
	 "hosts.toml:2: unknown capability \"fly\" (pull, resolve or push)"},
	{"[host.\"h\"]\ncapabilities = \"pull\"\n",
	 "hosts.toml:2: \"capabilities\": expected an array of strings"},
	{"[host.\"h\"]\nskip_verify = \"yes\"\n",
	 "hosts.toml:2: \"skip_verify\": expected true or false"},
	{"[host.\"h\"]\nca = [1]\n", "hosts.toml:2: \"ca\": expected a path or an array of paths"},
	{"[host.\"h\"]\nclient = [[\"a\", \"b\", \"c\"]]\n",
	 "hosts.toml:2: \"client\": expected a path, or an array of paths or of [cert, key] pairs"},
	{"[host.\"h\"]\n[host.\"h\"]\n", "hosts.toml:2: [host.\"h\"] is defined twice"},
	{"[host.\"h\".header]\n",
	 "hosts.toml:1: [host.\"h\".header] comes before its host's table"},
	{"[host.\"h\"\n", "hosts.toml:1: expected ']' after the table name"},
	{"server = \"x\" extra\n", "hosts.toml:1: unexpected 'e' after the value"},
	{"a = [\"x\"\n\n\"y\"]\n", "hosts.toml:3: expected ',' or ']' in an array"},
	{"a = [[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]\n",
	 "hosts.toml:1: arrays nested more than 16 deep"},
	{"= 1\n", "hosts.toml:1: expected a key"},
	{"[host.\"h\".header]\n", NULL},
	{"[host.\"h\"]\n[host.\"h\".header]\n\"a:b\" = \"c\"\n", "hosts.toml:3: header \"a:b\""},
	{"server = \"a\tb\x01\"\n", "hosts.toml:1: control character in a string"},
};

static void test_errors(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		if (!bads[i].msg)
			continue;
		struct pp_hosts_file f;
		struct pp_error err = {0};
		int r = parse(&f, bads[i].text, &err);
		if (r != PP_EUSAGE || strncmp(err.msg, bads[i].msg, strlen(bads[i].msg)) != 0)
			fail_msg("case %zu: got %d \"%s\", want \"%s\"", i, r, err.msg,
				 bads[i].msg);
		assert_int_equal(f.n_hosts, 0); /* nothing left to free */
		assert_null(f.server);
	}
}

/* A multi-line array's error names the line the value started on when
 * the value is of the wrong kind, and the line of the fault otherwise. */
static void test_error_lines(void **state)
{
	(void)state;
	const char *text = "[host.\"h\"]\n"
			   "capabilities = [\n"
			   "  \"pull\",\n"
			   "  \"nope\",\n"
			   "]\n";
	struct pp_hosts_file f;
	struct pp_error err = {0};
	assert_int_equal(parse(&f, text, &err), PP_EUSAGE);
	assert_string_equal(err.msg,
			    "hosts.toml:2: unknown capability \"nope\" (pull, resolve or push)");
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* containerd's directory names: "host_port_" first, then "host:port",
 * then _default; hosts in order, the registry last; relative paths
 * anchored at the directory; --mirror entries first. */
static void test_hosts_for(void **state)
{
	(void)state;
	char root[] = "/tmp/test_hosts_XXXXXX";
	assert_non_null(mkdtemp(root));
	char path[512];
	snprintf(path, sizeof(path), "%s/reg.example.com_5000_", root);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/reg.example.com_5000_/hosts.toml", root);
	write_file(path, "server = \"http://reg.example.com:5000\"\n"
			 "[host.\"http://127.0.0.1:6000\"]\n"
			 "  capabilities = [\"pull\"]\n"
			 "  ca = \"ca.pem\"\n"
			 "[host.\"https://m.example.com/prefix/v2/\"]\n"
			 "  override_path = true\n"
			 "[host.\"https://m.example.com/prefix/v2/\".header]\n"
			 "  x-a = [\"1\", \"2\"]\n");
	snprintf(path, sizeof(path), "%s/_default", root);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/_default/hosts.toml", root);
	write_file(path, "[host.\"https://everything.example.com/base\"]\n");

	const char *mirrors[] = {"reg.example.com:5000=http://first.example.com:7000",
				 "other.example.com=https://not-ours"};
	struct pp_options opts = {.hosts_dir = root, .mirrors = mirrors, .n_mirrors = 2};
	struct pp_host_list l;
	struct pp_error err = {0};
	const char *saved = pp_docker_daemon_json;
	pp_docker_daemon_json = "/nonexistent/daemon.json";
	assert_int_equal(pp_hosts_for(&l, "reg.example.com:5000", &opts, &err), 0);
	assert_int_equal(l.n, 4);
	assert_string_equal(l.v[0].host, "first.example.com:7000");
	assert_string_equal(l.v[0].path, "/v2");
	assert_true(l.v[0].mirror);
	assert_string_equal(l.v[1].scheme, "http");
	assert_string_equal(l.v[1].host, "127.0.0.1:6000");
	assert_int_equal(l.v[1].caps, PP_CAP_PULL);
	snprintf(path, sizeof(path), "%s/reg.example.com_5000_/ca.pem", root);
	assert_string_equal(l.v[1].ca, path);
	assert_string_equal(l.v[2].path, "/prefix/v2");
	assert_int_equal(l.v[2].n_headers, 2);
	assert_string_equal(l.v[2].headers[1], "x-a: 2");
	assert_false(l.v[3].mirror);
	assert_string_equal(l.v[3].host, "reg.example.com:5000");
	assert_string_equal(l.v[3].scheme, "http");
	pp_host_list_free(&l);

	/* Another registry falls back to _default (a path gets /v2). */
	assert_int_equal(pp_hosts_for(&l, "else.example.com", &opts, &err), 0);
	assert_int_equal(l.n, 2);
	assert_string_equal(l.v[0].path, "/base/v2");
	assert_null(l.v[1].host); /* the registry as it is */
	pp_host_list_free(&l);

	/* Docker's mirrors serve Docker Hub only, and only when containerd's
	 * configuration has nothing for it; insecure-registries marks one. */
	snprintf(path, sizeof(path), "%s/daemon.json", root);
	write_file(path, "{\"registry-mirrors\": [\"https://dm.example.com\"],"
			 " \"insecure-registries\": [\"plain.example.com:5000\"]}");
	pp_docker_daemon_json = path;
	opts.hosts_dir = "";
	assert_int_equal(pp_hosts_for(&l, "docker.io", &opts, &err), 0);
	assert_int_equal(l.n, 2);
	assert_string_equal(l.v[0].host, "dm.example.com");
	assert_int_equal(l.v[0].caps, PP_CAP_PULL | PP_CAP_RESOLVE);
	pp_host_list_free(&l);
	assert_int_equal(pp_hosts_for(&l, "plain.example.com:5000", &opts, &err), 0);
	assert_int_equal(l.n, 1);
	assert_true(l.v[0].insecure_registry);
	pp_host_list_free(&l);

	/* A malformed hosts.toml is an error naming the file and line. */
	opts.hosts_dir = root;
	snprintf(path, sizeof(path), "%s/_default/hosts.toml", root);
	write_file(path, "\n[host.\"ftp://x\"]\n");
	assert_int_equal(pp_hosts_for(&l, "else.example.com", &opts, &err), PP_EUSAGE);
	assert_non_null(strstr(err.msg, "_default/hosts.toml: ftp://x: only http:// and https://"));
	write_file(path, "\n[host.\"http://x\"]\nskip_verify = 1\n");
	assert_int_equal(pp_hosts_for(&l, "else.example.com", &opts, &err), PP_EUSAGE);
	assert_non_null(strstr(err.msg, "_default/hosts.toml:3: \"skip_verify\": expected true"));
	/* A password in a host URL is refused, and not repeated. */
	write_file(path, "[host.\"https://u:s3cret@m.example.com\"]\n");
	assert_int_equal(pp_hosts_for(&l, "else.example.com", &opts, &err), PP_EUSAGE);
	assert_null(strstr(err.msg, "s3cret"));
	assert_non_null(strstr(err.msg, "takes no user name or password"));
	const char *bad[] = {"reg.example.com"};
	opts.mirrors = bad;
	opts.n_mirrors = 1;
	assert_int_equal(pp_hosts_for(&l, "else.example.com", &opts, &err), PP_EUSAGE);
	assert_string_equal(err.msg, "mirror \"reg.example.com\": expected HOST=URL");
	pp_docker_daemon_json = saved;
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_docker_hub_mirror),
		cmocka_unit_test(test_hosts_in_order),
		cmocka_unit_test(test_headers),
		cmocka_unit_test(test_tolerated),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_error_lines),
		cmocka_unit_test(test_hosts_for),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
