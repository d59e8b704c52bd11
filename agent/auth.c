/* Registry authentication: WWW-Authenticate challenges and docker's
 * credential sources (config.json auths, credential helpers).
 *
 * Nothing read from an auths entry or a helper's answer is ever put into an
 * error message or a log line: messages name the config file, the key and
 * the helper, never a value. */
#include "prepull/auth.h"

#include "prepull/error.h"
#include "prepull/log.h"
#include "prepull/reference.h"
#include "prepull/util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#define HUB_CONFIG_KEY "https://index.docker.io/v1/"
#define HELPER_TIMEOUT_S 30.0
#define HELPER_OUTPUT_LIMIT (1024 * 1024)
#define CONFIG_SIZE_LIMIT (16 * 1024 * 1024)

/* ------------------------------------------------------------------ */
/* WWW-Authenticate                                                    */
/* ------------------------------------------------------------------ */

/* RFC 7230 tchar. */
static bool is_tchar(unsigned char c)
{
	return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* RFC 7235 token68 body (without the trailing '='s). */
static bool is_token68_char(unsigned char c)
{
	return isalnum(c) || (c && strchr("-._~+/", c));
}

static const char *skip_ows(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

static size_t token_len(const char *p)
{
	size_t n = 0;
	while (is_tchar((unsigned char)p[n]))
		n++;
	return n;
}

/* An unquoted value.  RFC 7235 allows a token only; some servers send a
 * bare URL, so accept any visible character but the delimiters.  A leading
 * '=' is left alone: that is token68 padding ("dXNlcg=="). */
static size_t unquoted_len(const char *p)
{
	size_t n = 0;
	if (*p == '=')
		return 0;
	while (p[n] > 0x20 && p[n] < 0x7f && !strchr(",\"\\", p[n]))
		n++;
	return n;
}

/* One parsed challenge; only the params we use are kept. */
struct raw_challenge {
	enum pp_auth_scheme scheme; /* PP_AUTH_NONE for a scheme we do not know */
	char *realm, *service, *scope, *error;
};

static void raw_challenge_free(struct raw_challenge *c)
{
	free(c->realm);
	free(c->service);
	free(c->scope);
	free(c->error);
	memset(c, 0, sizeof(*c));
}

/* The header as it may appear in a message: bounded, control characters
 * replaced, so that an error stays one log line. */
static const char *header_excerpt(char *dst, size_t n, const char *header)
{
	size_t o = 0;
	for (; *header && o + 1 < n && o < 200; header++) {
		unsigned char c = (unsigned char)*header;
		dst[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	dst[o] = '\0';
	return dst;
}

static int challenge_syntax_error(struct pp_error *err, const char *header, const char *at,
				  const char *what)
{
	char ex[256];
	return pp_error_set(err, PP_EPROTO,
			    "malformed WWW-Authenticate header (%s at offset %zu): \"%s\"", what,
			    (size_t)(at - header), header_excerpt(ex, sizeof(ex), header));
}

/* Parses a quoted-string starting at the opening quote.  On success *value
 * holds the unescaped text and *end points past the closing quote. */
static int parse_quoted(const char *header, const char *p, char **value, const char **end,
			struct pp_error *err)
{
	struct pp_buf b = {0};
	const char *q = p + 1;
	for (;;) {
		unsigned char c = (unsigned char)*q;
		if (c == '\0') {
			pp_buf_free(&b);
			return challenge_syntax_error(err, header, p, "unterminated quoted string");
		}
		if (c == '"')
			break;
		if (c == '\\') {
			q++;
			c = (unsigned char)*q;
			if (c == '\0') {
				pp_buf_free(&b);
				return challenge_syntax_error(err, header, q,
							      "unterminated quoted string");
			}
		}
		/* qdtext and quoted-pair exclude CTLs other than HTAB: a CR or
		 * LF here would later end up in a URL or a request line. */
		if ((c < 0x20 && c != '\t') || c == 0x7f) {
			pp_buf_free(&b);
			return challenge_syntax_error(err, header, q, "control character");
		}
		if (pp_buf_append(&b, &c, 1) < 0) {
			pp_buf_free(&b);
			return pp_error_set(err, PP_EGENERIC, "out of memory");
		}
		q++;
	}
	*value = b.data ? b.data : pp_xstrdup("");
	*end = q + 1;
	return 0;
}

static void store_param(struct raw_challenge *c, const char *name, size_t name_len, char *value)
{
	char **slot = NULL;
	if (name_len == 5 && strncasecmp(name, "realm", 5) == 0)
		slot = &c->realm;
	else if (name_len == 7 && strncasecmp(name, "service", 7) == 0)
		slot = &c->service;
	else if (name_len == 5 && strncasecmp(name, "scope", 5) == 0)
		slot = &c->scope;
	else if (name_len == 5 && strncasecmp(name, "error", 5) == 0)
		slot = &c->error;
	if (!slot) {
		free(value);
		return;
	}
	/* A repeated parameter is invalid per RFC 7235; like docker's parser,
	 * the last one wins. */
	free(*slot);
	*slot = value;
}

/* True when p starts a token68 credential ("abc==") that runs to the end
 * of this list element; *end is set past it. */
static bool match_token68(const char *p, const char **end)
{
	const char *q = p;
	while (is_token68_char((unsigned char)*q))
		q++;
	if (q == p)
		return false;
	while (*q == '=')
		q++;
	q = skip_ows(q);
	if (*q != '\0' && *q != ',')
		return false;
	*end = q;
	return true;
}

/* Parses the auth-params (or token68) of one challenge, from just after the
 * scheme.  Stops at the start of the next challenge or at the end; *end is
 * set there. */
static int parse_params(struct raw_challenge *c, const char *header, const char *p,
			const char **end, struct pp_error *err)
{
	bool first = true;
	for (;;) {
		/* Empty list elements (",,") are allowed by RFC 7230 #rule. */
		const char *elem = p;
		p = skip_ows(p);
		while (*p == ',') {
			p = skip_ows(p + 1);
			first = false;
		}
		if (*p == '\0') {
			*end = p;
			return 0;
		}
		size_t n = token_len(p);
		const char *after = skip_ows(p + n);
		if (n > 0 && *after == '=') {
			const char *v = skip_ows(after + 1);
			char *value = NULL;
			const char *vend;
			if (*v == '"') {
				int r = parse_quoted(header, v, &value, &vend, err);
				if (r < 0)
					return r;
			} else {
				size_t vn = unquoted_len(v);
				if (vn > 0) {
					value = pp_xstrndup(v, vn);
					vend = v + vn;
				}
			}
			if (value) {
				vend = skip_ows(vend);
				if (*vend != '\0' && *vend != ',') {
					free(value);
					return challenge_syntax_error(err, header, vend,
								      "expected ','");
				}
				store_param(c, p, n, value);
				p = vend;
				first = false;
				continue;
			}
			/* Not name=value: maybe a token68 such as "dXNlcg==". */
		}
		const char *t68_end;
		if (first && match_token68(p, &t68_end)) {
			p = t68_end;
			first = false;
			continue;
		}
		if (n > 0 && !first && (*after == '\0' || *after == ',' || after != p + n)) {
			/* A token not followed by '=': the next challenge's scheme. */
			*end = elem;
			return 0;
		}
		return challenge_syntax_error(err, header, p, "expected auth-param");
	}
}

static enum pp_auth_scheme scheme_of(const char *p, size_t n)
{
	if (n == 6 && strncasecmp(p, "Bearer", 6) == 0)
		return PP_AUTH_BEARER;
	if (n == 5 && strncasecmp(p, "Basic", 5) == 0)
		return PP_AUTH_BASIC;
	return PP_AUTH_NONE;
}

static bool is_http_url(const char *s)
{
	return strncasecmp(s, "https://", 8) == 0 || strncasecmp(s, "http://", 7) == 0;
}

int pp_challenge_parse(struct pp_challenge *out, const char *header, struct pp_error *err)
{
	memset(out, 0, sizeof(*out));
	if (!header)
		return pp_error_set(err, PP_EPROTO, "missing WWW-Authenticate header");
	/* A raw header line from libcurl still ends in CRLF. */
	size_t hlen = strlen(header);
	while (hlen > 0 && strchr(" \t\r\n", header[hlen - 1]))
		hlen--;
	cleanup_free char *copy = pp_xstrndup(header, hlen);
	header = copy;

	struct raw_challenge bearer = {0}, basic = {0};
	bool have_bearer = false, have_basic = false;
	char unknown[64] = "";
	const char *p = header;
	int r;

	for (;;) {
		p = skip_ows(p);
		while (*p == ',')
			p = skip_ows(p + 1);
		if (*p == '\0')
			break;
		size_t n = token_len(p);
		if (n == 0) {
			r = challenge_syntax_error(err, header, p, "expected auth-scheme");
			goto fail;
		}
		const char *scheme = p;
		p += n;
		if (*p != '\0' && *p != ' ' && *p != '\t' && *p != ',') {
			r = challenge_syntax_error(err, header, p,
						   "expected space after auth-scheme");
			goto fail;
		}
		struct raw_challenge c = {.scheme = scheme_of(scheme, n)};
		r = parse_params(&c, header, p, &p, err);
		if (r < 0) {
			raw_challenge_free(&c);
			goto fail;
		}
		/* Several challenges of one scheme: the first one counts. */
		if (c.scheme == PP_AUTH_BEARER && !have_bearer) {
			bearer = c;
			have_bearer = true;
		} else if (c.scheme == PP_AUTH_BASIC && !have_basic) {
			basic = c;
			have_basic = true;
		} else {
			if (c.scheme == PP_AUTH_NONE && !unknown[0])
				snprintf(unknown, sizeof(unknown), "%.*s",
					 (int)(n < sizeof(unknown) - 1 ? n : sizeof(unknown) - 1),
					 scheme);
			raw_challenge_free(&c);
		}
	}

	struct raw_challenge *pick = have_bearer ? &bearer : have_basic ? &basic : NULL;
	if (!pick) {
		if (unknown[0])
			r = pp_error_set(err, PP_EUNSUPPORTED,
					 "unsupported authentication scheme \"%s\"", unknown);
		else
			r = pp_error_set(err, PP_EPROTO, "empty WWW-Authenticate header");
		goto fail;
	}
	if (pick->scheme == PP_AUTH_BEARER) {
		if (!pick->realm || !pick->realm[0]) {
			char ex[256];
			r = pp_error_set(err, PP_EPROTO, "Bearer challenge without realm: \"%s\"",
					 header_excerpt(ex, sizeof(ex), header));
			goto fail;
		}
		/* The realm is where we send credentials next: only over HTTP(S). */
		if (!is_http_url(pick->realm)) {
			r = pp_error_set(err, PP_EPROTO,
					 "Bearer realm is not an http(s) URL: \"%.200s\"",
					 pick->realm);
			goto fail;
		}
	}
	out->scheme = pick->scheme;
	out->realm = pick->realm;
	out->service = pick->service;
	out->scope = pick->scope;
	out->error = pick->error;
	memset(pick, 0, sizeof(*pick));
	r = 0;
fail:
	raw_challenge_free(&bearer);
	raw_challenge_free(&basic);
	return r;
}

void pp_challenge_free(struct pp_challenge *c)
{
	if (!c)
		return;
	free(c->realm);
	free(c->service);
	free(c->scope);
	free(c->error);
	memset(c, 0, sizeof(*c));
}

/* ------------------------------------------------------------------ */
/* Secrets                                                             */
/* ------------------------------------------------------------------ */

static void free_secret(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

static void pp_buf_free_secret(struct pp_buf *b)
{
	if (b->data)
		explicit_bzero(b->data, b->cap);
	pp_buf_free(b);
}

void pp_creds_free(struct pp_creds *c)
{
	if (!c)
		return;
	free_secret(c->username);
	free_secret(c->password);
	free_secret(c->identity_token);
	free_secret(c->registry_token);
	memset(c, 0, sizeof(*c));
}

char *pp_basic_auth_value(const char *user, const char *pass)
{
	if (!user)
		user = "";
	if (!pass)
		pass = "";
	size_t ul = strlen(user), pl = strlen(pass);
	size_t n = ul + 1 + pl;
	if (n > (size_t)INT32_MAX / 2)
		return NULL;
	char *plain = pp_xmalloc(n + 1);
	memcpy(plain, user, ul);
	plain[ul] = ':';
	memcpy(plain + ul + 1, pass, pl + 1);
	char *out = pp_xmalloc(4 * ((n + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)plain, (int)n);
	explicit_bzero(plain, n);
	free(plain);
	return out;
}

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Standard base64 (RFC 4648 §4).  Padding may be omitted; anything else
 * that is not part of the alphabet is an error.  Returns a NUL-terminated
 * buffer (which may itself hold NULs) and its length, or NULL. */
static char *b64_decode(const char *s, size_t *out_len)
{
	size_t len = strlen(s);
	while (len > 0 && s[len - 1] == '=')
		len--;
	if (strlen(s) - len > 2 || len % 4 == 1)
		return NULL;
	char *out = pp_xmalloc(len / 4 * 3 + 3);
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < len; i++) {
		int v = b64_value((unsigned char)s[i]);
		if (v < 0) {
			explicit_bzero(out, o);
			free(out);
			return NULL;
		}
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (char)((acc >> bits) & 0xff);
		}
	}
	out[o] = '\0';
	*out_len = o;
	return out;
}

/* ------------------------------------------------------------------ */
/* config.json                                                         */
/* ------------------------------------------------------------------ */

static char *config_path(struct pp_error *err)
{
	const char *dir = getenv("DOCKER_CONFIG");
	if (dir && *dir)
		return pp_xasprintf("%s/config.json", dir);
	const char *home = getenv("HOME");
	if (!home || !*home) {
		struct passwd *pw = getpwuid(getuid());
		home = pw ? pw->pw_dir : NULL;
	}
	if (!home || !*home) {
		pp_error_set(err, PP_ENOTFOUND, "no credentials: neither DOCKER_CONFIG nor HOME");
		return NULL;
	}
	return pp_xasprintf("%s/.docker/config.json", home);
}

/* Reads the whole file; PP_ENOTFOUND when it does not exist. */
static int read_config(struct pp_buf *out, const char *path, struct pp_error *err)
{
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return pp_error_set(err, PP_ENOTFOUND, "no credentials: %s does not exist",
					    path);
		return pp_error_errno(err, "open %s", path);
	}
	out->limit = CONFIG_SIZE_LIMIT;
	char chunk[8192];
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			explicit_bzero(chunk, sizeof(chunk));
			return pp_error_errno(err, "read %s", path);
		}
		if (n == 0)
			break;
		if (pp_buf_append(out, chunk, (size_t)n) < 0) {
			explicit_bzero(chunk, sizeof(chunk));
			return pp_error_set(err, PP_EPROTO, "%s: larger than %d MiB", path,
					    CONFIG_SIZE_LIMIT >> 20);
		}
	}
	explicit_bzero(chunk, sizeof(chunk));
	return 0;
}

/* jansson's own message may quote the text near the error ("near '...'",
 * "unable to decode byte 0x..."), which in a config file can be part of a
 * secret: say only what kind of error it is. */
static const char *json_error_kind(const json_error_t *je)
{
	switch (json_error_code(je)) {
	case json_error_premature_end_of_input:
		return "premature end of input";
	case json_error_end_of_input_expected:
		return "trailing data";
	case json_error_invalid_utf8:
		return "invalid UTF-8";
	case json_error_null_character:
	case json_error_null_byte_in_key:
		return "NUL character";
	case json_error_stack_overflow:
		return "nested too deeply";
	default:
		return "syntax error";
	}
}

/* host[:port] of a config key: strips "scheme://" and any path, as docker's
 * ConvertToHostname does. */
static char *key_host(const char *key)
{
	const char *p = key;
	if (strncasecmp(p, "http://", 7) == 0)
		p += 7;
	else if (strncasecmp(p, "https://", 8) == 0)
		p += 8;
	return pp_xstrndup(p, strcspn(p, "/"));
}

static bool is_hub_key(const char *key)
{
	return strcmp(key, HUB_CONFIG_KEY) == 0;
}

static bool host_matches(const char *key, const char *want_key)
{
	cleanup_free char *a = key_host(key);
	cleanup_free char *b = key_host(want_key);
	if (strcasecmp(a, b) == 0)
		return true;
	/* Other tools (podman, skopeo) store Docker Hub as "docker.io". */
	return is_hub_key(want_key) &&
	       (strcasecmp(a, "docker.io") == 0 || strcasecmp(a, "registry-1.docker.io") == 0);
}

static int get_string(const json_t *obj, const char *field, const char **out, const char *path,
		      const char *where, struct pp_error *err)
{
	*out = NULL;
	const json_t *v = json_object_get(obj, field);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return pp_error_set(err, PP_EPROTO, "%s: %s: \"%s\" is not a string", path, where,
				    field);
	*out = json_string_value(v);
	return 0;
}

static char *dup_nonempty(const char *s)
{
	return s && *s ? pp_xstrdup(s) : NULL;
}

static bool creds_empty(const struct pp_creds *c)
{
	return !c->username && !c->password && !c->identity_token && !c->registry_token;
}

/* Decodes one auths entry. */
static int creds_from_entry(struct pp_creds *out, const json_t *entry, const char *path,
			    const char *key, struct pp_error *err)
{
	cleanup_free char *where = pp_xasprintf("auths[\"%s\"]", key);
	if (!json_is_object(entry))
		return pp_error_set(err, PP_EPROTO, "%s: %s is not an object", path, where);

	const char *auth, *user, *pass, *idtok, *regtok;
	int r;
	if ((r = get_string(entry, "auth", &auth, path, where, err)) < 0 ||
	    (r = get_string(entry, "username", &user, path, where, err)) < 0 ||
	    (r = get_string(entry, "password", &pass, path, where, err)) < 0 ||
	    (r = get_string(entry, "identitytoken", &idtok, path, where, err)) < 0 ||
	    (r = get_string(entry, "registrytoken", &regtok, path, where, err)) < 0)
		return r;

	struct pp_creds c = {0};
	if (auth && *auth) {
		/* As docker: "auth" overrides username/password. */
		size_t n;
		char *plain = b64_decode(auth, &n);
		if (!plain)
			return pp_error_set(err, PP_EPROTO, "%s: %s: \"auth\" is not valid base64",
					    path, where);
		char *colon = memchr(plain, ':', n);
		size_t pl = colon ? n - (size_t)(colon + 1 - plain) : 0;
		while (colon && pl > 0 && colon[pl] == '\0')
			pl--;
		if (!colon || colon == plain || memchr(plain, '\0', (size_t)(colon - plain)) ||
		    memchr(colon + 1, '\0', pl)) {
			explicit_bzero(plain, n);
			free(plain);
			return pp_error_set(err, PP_EPROTO,
					    "%s: %s: \"auth\" does not decode to \"user:password\"",
					    path, where);
		}
		c.username = pp_xstrndup(plain, (size_t)(colon - plain));
		c.password = pp_xstrndup(colon + 1, pl);
		explicit_bzero(plain, n);
		free(plain);
	} else {
		c.username = dup_nonempty(user);
		c.password = dup_nonempty(pass);
	}
	c.identity_token = dup_nonempty(idtok);
	c.registry_token = dup_nonempty(regtok);
	if (creds_empty(&c)) {
		pp_creds_free(&c);
		return pp_error_set(err, PP_ENOTFOUND, "no credentials: %s: %s is empty", path,
				    where);
	}
	*out = c;
	return 0;
}

static int lookup_auths(struct pp_creds *out, const json_t *root, const char *path, const char *key,
			struct pp_error *err)
{
	const json_t *auths = json_object_get(root, "auths");
	if (auths && !json_is_null(auths) && !json_is_object(auths))
		return pp_error_set(err, PP_EPROTO, "%s: \"auths\" is not an object", path);
	if (!auths || json_is_null(auths))
		return pp_error_set(err, PP_ENOTFOUND, "no credentials for %s in %s", key, path);

	const json_t *entry = json_object_get(auths, key);
	if (entry)
		return creds_from_entry(out, entry, path, key, err);
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)auths, k, v)
	{
		if (host_matches(k, key))
			return creds_from_entry(out, v, path, k, err);
	}
	return pp_error_set(err, PP_ENOTFOUND, "no credentials for %s in %s", key, path);
}

