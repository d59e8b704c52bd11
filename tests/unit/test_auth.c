/* WWW-Authenticate parsing, docker config.json credentials and credential
 * helpers.  Credential tests run against a temporary DOCKER_CONFIG and a
 * shell-script helper put first on PATH. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "prepull/auth.h"
#include "prepull/error.h"
#include "prepull/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Challenges                                                          */
/* ------------------------------------------------------------------ */

static void parse_ok(struct pp_challenge *c, const char *header)
{
	struct pp_error err = {0};
	int r = pp_challenge_parse(c, header, &err);
	if (r != 0)
		fail_msg("parse of [%s] failed (%d): %s", header, r, err.msg);
}

static void parse_fails(const char *header, int code)
{
	struct pp_challenge c;
	struct pp_error err = {0};
	int r = pp_challenge_parse(&c, header, &err);
	if (r != code)
		fail_msg("parse of [%s]: got %d, want %d (%s)", header, r, code, err.msg);
	assert_int_equal(err.code, code);
	assert_true(err.msg[0] != '\0');
	/* One log line, whatever the header held. */
	for (const char *m = err.msg; *m; m++)
		assert_true((unsigned char)*m >= 0x20 && *m != 0x7f);
	assert_null(c.realm);
	pp_challenge_free(&c);
}

static void test_challenge_docker_hub(void **state)
{
	struct pp_challenge c;
	parse_ok(&c, "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
		     "scope=\"repository:samalba/my-app:pull,push\"");
	assert_int_equal(c.scheme, PP_AUTH_BEARER);
	assert_string_equal(c.realm, "https://auth.docker.io/token");
	assert_string_equal(c.service, "registry.docker.io");
	assert_string_equal(c.scope, "repository:samalba/my-app:pull,push");
	assert_null(c.error);
	pp_challenge_free(&c);
	assert_null(c.realm);
}

static void test_challenge_params(void **state)
{
	struct pp_challenge c;
	parse_ok(&c, "Bearer realm=\"https://r.example/token\", service=\"r.example\", "
		     "scope=\"repository:a/b:pull repository:c/d:pull\", "
		     "error=\"insufficient_scope\", other=\"ignored, really\"");
	assert_int_equal(c.scheme, PP_AUTH_BEARER);
	assert_string_equal(c.realm, "https://r.example/token");
	assert_string_equal(c.service, "r.example");
	assert_string_equal(c.scope, "repository:a/b:pull repository:c/d:pull");
	assert_string_equal(c.error, "insufficient_scope");
	pp_challenge_free(&c);

	/* Only realm: the others stay NULL. */
	parse_ok(&c, "Bearer realm=\"http://127.0.0.1:5001/auth\"");
	assert_string_equal(c.realm, "http://127.0.0.1:5001/auth");
	assert_null(c.service);
	assert_null(c.scope);
	pp_challenge_free(&c);

	/* An empty quoted value is a value. */
	parse_ok(&c, "Bearer realm=\"https://a/t\",service=\"\"");
	assert_string_equal(c.service, "");
	pp_challenge_free(&c);
}

static void test_challenge_commas_in_quotes(void **state)
{
	struct pp_challenge c;
	parse_ok(&c, "Bearer scope=\"repository:x/y:pull,push,delete\",realm=\"https://a/t?x=1,2\","
		     "service=\",\"");
	assert_string_equal(c.realm, "https://a/t?x=1,2");
	assert_string_equal(c.scope, "repository:x/y:pull,push,delete");
	assert_string_equal(c.service, ",");
	pp_challenge_free(&c);
}

static void test_challenge_escapes(void **state)
{
	struct pp_challenge c;
	parse_ok(&c, "Bearer realm=\"https://a/t\\\"q\\\\\", service=\"s\\,v\\x\"");
	assert_string_equal(c.realm, "https://a/t\"q\\");
	assert_string_equal(c.service, "s,vx");
	pp_challenge_free(&c);
}

