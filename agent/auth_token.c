/* Bearer tokens: a cache per repository and the token request to the
 * challenge's realm (GET with Basic credentials, or the OAuth2
 * refresh-token POST for an identity token), plus the reaction to a 401.
 * Tokens and credentials are never logged. */
#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "prepull/auth.h"
#include "prepull/auth_token.h"
#include "prepull/error.h"
#include "prepull/http.h"
#include "prepull/log.h"
#include "prepull/registry.h"
#include "prepull/util.h"

#define TOKEN_RENEW_MARGIN 30.0 /* renew a token this long before it expires */

struct token {
	char *repo;
	char *value;
	double expires; /* pp_now() seconds */
	bool fresh;     /* fetched since the last 401 for this repo */
};

struct pp_auth {
	const struct pp_registry *reg; /* borrowed: the registry owns us */
	const char *domain;            /* the registry's */

	bool creds_loaded;
	bool have_creds;
	struct pp_creds creds;

	bool have_challenge;
	struct pp_challenge challenge;

	struct token *tokens;
	size_t n_tokens;
};

struct pp_auth *pp_auth_new(const struct pp_registry *reg)
{
	struct pp_auth *a = pp_xcalloc(1, sizeof(*a));
	a->reg = reg;
	a->domain = pp_registry_domain(reg);
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

static size_t body_cb(char *buf, size_t size, size_t n, void *userdata)
{
	struct pp_buf *b = userdata;
	if (pp_buf_append(b, buf, size * n) < 0)
		return 0; /* over the cap: abort the transfer */
	return size * n;
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
	t->fresh = true;
}

/* Gets a bearer token for `repo` from the challenge's realm. */
static int fetch_token(struct pp_auth *a, const char *repo, struct pp_error *err)
{
	struct pp_challenge *c = &a->challenge;
	cleanup_free char *scope = pp_xasprintf("repository:%s:pull", repo);
	cleanup_free char *escope = url_escape(scope);
	cleanup_free char *eservice = url_escape(c->service ? c->service : "");
	load_creds(a);

	CURL *h = curl_easy_init();
	if (!h)
		return pp_error_set(err, PP_EGENERIC, "curl_easy_init failed");
	struct pp_http_response resp = {.retry_after = -1};
	resp.body.limit = 1 << 20;
	char errbuf[CURL_ERROR_SIZE] = "";
	struct curl_slist *hdrs = NULL;
	cleanup_free char *url = NULL;
	cleanup_free char *form = NULL;
	cleanup_free char *authz = NULL;
	int ret = 0;

	if (a->have_creds && a->creds.registry_token) {
		/* A registry token from the config is used as it is. */
		store_token(a, repo, a->creds.registry_token, 3600);
		curl_easy_cleanup(h);
		return 0;
	}
	if (a->have_creds && a->creds.identity_token) {
		/* OAuth2 refresh-token grant, as docker does with an identity token. */
		cleanup_free char *rt = url_escape(a->creds.identity_token);
		url = pp_xstrdup(c->realm);
		form = pp_xasprintf("grant_type=refresh_token&refresh_token=%s&service=%s&scope=%s"
				    "&client_id=prepull",
				    rt, eservice, escope);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, form);
	} else {
		url = pp_xasprintf("%s%sservice=%s&scope=%s", c->realm,
				   strchr(c->realm, '?') ? "&" : "?", eservice, escope);
		if (a->have_creds && a->creds.username) {
			cleanup_free char *b64 = pp_basic_auth_value(
				a->creds.username, a->creds.password ? a->creds.password : "");
			authz = pp_xasprintf("Authorization: Basic %s", b64);
			hdrs = curl_slist_append(hdrs, authz);
		}
	}
	pp_registry_setup_handle(a->reg, h);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, pp_http_header_cb);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &resp);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_cb);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp.body);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
	CURLcode rc = curl_easy_perform(h);
	if (rc != CURLE_OK) {
		ret = pp_curl_error(err, rc, errbuf, c->realm);
		pp_error_wrap(err, "token request");
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
	json_t *root = json_loadb(resp.body.data ? resp.body.data : "", resp.body.len, 0, NULL);
	const char *tok = json_string_value(json_object_get(root, "token"));
	if (!tok || !*tok)
		tok = json_string_value(json_object_get(root, "access_token"));
	if (!tok || !*tok) {
		json_decref(root);
		ret = pp_error_set(err, PP_EPROTO, "token server %s answered without a token",
				   c->realm);
		goto done;
	}
	if (strpbrk(tok, "\r\n")) {
		/* It goes into a header line as it is. */
		json_decref(root);
		ret = pp_error_set(err, PP_EPROTO,
				   "token server %s answered a token with a line break", c->realm);
		goto done;
	}
	json_t *exp = json_object_get(root, "expires_in");
	double expires_in = json_is_integer(exp) ? (double)json_integer_value(exp) : 60;
	if (expires_in < 60)
		expires_in = 60;
	store_token(a, repo, tok, expires_in);
	json_decref(root);
	pp_debug("token for %s/%s valid for %.0f s", a->domain, repo, expires_in);
done:
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
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
	if (t->fresh && same_scheme && !(c.error && strcmp(c.error, "invalid_token") == 0)) {
		/* The token we just got was refused: more tokens will not help. */
		t->fresh = false;
		return pp_error_set(err, PP_EAUTH, "%s denied access to %s%s", a->domain, repo,
				    a->have_creds ? ""
						  : " (no credentials found in the docker config)");
	}
	if (t) {
		free(t->value);
		t->value = NULL;
		t->fresh = false;
	}
	return 0;
}
