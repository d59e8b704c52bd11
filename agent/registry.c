/* Registry client: transport settings, authentication (Basic, Bearer
 * tokens cached per repository) and GET with retries. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "prepull/auth.h"
#include "prepull/stop.h"
#include "prepull/error.h"
#include "prepull/log.h"
#include "prepull/options.h"
#include "prepull/reference.h"
#include "prepull/registry.h"
#include "prepull/util.h"

#define TOKEN_RENEW_MARGIN 30.0 /* renew a token this long before it expires */
#define GET_ATTEMPTS 5

struct token {
	char *repo;
	char *value;
	double expires; /* pp_now() seconds */
	bool fresh;     /* fetched since the last 401 for this repo */
};

struct pp_registry {
	struct pp_registry *next;
	char *domain;
	char *api_host;
	const char *scheme;
	const struct pp_options *opts;
	char *ca_dir_cert; /* /etc/docker/certs.d/<host>/ca.crt when present */

	bool creds_loaded;
	bool have_creds;
	struct pp_creds creds;

	bool have_challenge;
	struct pp_challenge challenge;
	bool basic_rejected;

	struct token *tokens;
	size_t n_tokens;
};

static struct pp_registry *registries;

const char *pp_registry_domain(const struct pp_registry *reg)
{
	return reg->domain;
}

/* A registry on this machine may speak plain HTTP: as docker does for
 * loopback registries, try HTTPS and fall back to HTTP when no TLS
 * handshake happens.  A certificate that fails verification still means
 * HTTPS, so the TLS error is what the user sees. */
static const char *probe_scheme(struct pp_registry *reg)
{
	CURL *h = curl_easy_init();
	if (!h)
		return "http";
	cleanup_free char *url = pp_xasprintf("https://%s/v2/", reg->api_host);
	pp_registry_setup_handle(reg, h);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 5L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
	CURLcode rc = curl_easy_perform(h);
	curl_easy_cleanup(h);
	bool tls = rc == CURLE_OK || rc == CURLE_PEER_FAILED_VERIFICATION;
	pp_debug("%s: %s (probe: %s)", reg->domain, tls ? "https" : "plain http",
		 curl_easy_strerror(rc));
	return tls ? "https" : "http";
}

int pp_registry_get(struct pp_registry **out, const char *domain, const struct pp_options *opts,
		    struct pp_error *err)
{
	for (struct pp_registry *r = registries; r; r = r->next) {
		if (strcmp(r->domain, domain) == 0) {
			*out = r;
			return 0;
		}
	}
	struct pp_registry *r = pp_xcalloc(1, sizeof(*r));
	r->domain = pp_xstrdup(domain);
	r->api_host =
		pp_xstrdup(strcmp(domain, "docker.io") == 0 ? "registry-1.docker.io" : domain);
	r->scheme = opts->plain_http ? "http" : "https";
	r->opts = opts;
	/* docker's per-registry CA directory, as `docker pull` would use it. */
	char *ca = pp_xasprintf("/etc/docker/certs.d/%s/ca.crt", domain);
	struct stat st;
	if (stat(ca, &st) == 0)
		r->ca_dir_cert = ca;
	else
		free(ca);
	if (!opts->plain_http && pp_domain_is_local(domain))
		r->scheme = probe_scheme(r);
	r->next = registries;
	registries = r;
	*out = r;
	return 0;
}

void pp_registry_free_all(void)
{
	while (registries) {
		struct pp_registry *r = registries;
		registries = r->next;
		for (size_t i = 0; i < r->n_tokens; i++) {
			free(r->tokens[i].repo);
			free(r->tokens[i].value);
		}
		free(r->tokens);
		pp_creds_free(&r->creds);
		pp_challenge_free(&r->challenge);
		free(r->ca_dir_cert);
		free(r->domain);
		free(r->api_host);
		free(r);
	}
}

char *pp_registry_url(const struct pp_registry *reg, const char *repo, const char *kind,
		      const char *ref)
{
	return pp_xasprintf("%s://%s/v2/%s/%s/%s", reg->scheme, reg->api_host, repo, kind, ref);
}

/* Lets a signal or the deadline cut a request short. */
static int stop_cb(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		   curl_off_t ulnow)
{
	return pp_should_stop() ? 1 : 0;
}

void pp_registry_setup_handle(const struct pp_registry *reg, CURL *h)
{
	const struct pp_options *o = reg->opts;
	curl_easy_setopt(h, CURLOPT_USERAGENT, "prepull/" PREPULL_VERSION);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
	/* Never forward credentials to another host (a CDN): the default, kept explicit. */
	curl_easy_setopt(h, CURLOPT_UNRESTRICTED_AUTH, 0L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 30L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, stop_cb);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	const char *ca = o->ca_cert ? o->ca_cert : reg->ca_dir_cert;
	if (ca) {
		/* CAINFO replaces the default bundle; CAPATH keeps the system CAs trusted. */
		curl_easy_setopt(h, CURLOPT_CAINFO, ca);
		curl_easy_setopt(h, CURLOPT_CAPATH, "/etc/ssl/certs");
	}
	if (o->insecure) {
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
	}
}