static void test_challenge_tokens_and_whitespace(void **state)
{
	struct pp_challenge c;
	/* Unquoted values, odd case, spaces and tabs around '=' and ',', empty
	 * list elements and a trailing CRLF from a raw header line. */
	parse_ok(&c, "  bEaReR \t REALM = https://a.example/token ,, \tService=reg.example ,"
		     "scope=repository:x/y:pull , ERROR = invalid_token\r\n");
	assert_int_equal(c.scheme, PP_AUTH_BEARER);
	assert_string_equal(c.realm, "https://a.example/token");
	assert_string_equal(c.service, "reg.example");
	assert_string_equal(c.scope, "repository:x/y:pull");
	assert_string_equal(c.error, "invalid_token");
	pp_challenge_free(&c);
}

static void test_challenge_lowercase_scheme(void **state)
{
	struct pp_challenge c;
	parse_ok(&c, "bearer realm=\"https://a/t\"");
	assert_int_equal(c.scheme, PP_AUTH_BEARER);
	pp_challenge_free(&c);
	parse_ok(&c, "BASIC realm=\"x\"");
	assert_int_equal(c.scheme, PP_AUTH_BASIC);
	pp_challenge_free(&c);
}

static void test_challenge_basic(void **state)
{
	struct pp_challenge c;
	parse_ok(&c, "Basic realm=\"Registry Realm\"");
	assert_int_equal(c.scheme, PP_AUTH_BASIC);
	assert_string_equal(c.realm, "Registry Realm");
	pp_challenge_free(&c);

	/* Basic needs no realm. */
	parse_ok(&c, "Basic");
	assert_int_equal(c.scheme, PP_AUTH_BASIC);
	assert_null(c.realm);
	pp_challenge_free(&c);

	parse_ok(&c, "Basic realm=\"x\", charset=\"UTF-8\"");
	assert_string_equal(c.realm, "x");
	pp_challenge_free(&c);
}

static void test_challenge_several(void **state)
{
	struct pp_challenge c;
	parse_ok(&c, "Basic realm=\"basic, realm\", Bearer realm=\"https://a/t\",service=\"s\"");
	assert_int_equal(c.scheme, PP_AUTH_BEARER);
	assert_string_equal(c.realm, "https://a/t");
	assert_string_equal(c.service, "s");
	pp_challenge_free(&c);

	parse_ok(&c, "Negotiate abc+/def==, Bearer realm=\"https://a/t\"");
	assert_int_equal(c.scheme, PP_AUTH_BEARER);
	pp_challenge_free(&c);

	parse_ok(&c, "Digest realm=\"d\", nonce=\"n, m\", qop=auth, Basic realm=\"b\"");
	assert_int_equal(c.scheme, PP_AUTH_BASIC);
	assert_string_equal(c.realm, "b");
	pp_challenge_free(&c);

	parse_ok(&c, "Bearer realm=\"https://a/t\", Basic realm=\"b\", Negotiate");
	assert_int_equal(c.scheme, PP_AUTH_BEARER);
	assert_string_equal(c.realm, "https://a/t");
	pp_challenge_free(&c);
}

static void test_challenge_missing_realm(void **state)
{
	parse_fails("Bearer service=\"registry.docker.io\",scope=\"repository:a/b:pull\"",
		    PP_EPROTO);
	parse_fails("Bearer", PP_EPROTO);
	parse_fails("Bearer realm=\"\"", PP_EPROTO);
	/* The realm is where credentials go next: only http(s). */
	parse_fails("Bearer realm=\"file:///etc/passwd\"", PP_EPROTO);
}

