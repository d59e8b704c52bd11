/* One registry's authentication state: the credentials from the docker
 * config (loaded on first need), the registry's last challenge, and the
 * bearer tokens cached per repository, fetched from the challenge's realm
 * and renewed before they expire.  The registry client (registry.c) owns
 * one per registry and other modules reach it through
 * pp_registry_auth_header() and pp_registry_unauthorized().  Tokens and
 * credentials are never logged. */
#ifndef PREPULL_AUTH_TOKEN_H
#define PREPULL_AUTH_TOKEN_H

#include <curl/curl.h>
#include <stdbool.h>

struct pp_error;
struct pp_auth;

/* What token requests need of the registry they authenticate for. */
struct pp_auth_transport {
	const char *domain; /* for messages; borrowed for the state's life */
	bool https;         /* the registry is reached over TLS */
	/* Applies the registry's transport settings (TLS trust, timeouts,
	 * user agent) to a token request's handle. */
	void (*setup)(const void *ctx, CURL *h);
	const void *ctx;
};

/* @param tr  copied; what it points at is borrowed for the state's life.
 * @return a new state with no challenge and no token; never NULL.  Free
 * with pp_auth_free. */
struct pp_auth *pp_auth_new(const struct pp_auth_transport *tr);
/* Frees the state, wiping credentials and tokens.  NULL is a no-op. */
void pp_auth_free(struct pp_auth *a);

/* The Authorization header line for `repo` ("Authorization: Bearer …" or
 * "Authorization: Basic …"), fetching or renewing a token when needed.
 * @param[out] out  the line, which the caller frees; NULL when the
 * registry asked for nothing yet or there are no credentials for Basic.
 * @return 0, or the token request's error (PP_EAUTH when the token server
 * refuses, PP_ENET/PP_ETLS/PP_EPROTO/... otherwise). */
int pp_auth_header(struct pp_auth *a, const char *repo, char **out, struct pp_error *err);

/* Reacts to a 401 (see pp_registry_unauthorized in prepull/registry.h).
 * @return 0 when the request is worth sending again; PP_EAUTH when there is
 * nothing left to try; PP_EPROTO/PP_EUNSUPPORTED for a challenge that
 * cannot be parsed. */
int pp_auth_unauthorized(struct pp_auth *a, const char *repo, const char *www_authenticate,
			 const char *sent_authorization, struct pp_error *err);

#endif