static void load_creds(struct pp_registry *reg)
{
	if (reg->creds_loaded)
		return;
	reg->creds_loaded = true;
	struct pp_error e = {0};
	int r = pp_creds_lookup(&reg->creds, reg->domain, &e);
	if (r == 0) {
		reg->have_creds = true;
		pp_debug("using credentials for %s from docker config", reg->domain);
	} else if (r != PP_ENOTFOUND) {
		pp_warn("credentials for %s: %s; continuing without", reg->domain, e.msg);
	}
}

static struct token *find_token(struct pp_registry *reg, const char *repo)
{
	for (size_t i = 0; i < reg->n_tokens; i++)
		if (strcmp(reg->tokens[i].repo, repo) == 0)
			return &reg->tokens[i];
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

static void store_token(struct pp_registry *reg, const char *repo, const char *value,
			double lifetime)
{
	struct token *t = find_token(reg, repo);
	if (!t) {
		reg->tokens = realloc(reg->tokens, (reg->n_tokens + 1) * sizeof(*reg->tokens));
		if (!reg->tokens)
			abort();
		t = &reg->tokens[reg->n_tokens++];
		memset(t, 0, sizeof(*t));
		t->repo = pp_xstrdup(repo);
	}
	free(t->value);
	t->value = pp_xstrdup(value);
	t->expires = pp_now() + lifetime;
	t->fresh = true;
}

/* Gets a bearer token for `repo` from the challenge's realm. */
static int fetch_token(struct pp_registry *reg, const char *repo, struct pp_error *err)
{
	struct pp_challenge *c = &reg->challenge;
	cleanup_free char *scope = pp_xasprintf("repository:%s:pull", repo);
	cleanup_free char *escope = url_escape(scope);
	cleanup_free char *eservice = url_escape(c->service ? c->service : "");
	load_creds(reg);

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

	if (reg->have_creds && reg->creds.registry_token) {
		/* A registry token from the config is used as it is. */
		store_token(reg, repo, reg->creds.registry_token, 3600);
		curl_easy_cleanup(h);
		return 0;
	}
	if (reg->have_creds && reg->creds.identity_token) {
		/* OAuth2 refresh-token grant, as docker does with an identity token. */
		cleanup_free char *rt = url_escape(reg->creds.identity_token);
		url = pp_xstrdup(c->realm);
		form = pp_xasprintf("grant_type=refresh_token&refresh_token=%s&service=%s&scope=%s"
				    "&client_id=prepull",
				    rt, eservice, escope);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, form);
	} else {
		url = pp_xasprintf("%s%sservice=%s&scope=%s", c->realm,
				   strchr(c->realm, '?') ? "&" : "?", eservice, escope);
		if (reg->have_creds && reg->creds.username) {
			cleanup_free char *b64 =
				pp_basic_auth_value(reg->creds.username,
						    reg->creds.password ? reg->creds.password : "");
			authz = pp_xasprintf("Authorization: Basic %s", b64);
			hdrs = curl_slist_append(hdrs, authz);
		}
	}
	pp_registry_setup_handle(reg, h);
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
			reg->have_creds
				? "token server %s rejected the credentials for %s"
				: "token server %s requires credentials for %s (none found in "
				  "the docker config)",
			c->realm, reg->domain);
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
	store_token(reg, repo, tok, expires_in);
	json_decref(root);
	pp_debug("token for %s/%s valid for %.0f s", reg->domain, repo, expires_in);
done:
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	pp_http_response_reset(&resp);
	pp_buf_free(&resp.body);
	return ret;
}

int pp_registry_auth_header(struct pp_registry *reg, const char *repo, char **out,
			    struct pp_error *err)
{
	*out = NULL;
	if (!reg->have_challenge)
		return 0;
	if (reg->challenge.scheme == PP_AUTH_BASIC) {
		load_creds(reg);
		if (!reg->have_creds || !reg->creds.username)
			return 0;
		cleanup_free char *b64 = pp_basic_auth_value(
			reg->creds.username, reg->creds.password ? reg->creds.password : "");
		*out = pp_xasprintf("Authorization: Basic %s", b64);
		return 0;
	}
	struct token *t = find_token(reg, repo);
	if (!t || !t->value || t->expires - TOKEN_RENEW_MARGIN < pp_now()) {
		int r = fetch_token(reg, repo, err);
		if (r < 0)
			return r;
		t = find_token(reg, repo);
	}
	*out = pp_xasprintf("Authorization: Bearer %s", t->value);
	return 0;
}

int pp_registry_unauthorized(struct pp_registry *reg, const char *repo,
			     const char *www_authenticate, const char *sent_authorization,
			     struct pp_error *err)
{
	if (!www_authenticate)
		return pp_error_set(err, PP_EAUTH,
				    "%s answered 401 without an authentication challenge",
				    reg->domain);
	struct pp_challenge c = {0};
	int r = pp_challenge_parse(&c, www_authenticate, err);
	if (r < 0)
		return pp_error_wrap(err, "%s: WWW-Authenticate", reg->domain);
	load_creds(reg);
	bool had = reg->have_challenge;
	bool same_scheme = had && reg->challenge.scheme == c.scheme;
	pp_challenge_free(&reg->challenge);
	reg->challenge = c;
	reg->have_challenge = true;