static void test_challenge_garbage(void **state)
{
	static const char *const bad[] = {
		"",
		"   ",
		",,,",
		"=",
		"realm=\"x\"",
		"\"Bearer\" realm=\"https://a/t\"",
		"Bearer realm=\"https://a/t",
		"Bearer realm=\"https://a/t\\",
		"Bearer realm=\"https://a/t\" service=\"s\"",
		"Bearer realm=\"https://a/t\", =x",
		"Bearer realm=",
		"Bearer realm=\"https://a/t\"x",
		"Bearer realm=\"https://a/\r\nX-Evil: 1\"",
		"Bearer realm=\"https://a/t\", service=\"s\"\r\nX: y",
		"Bearer foo bar",
		"{\"realm\": \"x\"}",
		"Bearer\x01 realm=\"x\"",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		parse_fails(bad[i], PP_EPROTO);
}

static void test_challenge_unknown_scheme(void **state)
{
	parse_fails("Negotiate", PP_EUNSUPPORTED);
	parse_fails("Digest realm=\"x\", nonce=\"y\", qop=\"auth\"", PP_EUNSUPPORTED);
	parse_fails("NTLM TlRMTVNTUAABAAAA==", PP_EUNSUPPORTED);

	struct pp_challenge c;
	struct pp_error err = {0};
	assert_int_equal(pp_challenge_parse(&c, "Mutual realm=\"x\"", &err), PP_EUNSUPPORTED);
	assert_non_null(strstr(err.msg, "Mutual"));
}

/* ------------------------------------------------------------------ */
/* Credentials                                                         */
/* ------------------------------------------------------------------ */

static char tmpdir[256];
static char saved_path[8192];

static void write_file(const char *name, const char *text, int mode)
{
	cleanup_free char *path = pp_xasprintf("%s/%s", tmpdir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	assert_int_equal(chmod(path, mode), 0);
}

static void write_config(const char *json)
{
	write_file("config.json", json, 0600);
}

/* The helper answers by the key it reads on stdin, which therefore also
 * checks that the key arrives there. */
static const char helper_script[] =
	"#!/bin/sh\n"
	"[ \"$1\" = get ] || { echo \"unexpected action $1\"; exit 2; }\n"
	"read -r key || true\n"
	"case \"$key\" in\n"
	"reg.example.com)\n"
	"  echo '{\"ServerURL\":\"reg.example.com\",\"Username\":\"helperuser\","
	"\"Secret\":\"helper-s3cret\"}' ;;\n"
	"https://index.docker.io/v1/)\n"
	"  printf '%s' '{\"ServerURL\":\"https://index.docker.io/v1/\",\"Username\":\"hubuser\","
	"\"Secret\":\"hub-s3cret\"}' ;;\n"
	"token.example.com)\n"
	"  echo '{\"ServerURL\":\"token.example.com\",\"Username\":\"<token>\","
	"\"Secret\":\"refresh-s3cret\"}' ;;\n"
	"broken.example.com)\n"
	"  echo 'error getting credentials: keychain is locked' >&2\n"
	"  echo 'keychain is locked'; exit 1 ;;\n"
	"garbage.example.com)\n"
	"  echo 'this is not json'; exit 0 ;;\n"
	"empty.example.com)\n"
	"  echo '{\"ServerURL\":\"empty.example.com\",\"Username\":\"\",\"Secret\":\"\"}' ;;\n"
	"*)\n"
	"  echo 'credentials not found in native keychain'; exit 1 ;;\n"
	"esac\n";

static int creds_setup(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "%s/prepull-test-auth-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmpdir))
		return -1;
	setenv("DOCKER_CONFIG", tmpdir, 1);
	const char *path = getenv("PATH");
	snprintf(saved_path, sizeof(saved_path), "%s", path ? path : "/usr/bin:/bin");
	cleanup_free char *newpath = pp_xasprintf("%s:%s", tmpdir, saved_path);
	setenv("PATH", newpath, 1);
	write_file("docker-credential-test", helper_script, 0755);
	write_file("docker-credential-other",
		   "#!/bin/sh\necho '{\"Username\":\"otheruser\",\"Secret\":\"other-s3cret\"}'\n",
		   0755);
	/* Exits at once without reading stdin. */
	write_file("docker-credential-quick", "#!/bin/sh\necho 'quick failure'\nexit 3\n", 0755);
	/* Not executable: must not be picked from PATH. */
	write_file("docker-credential-noexec", "#!/bin/sh\nexit 0\n", 0644);
	return 0;
}

static int creds_teardown(void **state)
{
	static const char *const files[] = {
		"config.json",
		"docker-credential-test",
		"docker-credential-other",
		"docker-credential-quick",
		"docker-credential-noexec",
		".docker/config.json",
	};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		cleanup_free char *p = pp_xasprintf("%s/%s", tmpdir, files[i]);
		unlink(p);
	}
	cleanup_free char *d = pp_xasprintf("%s/.docker", tmpdir);
	rmdir(d);
	rmdir(tmpdir);
	setenv("PATH", saved_path, 1);
	return 0;
}

/* Runs a lookup expected to fail with `code`; checks that the message is
 * set and names none of the secrets. */
static void lookup_fails(const char *domain, int code, const char *const *secrets)
{
	struct pp_creds c;
	struct pp_error err = {0};
	int r = pp_creds_lookup(&c, domain, &err);
	if (r != code)
		fail_msg("lookup %s: got %d, want %d (%s)", domain, r, code, err.msg);
	assert_true(err.msg[0] != '\0');
	for (; secrets && *secrets; secrets++)
		if (strstr(err.msg, *secrets))
			fail_msg("error message leaks a secret: %s", err.msg);
	assert_null(c.username);
	assert_null(c.password);
	assert_null(c.identity_token);
	assert_null(c.registry_token);
}

static void lookup_ok(struct pp_creds *c, const char *domain)
{
	struct pp_error err = {0};
	int r = pp_creds_lookup(c, domain, &err);
	if (r != 0)
		fail_msg("lookup %s failed (%d): %s", domain, r, err.msg);
}

/* base64 of "alice:pa:ss w0rd" and of "bob:hunter2\0\0". */
#define ALICE_AUTH "YWxpY2U6cGE6c3MgdzByZA=="
#define BOB_AUTH "Ym9iOmh1bnRlcjIAAA=="

static void test_creds_auths(void **state)
{
	write_config("{\"auths\":{"
		     "\"localhost:5000\":{\"auth\":\"" ALICE_AUTH "\"},"
		     "\"https://index.docker.io/v1/\":{\"auth\":\"" BOB_AUTH "\"},"
		     "\"fields.example\":{\"username\":\"carol\",\"password\":\"c-pass\"},"
		     "\"both.example\":{\"auth\":\"" ALICE_AUTH
		     "\",\"username\":\"ignored\",\"password\":\"ignored\"}"
		     "}}");
	struct pp_creds c;
	lookup_ok(&c, "localhost:5000");
	assert_string_equal(c.username, "alice");
	assert_string_equal(c.password, "pa:ss w0rd"); /* split at the first ':' */
	assert_null(c.identity_token);
	assert_null(c.registry_token);
	pp_creds_free(&c);
	assert_null(c.username);

	lookup_ok(&c, "docker.io");
	assert_string_equal(c.username, "bob");
	assert_string_equal(c.password, "hunter2"); /* trailing NULs stripped */
	pp_creds_free(&c);
	lookup_ok(&c, "index.docker.io");
	assert_string_equal(c.username, "bob");
	pp_creds_free(&c);

	lookup_ok(&c, "fields.example");
	assert_string_equal(c.username, "carol");
	assert_string_equal(c.password, "c-pass");
	pp_creds_free(&c);

	lookup_ok(&c, "both.example"); /* "auth" wins, as in docker */
	assert_string_equal(c.username, "alice");
	pp_creds_free(&c);

	lookup_fails("localhost:5001", PP_ENOTFOUND, NULL);
	lookup_fails("other.example", PP_ENOTFOUND, NULL);
}

static void test_creds_legacy_key(void **state)
{
	write_config("{\"auths\":{"
		     "\"https://reg.example.com/v1/\":{\"auth\":\"" ALICE_AUTH "\"},"
		     "\"http://plain.example:5000\":{\"auth\":\"" BOB_AUTH "\"},"
		     "\"index.docker.io\":{\"username\":\"hub\",\"password\":\"h\"}"
		     "}}");
	struct pp_creds c;
	lookup_ok(&c, "reg.example.com");
	assert_string_equal(c.username, "alice");
	pp_creds_free(&c);
	lookup_ok(&c, "plain.example:5000");
	assert_string_equal(c.username, "bob");
	pp_creds_free(&c);
	lookup_ok(&c, "docker.io");
	assert_string_equal(c.username, "hub");
	pp_creds_free(&c);
	/* The port is part of the host. */
	lookup_fails("plain.example", PP_ENOTFOUND, NULL);
	lookup_fails("example.com", PP_ENOTFOUND, NULL);
}

static void test_creds_exact_key_first(void **state)
{
	write_config("{\"auths\":{"
		     "\"https://reg.example.com/v1/\":{\"auth\":\"" BOB_AUTH "\"},"
		     "\"reg.example.com\":{\"auth\":\"" ALICE_AUTH "\"}"
		     "}}");
	struct pp_creds c;
	lookup_ok(&c, "reg.example.com");
	assert_string_equal(c.username, "alice");
	pp_creds_free(&c);
}

static void test_creds_tokens(void **state)
{
	write_config("{\"auths\":{"
		     "\"id.example\":{\"identitytoken\":\"id-s3cret\"},"
		     "\"reg.example\":{\"registrytoken\":\"reg-s3cret\"},"
		     "\"empty.example\":{\"auth\":\"\",\"email\":\"x@example.com\"}"
		     "}}");
	struct pp_creds c;
	lookup_ok(&c, "id.example");
	assert_null(c.username);
	assert_null(c.password);
	assert_string_equal(c.identity_token, "id-s3cret");
	pp_creds_free(&c);
	lookup_ok(&c, "reg.example");
	assert_string_equal(c.registry_token, "reg-s3cret");
	pp_creds_free(&c);
	lookup_fails("empty.example", PP_ENOTFOUND, NULL);
}

static void test_creds_bad_auth_field(void **state)
{
	/* "s3cretpass" without user, "onlyuser-s3cret" without ':', and
	 * ":s3cretpass" with an empty user. */
	write_config("{\"auths\":{"
		     "\"b64.example\":{\"auth\":\"!!not base64 s3cret!!\"},"
		     "\"nocolon.example\":{\"auth\":\"b25seXVzZXItczNjcmV0\"},"
		     "\"nouser.example\":{\"auth\":\"OnMzY3JldHBhc3M=\"},"
		     "\"type.example\":{\"auth\":42},"
		     "\"entry.example\":\"s3cret-string\""
		     "}}");
	static const char *const secrets[] = {"s3cret", "czNjcmV0", "OnMzY3Jl", "b25seXVz", NULL};
	lookup_fails("b64.example", PP_EPROTO, secrets);
	lookup_fails("nocolon.example", PP_EPROTO, secrets);
	lookup_fails("nouser.example", PP_EPROTO, secrets);
	lookup_fails("type.example", PP_EPROTO, secrets);
	lookup_fails("entry.example", PP_EPROTO, secrets);
}

static void test_creds_home_fallback(void **state)
{
	cleanup_free char *dir = pp_xasprintf("%s/.docker", tmpdir);
	assert_int_equal(mkdir(dir, 0700), 0);
	write_file(".docker/config.json",
		   "{\"auths\":{\"home.example\":{\"auth\":\"" ALICE_AUTH "\"}}}", 0600);
	unsetenv("DOCKER_CONFIG");
	cleanup_free char *old_home = getenv("HOME") ? pp_xstrdup(getenv("HOME")) : NULL;
	setenv("HOME", tmpdir, 1);

	struct pp_creds c;
	lookup_ok(&c, "home.example");
	assert_string_equal(c.username, "alice");
	pp_creds_free(&c);

	/* An empty DOCKER_CONFIG counts as unset. */
	setenv("DOCKER_CONFIG", "", 1);
	lookup_ok(&c, "home.example");
	pp_creds_free(&c);

	if (old_home)
		setenv("HOME", old_home, 1);
	else
		unsetenv("HOME");
	setenv("DOCKER_CONFIG", tmpdir, 1);
}

static void test_creds_missing_config(void **state)
{
	cleanup_free char *nowhere = pp_xasprintf("%s/does-not-exist", tmpdir);
	setenv("DOCKER_CONFIG", nowhere, 1);
	struct pp_creds c;
	struct pp_error err = {0};
	assert_int_equal(pp_creds_lookup(&c, "docker.io", &err), PP_ENOTFOUND);
	assert_non_null(strstr(err.msg, "does-not-exist/config.json"));
	setenv("DOCKER_CONFIG", tmpdir, 1);

	/* An empty file is no settings at all. */
	write_config("");
	lookup_fails("docker.io", PP_ENOTFOUND, NULL);
	write_config("{}");
	lookup_fails("docker.io", PP_ENOTFOUND, NULL);
}

static void test_creds_malformed_config(void **state)
{
	/* Cut off inside a secret: jansson's own message would quote it. */
	write_config("{\"auths\":{\"reg.example\":{\"auth\":\"" ALICE_AUTH);
	static const char *const secrets[] = {ALICE_AUTH, "YWxpY2U6", "pa:ss", NULL};
	lookup_fails("reg.example", PP_EPROTO, secrets);

	struct pp_creds c;
	struct pp_error err = {0};
	assert_int_equal(pp_creds_lookup(&c, "reg.example", &err), PP_EPROTO);
	assert_non_null(strstr(err.msg, "config.json"));

	write_config("{\"auths\":{\"reg.example\":{\"password\":\"pa:ss w0rd\" \"x\":1}}}");
	lookup_fails("reg.example", PP_EPROTO, secrets);
	write_config("[\"pa:ss w0rd\"]");
	lookup_fails("reg.example", PP_EPROTO, secrets);
	write_config("{\"auths\":[\"pa:ss w0rd\"]}");
	lookup_fails("reg.example", PP_EPROTO, secrets);
	write_config("{\"credsStore\":7}");
	lookup_fails("reg.example", PP_EPROTO, secrets);
	write_config("{\"credHelpers\":\"test\"}");
	lookup_fails("reg.example", PP_EPROTO, secrets);
}

static const char *const helper_secrets[] = {"helper-s3cret", "hub-s3cret", "refresh-s3cret",
					     "other-s3cret",  "pa:ss",      NULL};

static int count_fds(void)
{
	int n = 0;
	for (int fd = 0; fd < 1024; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			n++;
	return n;
}

static void test_creds_helpers(void **state)
{
	int fds_before = count_fds();

	/* credHelpers for one registry; its auths entry is not used. */
	write_config("{\"auths\":{"
		     "\"reg.example.com\":{\"auth\":\"" ALICE_AUTH "\"},"
		     "\"nohelper.example\":{\"auth\":\"" ALICE_AUTH "\"},"
		     "\"missing.example.com\":{\"auth\":\"" ALICE_AUTH "\"}},"
		     "\"credHelpers\":{"
		     "\"reg.example.com\":\"test\","
		     "\"https://index.docker.io/v1/\":\"test\","
		     "\"token.example.com\":\"test\","
		     "\"missing.example.com\":\"test\","
		     "\"broken.example.com\":\"test\","
		     "\"garbage.example.com\":\"test\","
		     "\"empty.example.com\":\"test\","
		     "\"quick.example.com\":\"quick\","
		     "\"absent.example.com\":\"absent\","
		     "\"noexec.example.com\":\"noexec\","
		     "\"slash.example.com\":\"../test\"}}");
	struct pp_creds c;
	lookup_ok(&c, "reg.example.com");
	assert_string_equal(c.username, "helperuser");
	assert_string_equal(c.password, "helper-s3cret");
	assert_null(c.identity_token);
	pp_creds_free(&c);

	lookup_ok(&c, "docker.io");
	assert_string_equal(c.username, "hubuser");
	assert_string_equal(c.password, "hub-s3cret");
	pp_creds_free(&c);

	lookup_ok(&c, "token.example.com");
	assert_null(c.username);
	assert_null(c.password);
	assert_string_equal(c.identity_token, "refresh-s3cret");
	pp_creds_free(&c);

	/* No helper for this one: auths. */
	lookup_ok(&c, "nohelper.example");
	assert_string_equal(c.username, "alice");
	pp_creds_free(&c);

	/* The helper says "not found": no credentials, and no fallback to auths. */
	lookup_fails("missing.example.com", PP_ENOTFOUND, helper_secrets);
	lookup_fails("empty.example.com", PP_ENOTFOUND, helper_secrets);

	struct pp_error err = {0};
	assert_int_equal(pp_creds_lookup(&c, "broken.example.com", &err), PP_EAUTH);
	assert_non_null(strstr(err.msg, "docker-credential-test"));
	assert_non_null(strstr(err.msg, "keychain is locked"));
	lookup_fails("broken.example.com", PP_EAUTH, helper_secrets);
	lookup_fails("garbage.example.com", PP_EAUTH, helper_secrets);
	lookup_fails("quick.example.com", PP_EAUTH, helper_secrets);
	lookup_fails("noexec.example.com", PP_EAUTH, helper_secrets);
	lookup_fails("slash.example.com", PP_EAUTH, helper_secrets);

	memset(&err, 0, sizeof(err));
	assert_int_equal(pp_creds_lookup(&c, "absent.example.com", &err), PP_EAUTH);
	assert_non_null(strstr(err.msg, "docker-credential-absent"));

	/* Every pipe to a helper is closed again. */
	assert_int_equal(count_fds(), fds_before);
}

/* A helper is never taken from the current directory through an empty or
 * "." PATH element, nor from any relative element: it is refused, and not
 * run.  The helper leaves a marker when it runs. */
static void test_creds_helper_relative_path(void **state)
{
	cleanup_free char *sub = pp_xasprintf("%s/cwd", tmpdir);
	cleanup_free char *marker = pp_xasprintf("%s/ran", tmpdir);
	cleanup_free char *helper = pp_xasprintf("%s/docker-credential-cwdonly", sub);
	cleanup_free char *script = pp_xasprintf(
		"#!/bin/sh\n: >'%s'\necho '{\"Username\":\"cwduser\",\"Secret\":\"cwd-s3cret\"}'\n",
		marker);
	assert_int_equal(mkdir(sub, 0700), 0);
	FILE *f = fopen(helper, "w");
	assert_non_null(f);
	fputs(script, f);
	fclose(f);
	assert_int_equal(chmod(helper, 0755), 0);
	write_config("{\"credHelpers\":{\"cwd.example.com\":\"cwdonly\"}}");
	char cwd[4096];
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(sub), 0);

	static const char *const secrets[] = {"cwd-s3cret", NULL};
	const char *const paths[] = {":%s",  "%s:",   "%s::/nonexistent",
				     ".:%s", "./:%s", "../cwd:%s"};
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		cleanup_free char *path = pp_xasprintf(paths[i], saved_path);
		setenv("PATH", path, 1);
		struct pp_creds c;
		struct pp_error err = {0};
		int r = pp_creds_lookup(&c, "cwd.example.com", &err);
		if (r != PP_EAUTH)
			fail_msg("PATH element %zu (\"%s\"): got %d, want PP_EAUTH (%s)", i,
				 paths[i], r, err.msg);
		assert_non_null(strstr(err.msg, "docker-credential-cwdonly"));
		assert_non_null(strstr(err.msg, "relative PATH element"));
		lookup_fails("cwd.example.com", PP_EAUTH, secrets);
		if (access(marker, F_OK) == 0)
			fail_msg("PATH \"%s\": the helper in the current directory ran", paths[i]);
	}

	/* The same helper through an absolute element is fine. */
	cleanup_free char *abs = pp_xasprintf("%s:%s", sub, saved_path);
	setenv("PATH", abs, 1);
	struct pp_creds c;
	lookup_ok(&c, "cwd.example.com");
	assert_string_equal(c.username, "cwduser");
	pp_creds_free(&c);
	assert_int_equal(access(marker, F_OK), 0);

	cleanup_free char *path = pp_xasprintf("%s:%s", tmpdir, saved_path);
	setenv("PATH", path, 1);
	assert_int_equal(chdir(cwd), 0);
	unlink(marker);
	unlink(helper);
	rmdir(sub);
}

