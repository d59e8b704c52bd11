/* A registry client: one per registry domain, shared by every image and
 * blob from that domain.  It knows the registry's scheme (HTTPS, or plain
 * HTTP for --plain-http and loopback registries without TLS), builds its
 * URLs and configures curl handles for it (TLS trust, timeouts).  Each
 * registry owns its authentication state (credentials, challenge, bearer
 * tokens: prepull/auth_token.h), reached through pp_registry_auth_header()
 * and pp_registry_unauthorized(). */
#ifndef PREPULL_REGISTRY_H
#define PREPULL_REGISTRY_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stdint.h>

#include "prepull/http.h"
#include "prepull/util.h"

struct pp_error;
struct pp_options;
struct pp_registry;

/* The registry for a domain, created on first use (which may probe a
 * loopback registry for TLS).  `opts` is borrowed and must outlive it.
 * @param[out] out  the registry; it is not the caller's to free:
 * registries live until pp_registry_free_all().
 * Its mirrors are read then (prepull/hosts.h).
 * @return 0, or the error of a mirror configuration that cannot be used
 * (PP_EUSAGE for a malformed one). */
int pp_registry_get(struct pp_registry **out, const char *domain, const struct pp_options *opts,
		    struct pp_error *err);
void pp_registry_free_all(void);

/* What this process's connections cost so far: TCP connections opened to
 * registries and CDNs, the TLS handshakes among them, and how many of those
 * resumed an earlier session (an abbreviated handshake: every handle shares one
 * TLS session cache).  Counted as they happen, not estimated. */
void pp_registry_conn_stats(long *connections, long *tls, long *tls_resumed);

/* The domain the registry was created for; owned by the registry. */
const char *pp_registry_domain(const struct pp_registry *reg);

/* True when the registry is spoken to over HTTPS (false for --plain-http
 * and for a loopback registry that answered no TLS handshake). */
bool pp_registry_is_https(const struct pp_registry *reg);

/* The shortest time from request to first byte of the registry's API
 * requests so far (manifests, configs), in seconds; 0 before any. */
double pp_registry_round_trip(const struct pp_registry *reg);

/* "http(s)://host/v2/<repo>/<kind>/<ref>" (a mirror's API root, and
 * "?ns=<registry>" for a mirror).  Caller frees. */
char *pp_registry_url(const struct pp_registry *reg, const char *repo, const char *kind,
		      const char *ref);

/* Applies transport settings shared by every request to this registry
 * (TLS trust, timeouts, protocols, redirects, user agent). */
void pp_registry_setup_handle(const struct pp_registry *reg, CURL *h);

/* The Authorization header line for `repo` ("Authorization: Bearer …" or
 * "… Basic …"), fetching or renewing a token when needed.
 * @param[out] out  the line, which the caller frees; NULL when the
 * registry wants none (no challenge yet, or Basic without credentials).
 * @return 0, or the token request's error (PP_EAUTH when the token server
 * refuses the credentials). */
int pp_registry_auth_header(struct pp_registry *reg, const char *repo, char **out,
			    struct pp_error *err);

/* Reacts to a 401 for a request that carried `sent_authorization` (the
 * header line, NULL for none): parses the challenge, drops the token if it
 * is the one that was refused, and gets credentials ready for the next
 * request.  A 401 for a request sent with an older token (others were in
 * flight while it was renewed) just asks for a retry.  A refused token
 * means "denied" only when it was fetched moments ago (the first for the
 * repository, or the replacement of a refused one) and the challenge does
 * not say error="invalid_token"; a token refused after working for a while
 * is dropped so that the next request fetches a new one.
 * @return 0 when the request is worth sending again; PP_EAUTH when there is
 * nothing left to try (no credentials, or the current ones were refused);
 * PP_EPROTO / PP_EUNSUPPORTED for a challenge that cannot be used. */
int pp_registry_unauthorized(struct pp_registry *reg, const char *repo,
			     const char *www_authenticate, const char *sent_authorization,
			     struct pp_error *err);

/* GET with auth, retries (5xx/429/transport, Retry-After honoured) and a
 * body cap of max_body bytes.  `resp` is the caller's: it is reset first
 * and the caller frees what it holds (pp_http_response_reset and
 * pp_buf_free on resp->body) whatever the result.
 * @return 0 with resp filled for any final HTTP status (the caller
 * interprets 4xx); PP_EPROTO for a body over the cap; PP_ENET / PP_ETLS for
 * transport failures; PP_EINTR / PP_EDEADLINE when stopped; the auth
 * errors of pp_registry_auth_header / pp_registry_unauthorized. */
int pp_registry_get_url(struct pp_registry *reg, const char *repo, const char *url,
			const char *accept, size_t max_body, struct pp_http_response *resp,
			struct pp_error *err);

/* Like pp_registry_get_url for "<root>/<repo>/<kind>/<ref>", asked of the
 * registry's mirrors first (prepull/hosts.h): a tag only of hosts that may
 * resolve, anything by digest of hosts that may pull.  A mirror that is
 * down, answers anything but 2xx, or (for a ref that is a digest) sends
 * bytes that do not hash to it, hands the request to the next host,
 * without retries; the registry itself, last, answers as
 * pp_registry_get_url does. */
int pp_registry_get_object(struct pp_registry *reg, const char *repo, const char *kind,
			   const char *ref, const char *accept, size_t max_body,
			   struct pp_http_response *resp, struct pp_error *err);

/* The i-th host (from 0) that may serve `cap` (PP_CAP_PULL or
 * PP_CAP_RESOLVE) for this registry: its mirrors in order, then the
 * registry itself; NULL past the end.  A mirror is a registry of its own
 * (URLs with ?ns=, TLS settings, credentials), owned by `reg`. */
struct pp_registry *pp_registry_source(struct pp_registry *reg, unsigned cap, size_t i);

/* True for a mirror (a host standing in for another registry). */
bool pp_registry_is_mirror(const struct pp_registry *reg);

/* Appends the header lines hosts.toml sets for this host to l. */
struct curl_slist *pp_registry_add_headers(const struct pp_registry *reg, struct curl_slist *l);

#endif