	if (c.scheme == PP_AUTH_BASIC) {
		if (!reg->have_creds || !reg->creds.username)
			return pp_error_set(err, PP_EAUTH,
					    "%s requires authentication and no credentials for it "
					    "were found in the docker config",
					    reg->domain);
		if (same_scheme && sent_authorization)
			return pp_error_set(err, PP_EAUTH, "%s rejected the credentials",
					    reg->domain);
		return 0;
	}
	struct token *t = find_token(reg, repo);
	static const char bearer[] = "Authorization: Bearer ";
	bool sent_current = t && t->value && sent_authorization &&
			    strncmp(sent_authorization, bearer, sizeof(bearer) - 1) == 0 &&
			    strcmp(sent_authorization + sizeof(bearer) - 1, t->value) == 0;
	if (!sent_current)
		return 0; /* sent before the current token existed: just send it again */
	if (t->fresh && same_scheme && !(c.error && strcmp(c.error, "invalid_token") == 0)) {
		/* The token we just got was refused: more tokens will not help. */
		t->fresh = false;
		return pp_error_set(
			err, PP_EAUTH, "%s denied access to %s%s", reg->domain, repo,
			reg->have_creds ? "" : " (no credentials found in the docker config)");
	}
	if (t) {
		free(t->value);
		t->value = NULL;
		t->fresh = false;
	}
	return 0;
}

/* Sleeps s seconds, in slices, so a signal or the deadline cuts it short. */
static void sleep_seconds(double s)
{
	double until = pp_now() + s;
	while (!pp_should_stop()) {
		double left = until - pp_now();
		if (left <= 0)
			return;
		if (left > 0.2)
			left = 0.2;
		struct timespec ts = {0, (long)(left * 1e9)};
		nanosleep(&ts, NULL);
	}
}

int pp_registry_get_url(struct pp_registry *reg, const char *repo, const char *url,
			const char *accept, size_t max_body, struct pp_http_response *resp,
			struct pp_error *err)
{
	int auth_tries = 0;
	for (int attempt = 0;; attempt++) {
		cleanup_free char *authz = NULL;
		int r = pp_registry_auth_header(reg, repo, &authz, err);
		if (r < 0)
			return r;
		CURL *h = curl_easy_init();
		if (!h)
			return pp_error_set(err, PP_EGENERIC, "curl_easy_init failed");
		char errbuf[CURL_ERROR_SIZE] = "";
		struct curl_slist *hdrs = NULL;
		cleanup_free char *acc = accept ? pp_xasprintf("Accept: %s", accept) : NULL;
		if (acc)
			hdrs = curl_slist_append(hdrs, acc);
		if (authz)
			hdrs = curl_slist_append(hdrs, authz);
		pp_http_response_reset(resp);
		pp_buf_free(&resp->body);
		resp->body.limit = max_body;
		pp_registry_setup_handle(reg, h);
		curl_easy_setopt(h, CURLOPT_URL, url);
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
		curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, pp_http_header_cb);
		curl_easy_setopt(h, CURLOPT_HEADERDATA, resp);
		curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_cb);
		curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp->body);
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)reg->opts->stall_seconds);
		CURLcode rc = curl_easy_perform(h);
		long redirects = 0;
		curl_easy_getinfo(h, CURLINFO_REDIRECT_COUNT, &redirects);
		curl_slist_free_all(hdrs);
		curl_easy_cleanup(h);

		double wait = -1;
		if (rc == CURLE_WRITE_ERROR && max_body && resp->body.len + 1 > 0 &&
		    resp->status < 300) {
			return pp_error_set(err, PP_EPROTO, "%s: response larger than %zu bytes",
					    url, max_body);
		} else if (rc != CURLE_OK) {
			pp_curl_error(err, rc, errbuf, url);
			if (err->code == PP_ETLS || err->code == PP_EINTR ||
			    err->code == PP_EDEADLINE)
				return err->code;
			wait = pp_backoff(attempt);
		} else if (resp->status == 401 && redirects == 0 && auth_tries++ < 2) {
			/* Only the registry's own challenge: one from a redirect
			 * target would send our credentials wherever it names. */
			r = pp_registry_unauthorized(reg, repo, resp->www_authenticate, authz, err);
			if (r < 0)
				return r;
			attempt--; /* an auth round trip is not a failure */
			continue;
		} else if (resp->status == 429 || resp->status == 408 || resp->status >= 500) {
			pp_http_status_error(err, resp);
			wait = resp->retry_after >= 0 ? resp->retry_after : pp_backoff(attempt);
		} else {
			return 0;
		}
		if (attempt + 1 >= GET_ATTEMPTS || pp_should_stop())
			return err->code;
		if (pp_deadline_at > 0 && pp_now() + wait > pp_deadline_at)
			wait = pp_deadline_at - pp_now();
		pp_warn("%s: %s; retrying in %.1f s", url, err->msg, wait);
		sleep_seconds(wait);
	}
}