static void test_creds_store(void **state)
{
	/* credsStore for all; credHelpers overrides it per registry. */
	write_config("{\"credsStore\":\"test\","
		     "\"credHelpers\":{\"other.example.com\":\"other\"},"
		     "\"auths\":{\"unknown.example.com\":{\"auth\":\"" ALICE_AUTH "\"}}}");
	struct pp_creds c;
	lookup_ok(&c, "reg.example.com");
	assert_string_equal(c.username, "helperuser");
	pp_creds_free(&c);

	lookup_ok(&c, "other.example.com");
	assert_string_equal(c.username, "otheruser");
	assert_string_equal(c.password, "other-s3cret");
	pp_creds_free(&c);

	lookup_fails("unknown.example.com", PP_ENOTFOUND, helper_secrets);
	lookup_fails("broken.example.com", PP_EAUTH, helper_secrets);

	write_config("{\"credsStore\":\"absent\"}");
	lookup_fails("reg.example.com", PP_EAUTH, helper_secrets);
}

static void test_basic_auth_value(void **state)
{
	cleanup_free char *a = pp_basic_auth_value("user", "pass");
	assert_string_equal(a, "dXNlcjpwYXNz");
	cleanup_free char *b = pp_basic_auth_value("alice", "pa:ss w0rd");
	assert_string_equal(b, ALICE_AUTH);
	cleanup_free char *c = pp_basic_auth_value("", "");
	assert_string_equal(c, "Og==");
	cleanup_free char *d = pp_basic_auth_value("ab", NULL);
	assert_string_equal(d, "YWI6");
}

