/* Registry client: one per domain; URL building, transport settings and
 * GET with retries.  Authentication (credentials, challenge, bearer
 * tokens) is the pp_auth state each registry owns (auth_token.c). */
#include <errno.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "prepull/auth_token.h"
#include "prepull/digest.h"
#include "prepull/stop.h"
#include "prepull/error.h"
#include "prepull/hosts.h"
#include "prepull/http.h"
#include "prepull/log.h"
#include "prepull/options.h"
#include "prepull/reference.h"
#include "prepull/registry.h"
#include "prepull/util.h"

struct pp_registry {
	struct pp_registry *next;
	char *domain; /* a mirror's: its host[:port], its credentials' key */
	char *api_host;
	const char *scheme;
	char *path; /* the API root, "/v2" unless hosts.toml says otherwise */
	char *ns;   /* a mirror's: the registry it stands in for (?ns=) */
	unsigned caps;
	const struct pp_options *opts;
	char *ca_dir_cert; /* /etc/docker/certs.d/<host>/ca.crt when present */
	char *ca;          /* hosts.toml ca */
	char *client_cert;
	char *client_key;
	bool skip_verify;
	struct pp_host headers; /* only its header lines are used */
	struct pp_auth *auth;
	/* The registry's: its mirrors in order, then itself. */
	struct pp_registry **sources;
	size_t n_sources;
	double round_trip; /* the shortest request-to-first-byte of its API requests; 0: none */
};

static struct pp_registry *registries;

/* One TLS session cache for every handle of the process: libcurl keeps it per
 * easy handle otherwise, and each chunk gets a fresh handle, so every new
 * connection paid a full handshake (another round trip and the key exchange's
 * CPU on both ends).  Made with the first registry, freed with the last. */
static CURLSH *share;
static pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];

/* What the connections cost, counted where it happens: a socket curl opens for
 * a connection, and each TLS handshake OpenSSL finishes (resumed or full). */
static long n_connections, n_tls, n_tls_resumed;
static int tls_counted_idx = -1;

static void share_lock(CURL *h, curl_lock_data d, curl_lock_access a, void *u)
{
	(void)h, (void)a, (void)u;
	pthread_mutex_lock(&share_locks[d]);
}

static void share_unlock(CURL *h, curl_lock_data d, void *u)
{
	(void)h, (void)u;
	pthread_mutex_unlock(&share_locks[d]);
}

