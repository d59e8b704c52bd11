/* Bearer tokens: a cache per repository and the token request to the
 * challenge's realm (GET with Basic credentials, or the OAuth2
 * refresh-token POST for an identity token), plus the reaction to a 401.
 * Tokens and credentials are never logged. */
#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "auth_int.h"
#include "prepull/auth.h"
#include "prepull/auth_token.h"
#include "prepull/error.h"
#include "prepull/http.h"
#include "prepull/log.h"
#include "prepull/util.h"

#define TOKEN_RENEW_MARGIN 30.0 /* renew a token this long before it expires */
/* How long after its fetch a refused token means "denied" rather than
 * "revoked": a registry refuses a token that never worked on its first use,
 * one round trip after the fetch. */
#define TOKEN_SUSPECT_S 5.0
#define TOKEN_REDIRECTS 5 /* same-origin redirects of a refresh-token POST */

struct token {
	char *repo;
	char *value;    /* NULL once refused */
	double expires; /* pp_now() seconds */
	/* A refusal before this time means access is denied: the token is the
	 * first for its repository or replaces a refused one, so the refusal
	 * answers the credentials, not the token's age.  0 for a token that
	 * renewed an expiring one, or once the window has passed. */
	double suspect_until;
	bool refused; /* the value was dropped because the registry refused it */
};

struct pp_auth {
	struct pp_auth_transport tr; /* the registry's: it owns us */
	const char *domain;          /* tr.domain */

	bool creds_loaded;
	bool have_creds;
	struct pp_creds creds;

	bool have_challenge;
	struct pp_challenge challenge;

	struct token *tokens;
	size_t n_tokens;
};

struct pp_auth *pp_auth_new(const struct pp_auth_transport *tr)
{
	struct pp_auth *a = pp_xcalloc(1, sizeof(*a));
	a->tr = *tr;
	a->domain = tr->domain;
	return a;
}

void pp_auth_free(struct pp_auth *a)
{
	if (!a)
		return;
	for (size_t i = 0; i < a->n_tokens; i++) {
		free(a->tokens[i].repo);
		free(a->tokens[i].value);
	}
	free(a->tokens);
	pp_creds_free(&a->creds);
	pp_challenge_free(&a->challenge);
	free(a);
}

static void load_creds(struct pp_auth *a)
{
	if (a->creds_loaded)
		return;
	a->creds_loaded = true;
	struct pp_error e = {0};
	int r = pp_creds_lookup(&a->creds, a->domain, &e);
	if (r == 0) {
		a->have_creds = true;
		pp_debug("using credentials for %s from docker config", a->domain);
	} else if (r != PP_ENOTFOUND) {
		pp_warn("credentials for %s: %s; continuing without", a->domain, e.msg);
	}
}

static struct token *find_token(struct pp_auth *a, const char *repo)
{
	for (size_t i = 0; i < a->n_tokens; i++)
		if (strcmp(a->tokens[i].repo, repo) == 0)
			return &a->tokens[i];
	return NULL;
}

static char *url_escape(const char *s)
{
	char *e = curl_easy_escape(NULL, s, 0);
	char *r = pp_xstrdup(e ? e : "");
	curl_free(e);
	return r;
}

static void store_token(struct pp_auth *a, const char *repo, const char *value, double lifetime)
{
	struct token *t = find_token(a, repo);
	bool first = !t;
	if (!t) {
		a->tokens = realloc(a->tokens, (a->n_tokens + 1) * sizeof(*a->tokens));
		if (!a->tokens)
			abort();
		t = &a->tokens[a->n_tokens++];
		memset(t, 0, sizeof(*t));
		t->repo = pp_xstrdup(repo);
	}
	free(t->value);
	t->value = pp_xstrdup(value);
	t->expires = pp_now() + lifetime;
	t->suspect_until = first || t->refused ? pp_now() + TOKEN_SUSPECT_S : 0;
	t->refused = false;
}

/* Same scheme, host and port: a redirect that stays with the server we
 * chose to trust with the request. */