int main(void)
{
	const struct CMUnitTest challenge_tests[] = {
		cmocka_unit_test(test_challenge_docker_hub),
		cmocka_unit_test(test_challenge_params),
		cmocka_unit_test(test_challenge_commas_in_quotes),
		cmocka_unit_test(test_challenge_escapes),
		cmocka_unit_test(test_challenge_tokens_and_whitespace),
		cmocka_unit_test(test_challenge_lowercase_scheme),
		cmocka_unit_test(test_challenge_basic),
		cmocka_unit_test(test_challenge_several),
		cmocka_unit_test(test_challenge_missing_realm),
		cmocka_unit_test(test_challenge_garbage),
		cmocka_unit_test(test_challenge_unknown_scheme),
		cmocka_unit_test(test_basic_auth_value),
	};
	const struct CMUnitTest creds_tests[] = {
		cmocka_unit_test(test_creds_auths),
		cmocka_unit_test(test_creds_legacy_key),
		cmocka_unit_test(test_creds_exact_key_first),
		cmocka_unit_test(test_creds_tokens),
		cmocka_unit_test(test_creds_bad_auth_field),
		cmocka_unit_test(test_creds_home_fallback),
		cmocka_unit_test(test_creds_missing_config),
		cmocka_unit_test(test_creds_malformed_config),
		cmocka_unit_test(test_creds_helpers),
		cmocka_unit_test(test_creds_helper_relative_path),
		cmocka_unit_test(test_creds_store),
	};
	int failed = cmocka_run_group_tests_name("challenge", challenge_tests, NULL, NULL);
	failed += cmocka_run_group_tests_name("creds", creds_tests, creds_setup, creds_teardown);
	return failed ? 1 : 0;
}