static void share_init(void)
{
	if (share)
		return;
	for (size_t i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&share_locks[i], NULL);
	share = curl_share_init();
	if (!share)
		return; /* each handle keeps its own cache, as before */
	curl_share_setopt(share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	/* Marks an SSL object counted: OpenSSL may report a handshake done more
	 * than once for one connection (TLS 1.3 post-handshake messages). */
	if (tls_counted_idx < 0)
		tls_counted_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static int count_socket(void *u, curl_socket_t fd, curlsocktype purpose)
{
	(void)u, (void)fd;
	if (purpose == CURLSOCKTYPE_IPCXN)
		__atomic_add_fetch(&n_connections, 1, __ATOMIC_RELAXED);
	return CURL_SOCKOPT_OK;
}

static void count_handshake(const SSL *ssl, int where, int ret)
{
	(void)ret;
	if (!(where & SSL_CB_HANDSHAKE_DONE) || tls_counted_idx < 0)
		return;
	SSL *s = (SSL *)ssl; /* ex_data is set through a non-const pointer */
	if (SSL_get_ex_data(s, tls_counted_idx))
		return;
	SSL_set_ex_data(s, tls_counted_idx, s);
	__atomic_add_fetch(&n_tls, 1, __ATOMIC_RELAXED);
	if (SSL_session_reused(s))
		__atomic_add_fetch(&n_tls_resumed, 1, __ATOMIC_RELAXED);
}

/* libcurl makes an SSL_CTX per connection (OpenSSL backend): watch its handshake. */
static CURLcode watch_tls(CURL *h, void *ctx, void *u)
{
	(void)h, (void)u;
	SSL_CTX_set_info_callback(ctx, count_handshake);
	return CURLE_OK;
}

/* CURLOPT_SSL_CTX_FUNCTION hands over an SSL_CTX only with OpenSSL. */
static bool ssl_is_openssl(void)
{
	const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
	return v->ssl_version && strncmp(v->ssl_version, "OpenSSL", 7) == 0;
}

void pp_registry_conn_stats(long *connections, long *tls, long *tls_resumed)
{
	*connections = __atomic_load_n(&n_connections, __ATOMIC_RELAXED);
	*tls = __atomic_load_n(&n_tls, __ATOMIC_RELAXED);
	*tls_resumed = __atomic_load_n(&n_tls_resumed, __ATOMIC_RELAXED);
}

const char *pp_registry_domain(const struct pp_registry *reg)
{
	return reg->domain;
}

bool pp_registry_is_https(const struct pp_registry *reg)
{
	return strcmp(reg->scheme, "https") == 0;
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

static void setup_handle(const void *ctx, CURL *h)
{
	pp_registry_setup_handle(ctx, h);
}

/* hosts.toml's or daemon.json's settings for a host. */
static void take_host(struct pp_registry *r, struct pp_host *h)
{
	r->caps = h->caps;
	r->skip_verify = h->skip_verify || h->insecure_registry;
	r->ca = h->ca;
	r->client_cert = h->client_cert;
	r->client_key = h->client_key;
	h->ca = h->client_cert = h->client_key = NULL;
	r->headers.headers = h->headers;
	r->headers.n_headers = h->n_headers;
	h->headers = NULL;
	h->n_headers = 0;
	if (!r->ca_dir_cert) {
		/* docker's per-registry CA directory, as `docker pull` would use it. */
		char *ca = pp_xasprintf("/etc/docker/certs.d/%s/ca.crt", r->domain);
		struct stat st;
		if (stat(ca, &st) == 0)
			r->ca_dir_cert = ca;
		else
			free(ca);
	}
}

static void new_auth(struct pp_registry *r)
{
	struct pp_auth_transport tr = {r->domain, strcmp(r->scheme, "https") == 0, setup_handle, r};
	r->auth = pp_auth_new(&tr);
}

/* A mirror of `up`, as a registry of its own (its own TLS and credentials). */
static struct pp_registry *mirror_new(struct pp_registry *up, struct pp_host *h)
{
	struct pp_registry *m = pp_xcalloc(1, sizeof(*m));
	m->domain = pp_xstrdup(h->host);
	m->api_host = pp_xstrdup(h->host);
	m->scheme = strcmp(h->scheme, "http") == 0 ? "http" : "https";
	m->path = pp_xstrdup(h->path);
	m->ns = pp_xstrdup(up->domain);
	m->opts = up->opts;
	take_host(m, h);
	new_auth(m);
	pp_debug("%s: mirror %s://%s%s (%s%s)", up->domain, m->scheme, m->api_host, m->path,
		 m->caps & PP_CAP_PULL ? "pull" : "", m->caps & PP_CAP_RESOLVE ? " resolve" : "");
	return m;
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
	share_init();
	struct pp_host_list hl = {0};
	int res = pp_hosts_for(&hl, domain, opts, err);
	if (res < 0)
		return res;
	struct pp_host *up = &hl.v[hl.n - 1];
	struct pp_registry *r = pp_xcalloc(1, sizeof(*r));
	r->domain = pp_xstrdup(domain);
	r->opts = opts;
	if (up->host) {
		/* hosts.toml's server: the registry is reached there. */
		r->api_host = pp_xstrdup(up->host);
		r->scheme = strcmp(up->scheme, "http") == 0 ? "http" : "https";
		r->path = pp_xstrdup(up->path);
	} else {
		r->api_host = pp_xstrdup(strcmp(domain, "docker.io") == 0 ? "registry-1.docker.io"
									  : domain);
		r->scheme = opts->plain_http ? "http" : "https";
		r->path = pp_xstrdup("/v2");
	}
	take_host(r, up);
	/* An insecure registry (daemon.json) may speak plain HTTP, as docker
	 * lets it: probed like a loopback one. */
	if (!opts->plain_http && !up->host && (pp_domain_is_local(domain) || up->insecure_registry))
		r->scheme = probe_scheme(r);
	new_auth(r);
	r->n_sources = hl.n;
	r->sources = pp_xcalloc(hl.n, sizeof(*r->sources));
	for (size_t i = 0; i + 1 < hl.n; i++)
		r->sources[i] = mirror_new(r, &hl.v[i]);
	r->sources[hl.n - 1] = r;
	pp_host_list_free(&hl);
	r->next = registries;
	registries = r;
	*out = r;
	return 0;
}

static void registry_free(struct pp_registry *r)
{
	pp_auth_free(r->auth);
	free(r->ca_dir_cert);
	free(r->ca);
	free(r->client_cert);
	free(r->client_key);
	pp_host_free(&r->headers);
	free(r->domain);
	free(r->api_host);
	free(r->path);
	free(r->ns);
	free(r);
}

void pp_registry_free_all(void)
{
	while (registries) {
		struct pp_registry *r = registries;
		registries = r->next;
		for (size_t i = 0; i + 1 < r->n_sources; i++)
			registry_free(r->sources[i]);
		free(r->sources);
		registry_free(r);
	}
	/* Every handle is gone by now; one still using the share keeps it. */
	if (share && curl_share_cleanup(share) == CURLSHE_OK)
		share = NULL;
}

struct pp_registry *pp_registry_source(struct pp_registry *reg, unsigned cap, size_t i)
{
	for (size_t k = 0; k < reg->n_sources; k++) {
		struct pp_registry *s = reg->sources[k];
		if (s != reg && !(s->caps & cap))
			continue;
		if (i-- == 0)
			return s;
	}
	return NULL;
}

bool pp_registry_is_mirror(const struct pp_registry *reg)
{
	return reg->ns != NULL;
}

struct curl_slist *pp_registry_add_headers(const struct pp_registry *reg, struct curl_slist *l)
{
	for (size_t i = 0; i < reg->headers.n_headers; i++)
		l = curl_slist_append(l, reg->headers.headers[i]);
	return l;
}

char *pp_registry_url(const struct pp_registry *reg, const char *repo, const char *kind,
		      const char *ref)
{
	/* Spegel and others find the upstream by the ns parameter containerd sends. */
	if (reg->ns)
		return pp_xasprintf("%s://%s%s/%s/%s/%s?ns=%s", reg->scheme, reg->api_host,
				    reg->path, repo, kind, ref, reg->ns);
	return pp_xasprintf("%s://%s%s/%s/%s/%s", reg->scheme, reg->api_host, reg->path, repo, kind,
			    ref);
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
	if (share)
		curl_easy_setopt(h, CURLOPT_SHARE, share);
	curl_easy_setopt(h, CURLOPT_SOCKOPTFUNCTION, count_socket);
	if (ssl_is_openssl())
		curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, watch_tls);
	const char *ca = o->ca_cert ? o->ca_cert : reg->ca ? reg->ca : reg->ca_dir_cert;
	if (ca) {
		/* CAINFO replaces the default bundle; CAPATH keeps the system CAs trusted. */
		curl_easy_setopt(h, CURLOPT_CAINFO, ca);
		curl_easy_setopt(h, CURLOPT_CAPATH, "/etc/ssl/certs");
	}
	if (reg->client_cert) {
		curl_easy_setopt(h, CURLOPT_SSLCERT, reg->client_cert);
		if (reg->client_key)
			curl_easy_setopt(h, CURLOPT_SSLKEY, reg->client_key);
	}
	if (o->insecure || reg->skip_verify) {
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
	}
}

int pp_registry_auth_header(struct pp_registry *reg, const char *repo, char **out,
			    struct pp_error *err)
{
	return pp_auth_header(reg->auth, repo, out, err);
}

int pp_registry_unauthorized(struct pp_registry *reg, const char *repo,
			     const char *www_authenticate, const char *sent_authorization,
			     struct pp_error *err)
{
	return pp_auth_unauthorized(reg->auth, repo, www_authenticate, sent_authorization, err);
}

/* The GET of pp_registry_get_url; `once` (for a mirror): no retry, a
 * transport failure returned and a 5xx/429 left in resp, for the next
 * host to take the request. */
static void note_round_trip(struct pp_registry *reg, CURL *h)
{
	double t = pp_http_round_trip(h);
	if (t > 0 && (reg->round_trip <= 0 || t < reg->round_trip))
		reg->round_trip = t;
}

double pp_registry_round_trip(const struct pp_registry *reg)
{
	return reg->round_trip;
}

static int get_url(struct pp_registry *reg, const char *repo, const char *url, const char *accept,
		   size_t max_body, struct pp_http_response *resp, bool once, struct pp_error *err)
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
		hdrs = pp_registry_add_headers(reg, hdrs);
		pp_http_response_reset(resp);
		pp_buf_free(&resp->body);
		resp->body.limit = max_body;
		pp_registry_setup_handle(reg, h);
		pp_http_capture(h, url, hdrs, errbuf, resp);
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)reg->opts->stall_seconds);
		CURLcode rc = curl_easy_perform(h);
		long redirects = 0;
		curl_easy_getinfo(h, CURLINFO_REDIRECT_COUNT, &redirects);
		if (rc == CURLE_OK && redirects == 0)
			note_round_trip(reg, h);
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
			    err->code == PP_EDEADLINE || once)
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
			if (once)
				return 0;
			pp_http_status_error(err, resp);
			wait = resp->retry_after >= 0 ? resp->retry_after : pp_backoff(attempt);
		} else {
			return 0;
		}
		r = pp_http_retry_wait(attempt, wait, url, err);
		if (r < 0)
			return r;
	}
}