/* ------------------------------------------------------------------ */
/* Credential helpers                                                  */
/* ------------------------------------------------------------------ */

/* Looks `name` up on PATH as execvp would (an empty element is the current
 * directory); NULL when not found. */
static char *search_path(const char *name)
{
	const char *path = getenv("PATH");
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	const char *p = path;
	for (;;) {
		size_t n = strcspn(p, ":");
		char *cand = n ? pp_xasprintf("%.*s/%s", (int)n, p, name) : pp_xstrdup(name);
		struct stat st;
		if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) && access(cand, X_OK) == 0)
			return cand;
		free(cand);
		if (p[n] == '\0')
			return NULL;
		p += n + 1;
	}
}

/* Keeps a helper's message fit for a log line: one line, printable,
 * bounded. */
static void helper_message(char *dst, size_t n, const char *src)
{
	size_t o = 0;
	while (*src && isspace((unsigned char)*src))
		src++;
	for (; *src && o + 1 < n && o < 300; src++) {
		unsigned char c = (unsigned char)*src;
		dst[o++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
	}
	while (o > 0 && dst[o - 1] == ' ')
		o--;
	dst[o] = '\0';
}

struct helper_run {
	struct pp_buf out, errout;
	int status;
	bool timed_out;
};

static void close_fd(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

/* Reads what is available on *fd into b; closes it at EOF.  -1 when b is
 * over its limit. */
static int drain(int *fd, struct pp_buf *b)
{
	char chunk[4096];
	ssize_t n = read(*fd, chunk, sizeof(chunk));
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return 0;
	if (n <= 0) {
		close_fd(fd);
		return 0;
	}
	int r = pp_buf_append(b, chunk, (size_t)n);
	explicit_bzero(chunk, sizeof(chunk));
	return r;
}

/* Runs `prog get` with `input` on stdin, collecting stdout and stderr,
 * killing it after HELPER_TIMEOUT_S.  Returns 0 when it ran (whatever its
 * exit status), else an error naming `name`. */
static int run_helper(struct helper_run *run, const char *prog, const char *name, const char *input,
		      struct pp_error *err)
{
	int in[2] = {-1, -1}, out[2] = {-1, -1}, errp[2] = {-1, -1};
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
		int r = pp_error_errno(err, "credential helper %s: pipe", name);
		close_fd(&in[0]), close_fd(&in[1]), close_fd(&out[0]), close_fd(&out[1]);
		close_fd(&errp[0]), close_fd(&errp[1]);
		return r;
	}
	char *const argv[] = {(char *)prog, (char *)"get", NULL};
	pid_t pid = fork();
	if (pid < 0) {
		int r = pp_error_errno(err, "credential helper %s: fork", name);
		close_fd(&in[0]), close_fd(&in[1]), close_fd(&out[0]), close_fd(&out[1]);
		close_fd(&errp[0]), close_fd(&errp[1]);
		return r;
	}
	if (pid == 0) {
		/* Only async-signal-safe calls from here to exec. */
		struct sigaction dfl = {.sa_handler = SIG_DFL};
		sigaction(SIGPIPE, &dfl, NULL);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		/* Move the ends above 2 first so that no dup2 clobbers another
		 * end (fds 0-2 may have been closed in the parent). */
		int fds[3] = {in[0], out[1], errp[1]};
		for (int i = 0; i < 3; i++)
			if ((fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3)) < 0)
				_exit(127);
		for (int i = 0; i < 3; i++)
			if (dup2(fds[i], i) < 0)
				_exit(127);
		execv(prog, argv);
		_exit(127);
	}
	close_fd(&in[0]);
	close_fd(&out[1]);
	close_fd(&errp[1]);

	/* A helper that exits without reading stdin must not kill us with
	 * SIGPIPE: block it around the write and swallow one that is pending. */
	sigset_t pipe_set, old_set, pending;
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
	sigpending(&pending);
	bool was_pending = sigismember(&pending, SIGPIPE);
	size_t len = strlen(input), off = 0;
	while (off < len) {
		ssize_t w = write(in[1], input + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break; /* EPIPE: the helper's exit status says what happened */
		off += (size_t)w;
	}
	close_fd(&in[1]);
	if (off < len && !was_pending) {
		struct timespec zero = {0, 0};
		sigtimedwait(&pipe_set, NULL, &zero);
	}
	pthread_sigmask(SIG_SETMASK, &old_set, NULL);

	run->out.limit = HELPER_OUTPUT_LIMIT;
	run->errout.limit = HELPER_OUTPUT_LIMIT;
	double deadline = pp_now() + HELPER_TIMEOUT_S;
	bool too_big = false, exited = false;
	int status = -1;
	/* Read until both pipes are at EOF and the helper has exited.  Once it
	 * has exited, what it wrote is in the pipes already: take what is
	 * readable and stop, even if a process it left behind holds them open. */
	while (!exited || out[0] >= 0 || errp[0] >= 0) {
		double left = deadline - pp_now();
		if (left <= 0) {
			run->timed_out = true;
			break;
		}
		if (!exited) {
			pid_t w = waitpid(pid, &status, WNOHANG);
			if (w == pid) {
				exited = true;
			} else if (w < 0 && errno != EINTR) {
				exited = true; /* reaped elsewhere (SIGCHLD ignored) */
				status = -1;
			}
		}
		/* Short naps once both pipes are closed: the exit is imminent. */
		double nap = out[0] < 0 && errp[0] < 0 ? 0.005 : 0.05;
		int wait_ms = exited ? 0 : (int)((left < nap ? left : nap) * 1000) + 1;
		struct pollfd pfd[2] = {{.fd = out[0], .events = POLLIN},
					{.fd = errp[0], .events = POLLIN}};
		int pr = poll(pfd, 2, wait_ms);
		if (pr < 0 && errno != EINTR)
			break;
		if (pr == 0 && exited)
			break;
		if (pr <= 0)
			continue;
		if (pfd[0].revents && drain(&out[0], &run->out) < 0)
			too_big = true;
		if (pfd[1].revents && drain(&errp[0], &run->errout) < 0)
			too_big = true;
		if (too_big)
			break;
	}
	close_fd(&out[0]);
	close_fd(&errp[0]);
	if (!exited) {
		kill(pid, SIGKILL);
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
	}
	run->status = status;
	if (run->timed_out)
		return pp_error_set(err, PP_EAUTH, "credential helper %s timed out after %.0f s",
				    name, HELPER_TIMEOUT_S);
	if (too_big)
		return pp_error_set(err, PP_EAUTH, "credential helper %s: output too large", name);
	return 0;
}

static int creds_from_helper(struct pp_creds *out, const char *helper, const char *key,
			     struct pp_error *err)
{
	cleanup_free char *name = pp_xasprintf("docker-credential-%s", helper);
	if (strchr(helper, '/') || !*helper)
		return pp_error_set(err, PP_EAUTH, "invalid credential helper name \"%s\"", helper);
	cleanup_free char *prog = search_path(name);
	if (!prog)
		return pp_error_set(err, PP_EAUTH, "credential helper %s not found in PATH", name);
	pp_debug("credentials for %s: running %s get", key, prog);

	struct helper_run run = {0};
	int r = run_helper(&run, prog, name, key, err);
	if (r < 0)
		goto done;

	if (run.status == -1) {
		r = pp_error_set(err, PP_EAUTH, "credential helper %s: exit status lost", name);
		goto done;
	}
	if (!WIFEXITED(run.status) || WEXITSTATUS(run.status) != 0) {
		/* The message is on stdout by the helpers' convention; stderr
		 * when stdout has none.  Helpers print no secret on failure,
		 * but a message naming "Secret" is dropped all the same. */
		const char *src = run.out.data && run.out.data[strspn(run.out.data, " \t\r\n")]
					  ? run.out.data
				  : run.errout.data ? run.errout.data
						    : "";
		if (strstr(src, "Secret"))
			src = "";
		char msg[320];
		helper_message(msg, sizeof(msg), src);
		if (strstr(msg, "credentials not found")) {
			r = pp_error_set(err, PP_ENOTFOUND, "no credentials for %s in %s", key,
					 name);
		} else if (WIFSIGNALED(run.status)) {
			r = pp_error_set(err, PP_EAUTH, "credential helper %s killed by signal %d",
					 name, WTERMSIG(run.status));
		} else if (WEXITSTATUS(run.status) == 127 && !msg[0]) {
			r = pp_error_set(err, PP_EAUTH, "credential helper %s could not be run",
					 name);
		} else {
			r = pp_error_set(err, PP_EAUTH, "credential helper %s failed (exit %d)%s%s",
					 name, WEXITSTATUS(run.status), msg[0] ? ": " : "", msg);
		}
		goto done;
	}

	json_error_t je;
	json_t *root = run.out.data ? json_loadb(run.out.data, run.out.len, 0, &je) : NULL;
	const json_t *u = json_object_get(root, "Username");
	const json_t *s = json_object_get(root, "Secret");
	if (!json_is_object(root) || (u && !json_is_string(u)) || (s && !json_is_string(s))) {
		json_decref(root);
		r = pp_error_set(err, PP_EAUTH, "credential helper %s: malformed answer", name);
		goto done;
	}
	const char *user = u ? json_string_value(u) : "";
	const char *secret = s ? json_string_value(s) : "";
	struct pp_creds c = {0};
	if (strcmp(user, "<token>") == 0) {
		c.identity_token = dup_nonempty(secret);
	} else {
		c.username = dup_nonempty(user);
		c.password = dup_nonempty(secret);
	}
	json_decref(root);
	if (creds_empty(&c)) {
		r = pp_error_set(err, PP_ENOTFOUND, "no credentials for %s in %s", key, name);
		goto done;
	}
	*out = c;
	r = 0;
done:
	pp_buf_free_secret(&run.out);
	pp_buf_free_secret(&run.errout);
	return r;
}

/* credHelpers[key] overrides credsStore.  NULL when neither applies. */
static int configured_helper(const char **out, const json_t *root, const char *key,
			     const char *path, struct pp_error *err)
{
	*out = NULL;
	const json_t *helpers = json_object_get(root, "credHelpers");
	if (helpers && !json_is_null(helpers)) {
		if (!json_is_object(helpers))
			return pp_error_set(err, PP_EPROTO, "%s: \"credHelpers\" is not an object",
					    path);
		const json_t *h = json_object_get(helpers, key);
		if (h && !json_is_string(h))
			return pp_error_set(err, PP_EPROTO,
					    "%s: credHelpers[\"%s\"] is not a string", path, key);
		if (h && *json_string_value(h)) {
			*out = json_string_value(h);
			return 0;
		}
	}
	const char *store;
	int r = get_string(root, "credsStore", &store, path, "top level", err);
	if (r < 0)
		return r;
	if (store && *store)
		*out = store;
	return 0;
}

int pp_creds_lookup(struct pp_creds *out, const char *domain, struct pp_error *err)
{
	memset(out, 0, sizeof(*out));
	if (!domain || !*domain)
		return pp_error_set(err, PP_EUSAGE, "credentials lookup without a registry");
	const char *key = strcasecmp(domain, "index.docker.io") == 0 ? HUB_CONFIG_KEY
								     : pp_domain_config_key(domain);
	cleanup_free char *path = config_path(err);
	if (!path)
		return PP_ENOTFOUND;

	struct pp_buf text = {0};
	int r = read_config(&text, path, err);
	if (r < 0)
		goto done;
	if (!text.data || !text.data[strspn(text.data, " \t\r\n")]) {
		/* docker accepts an empty config file as "no settings". */
		r = pp_error_set(err, PP_ENOTFOUND, "no credentials: %s is empty", path);
		goto done;
	}
	json_error_t je;
	json_t *root = json_loadb(text.data, text.len, 0, &je);
	if (!root) {
		r = pp_error_set(err, PP_EPROTO, "%s: malformed JSON at line %d column %d: %s",
				 path, je.line, je.column, json_error_kind(&je));
		goto done;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		r = pp_error_set(err, PP_EPROTO, "%s: not a JSON object", path);
		goto done;
	}

	const char *helper;
	r = configured_helper(&helper, root, key, path, err);
	if (r == 0) {
		if (helper) {
			/* When a helper applies, auths is not consulted. */
			cleanup_free char *h = pp_xstrdup(helper);
			json_decref(root);
			root = NULL;
			r = creds_from_helper(out, h, key, err);
		} else {
			r = lookup_auths(out, root, path, key, err);
		}
	}
	json_decref(root);
done:
	pp_buf_free_secret(&text);
	return r;
}
