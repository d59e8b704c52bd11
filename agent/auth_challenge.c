/* The WWW-Authenticate challenge (RFC 7235 / RFC 6750): what a registry's
 * 401 asks for and where a Bearer token comes from.  The header is
 * untrusted input; messages quote a bounded, one-line excerpt of it. */
#include "prepull/auth.h"

#include "prepull/error.h"
#include "prepull/util.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

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
