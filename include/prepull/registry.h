/* A registry client: one per registry domain, shared by every image and
 * blob from that domain.  It owns the credentials and the bearer tokens
 * (cached per repository, renewed before they expire) and knows how to
 * configure a curl handle for the registry's transport (TLS, plain HTTP). */
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

/* Returns the registry for a domain, creating it on first use.  Registries
 * live until pp_registry_free_all(). */
int pp_registry_get(struct pp_registry **out, const char *domain, const struct pp_options *opts,
		    struct pp_error *err);
void pp_registry_free_all(void);

const char *pp_registry_domain(const struct pp_registry *reg);

/* "http(s)://host/v2/<repo>/<kind>/<ref>".  Caller frees. */
char *pp_registry_url(const struct pp_registry *reg, const char *repo, const char *kind,
		      const char *ref);

/* Applies transport settings shared by every request to this registry
 * (TLS trust, timeouts, protocols, redirects, user agent). */
void pp_registry_setup_handle(const struct pp_registry *reg, CURL *h);

/* The Authorization header line for `repo` ("Authorization: Bearer …"),
 * fetching or renewing a token when needed; *out is NULL when the
 * registry wants none.  Caller frees. */
int pp_registry_auth_header(struct pp_registry *reg, const char *repo, char **out,
			    struct pp_error *err);

/* Reacts to a 401 for a request that carried `sent_authorization` (the
 * header line, NULL for none): parses the challenge, drops the token if it
 * is the one that was refused, and gets credentials ready for the next
 * request.  A 401 for a request sent with an older token (others were in
 * flight while it was renewed) just asks for a retry.  PP_EAUTH when there
 * is nothing left to try (no credentials, or the current ones were
 * refused). */
int pp_registry_unauthorized(struct pp_registry *reg, const char *repo,
			     const char *www_authenticate, const char *sent_authorization,
			     struct pp_error *err);

/* GET with auth, retries (5xx/429/transport, Retry-After honoured) and a
 * body cap.  Returns 0 with resp filled for any final HTTP status; the
 * caller interprets 4xx.  Transport failures are PP_ENET / PP_ETLS. */
int pp_registry_get_url(struct pp_registry *reg, const char *repo, const char *url,
			const char *accept, size_t max_body, struct pp_http_response *resp,
			struct pp_error *err);

#endif