int pp_registry_get_url(struct pp_registry *reg, const char *repo, const char *url,
			const char *accept, size_t max_body, struct pp_http_response *resp,
			struct pp_error *err)
{
	return get_url(reg, repo, url, accept, max_body, resp, false, err);
}

int pp_registry_get_object(struct pp_registry *reg, const char *repo, const char *kind,
			   const char *ref, const char *accept, size_t max_body,
			   struct pp_http_response *resp, struct pp_error *err)
{
	/* A tag is resolved only where resolving is allowed; anything named by
	 * its digest may come from any host that pulls (the digest is checked). */
	unsigned cap =
		strcmp(kind, "manifests") == 0 && !strchr(ref, ':') ? PP_CAP_RESOLVE : PP_CAP_PULL;
	for (size_t i = 0;; i++) {
		struct pp_registry *s = pp_registry_source(reg, cap, i);
		cleanup_free char *url = pp_registry_url(s, repo, kind, ref);
		if (s == reg) {
			int r = get_url(s, repo, url, accept, max_body, resp, false, err);
			/* Docker Hub counts manifest requests: say what is left. */
			if (r == 0 && resp->ratelimit_remaining)
				pp_debug("%s: rate limit %s, remaining %s", reg->domain,
					 resp->ratelimit_limit ? resp->ratelimit_limit : "?",
					 resp->ratelimit_remaining);
			return r;
		}
		int r = get_url(s, repo, url, accept, max_body, resp, true, err);
		if (r == PP_EINTR || r == PP_EDEADLINE)
			return r;
		/* What is named by its digest is checked here, so that a mirror's
		 * wrong bytes cost a fall-through, not the image. */
		char got[PP_DIGEST_STR_LEN + 1] = "";
		bool ok = r == 0 && resp->status >= 200 && resp->status < 300;
		if (ok && strncmp(ref, "sha256:", 7) == 0) {
			pp_sha256_digest(resp->body.data ? resp->body.data : "", resp->body.len,
					 got);
			ok = strcmp(got, ref) == 0;
		}
		if (ok) {
			pp_debug("%s/%s: %s %s from mirror %s", reg->domain, repo, kind, ref,
				 s->domain);
			return 0;
		}
		if (r == 0 && got[0])
			pp_error_set(err, PP_EDIGEST, "content hashes to %s", got);
		else if (r == 0)
			pp_http_status_error(err, resp);
		pp_info("%s/%s: %s %s: mirror %s: %s; trying the next host", reg->domain, repo,
			kind, pp_short_digest(ref), s->domain, err->msg);
		pp_error_clear(err);
	}
}