static bool same_origin(const char *u1, const char *u2)
{
	CURLU *h1 = curl_url(), *h2 = curl_url();
	char *s1 = NULL, *s2 = NULL, *n1 = NULL, *n2 = NULL, *p1 = NULL, *p2 = NULL;
	bool same = h1 && h2 && curl_url_set(h1, CURLUPART_URL, u1, 0) == CURLUE_OK &&
		    curl_url_set(h2, CURLUPART_URL, u2, 0) == CURLUE_OK &&
		    curl_url_get(h1, CURLUPART_SCHEME, &s1, 0) == CURLUE_OK &&
		    curl_url_get(h2, CURLUPART_SCHEME, &s2, 0) == CURLUE_OK &&
		    curl_url_get(h1, CURLUPART_HOST, &n1, 0) == CURLUE_OK &&
		    curl_url_get(h2, CURLUPART_HOST, &n2, 0) == CURLUE_OK &&
		    curl_url_get(h1, CURLUPART_PORT, &p1, CURLU_DEFAULT_PORT) == CURLUE_OK &&
		    curl_url_get(h2, CURLUPART_PORT, &p2, CURLU_DEFAULT_PORT) == CURLUE_OK &&
		    strcasecmp(s1, s2) == 0 && strcasecmp(n1, n2) == 0 && strcmp(p1, p2) == 0;
	curl_free(s1), curl_free(s2), curl_free(n1), curl_free(n2), curl_free(p1), curl_free(p2);
	curl_url_cleanup(h1);
	curl_url_cleanup(h2);
	return same;
}

/* The host[:port] of a URL, for a message; "?" when it does not parse. */
static char *url_host(const char *url)
{
	CURLU *h = curl_url();
	char *host = NULL, *port = NULL;
	char *r = NULL;
	if (h && curl_url_set(h, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(h, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
		curl_url_get(h, CURLUPART_PORT, &port, 0);
		r = port ? pp_xasprintf("%s:%s", host, port) : pp_xstrdup(host);
	}
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(h);
	return r ? r : pp_xstrdup("?");
}

/* One token request.  A refresh-token POST follows no redirect by itself:
 * curl would send the body (the identity token) again to wherever a 307 or
 * 308 points; *redirect_url says where the server sent us.  Returns 0 with
 * resp filled for any HTTP answer, or a transport error. */
static int token_attempt(struct pp_auth *a, const char *url, const char *form,
			 struct curl_slist *hdrs, struct pp_http_response *resp,
			 char **redirect_url, struct pp_error *err)
{
	CURL *h = curl_easy_init();
	if (!h)
		return pp_error_set(err, PP_EGENERIC, "curl_easy_init failed");
	char errbuf[CURL_ERROR_SIZE] = "";
	pp_http_response_reset(resp);
	pp_buf_free(&resp->body);
	resp->body.limit = 1 << 20;
	a->tr.setup(a->tr.ctx, h);
	if (form) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, form);
		curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	}
	pp_http_capture(h, url, hdrs, errbuf, resp);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
	CURLcode rc = curl_easy_perform(h);
	int ret = 0;
	if (rc != CURLE_OK) {
		ret = pp_curl_error(err, rc, errbuf, a->challenge.realm);
		pp_error_wrap(err, "token request");
	} else if (form) {
		char *loc = NULL;
		curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &loc);
		*redirect_url = loc ? pp_xstrdup(loc) : NULL;
	}
	curl_easy_cleanup(h);
	return ret;
}

static bool is_redirect(long status)
{
	return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

/* Reads the token out of a 200 answer and caches it. */
static int take_token(struct pp_auth *a, const char *repo, const struct pp_http_response *resp,
		      struct pp_error *err)
{
	const char *realm = a->challenge.realm;
	json_t *root = json_loadb(resp->body.data ? resp->body.data : "", resp->body.len, 0, NULL);
	const char *tok = json_string_value(json_object_get(root, "token"));
	if (!tok || !*tok)
		tok = json_string_value(json_object_get(root, "access_token"));
	int ret = 0;
	if (!tok || !*tok) {
		ret = pp_error_set(err, PP_EPROTO, "token server %s answered without a token",
				   realm);
	} else if (strpbrk(tok, "\r\n")) {
		/* It goes into a header line as it is. */
		ret = pp_error_set(err, PP_EPROTO,
				   "token server %s answered a token with a line break", realm);
	} else {
		json_t *exp = json_object_get(root, "expires_in");
		double expires_in = json_is_integer(exp) ? (double)json_integer_value(exp) : 60;
		if (expires_in < 60)
			expires_in = 60;
		store_token(a, repo, tok, expires_in);
		pp_debug("token for %s/%s valid for %.0f s", a->domain, repo, expires_in);
	}
	json_decref(root);
	return ret;
}

/* Gets a bearer token for `repo` from the challenge's realm, retrying
 * transport errors, 5xx, 429 and 408 as any registry request is: a token
 * server that hiccups during a renewal must not fail the blob. */
static int fetch_token(struct pp_auth *a, const char *repo, struct pp_error *err)
{
	struct pp_challenge *c = &a->challenge;
	load_creds(a);
	if (a->have_creds && a->creds.registry_token) {
		/* A registry token from the config is used as it is. */
		store_token(a, repo, a->creds.registry_token, 3600);
		return 0;
	}
	cleanup_free char *scope = pp_xasprintf("repository:%s:pull", repo);
	cleanup_free char *escope = url_escape(scope);
	cleanup_free char *eservice = url_escape(c->service ? c->service : "");
	struct pp_http_response resp = {.retry_after = -1};
	struct curl_slist *hdrs = NULL;
	char *url = NULL, *form = NULL, *authz = NULL;
	int ret = 0;

	if (a->have_creds && a->creds.identity_token) {
		/* OAuth2 refresh-token grant, as docker does with an identity token. */
		char *rt = url_escape(a->creds.identity_token);
		url = pp_xstrdup(c->realm);
		form = pp_xasprintf("grant_type=refresh_token&refresh_token=%s&service=%s&scope=%s"
				    "&client_id=prepull",
				    rt, eservice, escope);
		pp_auth_free_secret(rt);
	} else {
		url = pp_xasprintf("%s%sservice=%s&scope=%s", c->realm,
				   strchr(c->realm, '?') ? "&" : "?", eservice, escope);
		if (a->have_creds && a->creds.username) {
			cleanup_free char *b64 = pp_basic_auth_value(
				a->creds.username, a->creds.password ? a->creds.password : "");
			authz = pp_xasprintf("Authorization: Basic %s", b64);
			explicit_bzero(b64, strlen(b64));
			hdrs = curl_slist_append(hdrs, authz);
		}
	}
	/* A registry reached over TLS has credentials worth TLS: a plain-http
	 * realm would carry them in clear (plain-http registries send them in
	 * clear anyway, so an http realm changes nothing there). */
	if ((form || authz) && a->tr.https && strncasecmp(c->realm, "http://", 7) == 0) {
		ret = pp_error_set(err, PP_EAUTH,
				   "%s is an https registry but its token server %s is plain "
				   "http: not sending the credentials there in clear",
				   a->domain, c->realm);
		goto done;
	}

	for (int attempt = 0, hops = 0;; attempt++) {
		cleanup_free char *next = NULL;
		double wait;
		int r = token_attempt(a, url, form, hdrs, &resp, &next, err);
		if (r < 0) {
			if (err->code == PP_ETLS || err->code == PP_EINTR ||
			    err->code == PP_EDEADLINE) {
				ret = r;
				goto done;
			}
			wait = pp_backoff(attempt);
		} else if (form && is_redirect(resp.status)) {
			/* The POST body holds the identity token: it may go again to
			 * the same server only, and only where POST is kept. */
			if (!next || (resp.status != 307 && resp.status != 308)) {
				ret = pp_error_set(err, PP_EPROTO,
						   "token server %s answered %ld to the "
						   "refresh-token request",
						   c->realm, resp.status);
				goto done;
			}
			if (!same_origin(url, next)) {
				cleanup_free char *host = url_host(next);
				ret = pp_error_set(err, PP_EAUTH,
						   "token server %s redirected the refresh-token "
						   "request to another host (%s): not sending the "
						   "identity token there",
						   c->realm, host);
				goto done;
			}
			if (++hops > TOKEN_REDIRECTS) {
				ret = pp_error_set(err, PP_EPROTO,
						   "token server %s: too many redirects", c->realm);
				goto done;
			}
			free(url);
			url = next;
			next = NULL;
			attempt--; /* a redirect is not a failure */
			continue;
		} else if (resp.status == 429 || resp.status == 408 || resp.status >= 500) {
			pp_http_status_error(err, &resp);
			pp_error_wrap(err, "token request to %s", c->realm);
			wait = resp.retry_after >= 0 ? resp.retry_after : pp_backoff(attempt);
		} else {
			break;
		}
		ret = pp_http_retry_wait(attempt, wait, a->domain, err);
		if (ret < 0)
			goto done;
	}

	if (resp.status == 401 || resp.status == 403) {
		ret = pp_error_set(
			err, PP_EAUTH,
			a->have_creds
				? "token server %s rejected the credentials for %s"
				: "token server %s requires credentials for %s (none found in "
				  "the docker config)",
			c->realm, a->domain);
		goto done;
	}
	if (resp.status != 200) {
		ret = pp_http_status_error(err, &resp);
		pp_error_wrap(err, "token request to %s", c->realm);
		goto done;
	}
	ret = take_token(a, repo, &resp, err);
done:
	curl_slist_free_all(hdrs);
	free(url);
	pp_auth_free_secret(form);
	pp_auth_free_secret(authz);
	pp_http_response_reset(&resp);
	pp_buf_free(&resp.body);
	return ret;
}

int pp_auth_header(struct pp_auth *a, const char *repo, char **out, struct pp_error *err)
{
	*out = NULL;
	if (!a->have_challenge)
		return 0;
	if (a->challenge.scheme == PP_AUTH_BASIC) {
		load_creds(a);
		if (!a->have_creds || !a->creds.username)
			return 0;
		cleanup_free char *b64 = pp_basic_auth_value(
			a->creds.username, a->creds.password ? a->creds.password : "");
		*out = pp_xasprintf("Authorization: Basic %s", b64);
		return 0;
	}
	struct token *t = find_token(a, repo);
	if (!t || !t->value || t->expires - TOKEN_RENEW_MARGIN < pp_now()) {
		int r = fetch_token(a, repo, err);
		if (r < 0)
			return r;
		t = find_token(a, repo);
	}
	*out = pp_xasprintf("Authorization: Bearer %s", t->value);
	return 0;
}

int pp_auth_unauthorized(struct pp_auth *a, const char *repo, const char *www_authenticate,
			 const char *sent_authorization, struct pp_error *err)
{
	if (!www_authenticate)
		return pp_error_set(err, PP_EAUTH,
				    "%s answered 401 without an authentication challenge",
				    a->domain);
	struct pp_challenge c = {0};
	int r = pp_challenge_parse(&c, www_authenticate, err);
	if (r < 0)
		return pp_error_wrap(err, "%s: WWW-Authenticate", a->domain);
	load_creds(a);
	bool had = a->have_challenge;
	bool same_scheme = had && a->challenge.scheme == c.scheme;
	pp_challenge_free(&a->challenge);
	a->challenge = c;
	a->have_challenge = true;

	if (c.scheme == PP_AUTH_BASIC) {
		if (!a->have_creds || !a->creds.username)
			return pp_error_set(err, PP_EAUTH,
					    "%s requires authentication and no credentials for it "
					    "were found in the docker config",
					    a->domain);
		if (same_scheme && sent_authorization)
			return pp_error_set(err, PP_EAUTH, "%s rejected the credentials",
					    a->domain);
		return 0;
	}
	struct token *t = find_token(a, repo);
	static const char bearer[] = "Authorization: Bearer ";
	bool sent_current = t && t->value && sent_authorization &&
			    strncmp(sent_authorization, bearer, sizeof(bearer) - 1) == 0 &&
			    strcmp(sent_authorization + sizeof(bearer) - 1, t->value) == 0;
	if (!sent_current)
		return 0; /* sent before the current token existed: just send it again */
	bool invalid = c.error && strcmp(c.error, "invalid_token") == 0;
	if (same_scheme && !invalid && pp_now() < t->suspect_until) {
		/* A token just got for these credentials was refused: more
		 * tokens will not help. */
		t->suspect_until = 0;
		return pp_error_set(err, PP_EAUTH, "%s denied access to %s%s", a->domain, repo,
				    a->have_creds ? ""
						  : " (no credentials found in the docker config)");
	}
	/* Expired, revoked, or refused after it had been working for a while:
	 * a new one may well work, and if it is refused at once, that is the
	 * answer (suspect_until). */
	free(t->value);
	t->value = NULL;
	t->refused = true;
	return 0;
}
