/* Registry authentication: the WWW-Authenticate challenge and docker's
 * credential sources.  This header is the door for other modules; the
 * implementation is one concern per file:
 *   agent/auth_challenge.c  WWW-Authenticate parsing
 *   agent/auth_config.c     config.json, auths, which helper applies
 *   agent/auth_helper.c     running docker-credential-* helpers
 *   agent/auth_base64.c     base64 of credentials
 * Bearer tokens (cache and fetch) are in prepull/auth_token.h.
 * Secrets held here are never logged nor put into an error message. */
#ifndef PREPULL_AUTH_H
#define PREPULL_AUTH_H

struct pp_error;

enum pp_auth_scheme { PP_AUTH_NONE = 0, PP_AUTH_BASIC, PP_AUTH_BEARER };

/* A parsed challenge.  Every string is owned by the struct (freed by
 * pp_challenge_free). */
struct pp_challenge {
	enum pp_auth_scheme scheme;
	char *realm;   /* Bearer: an http(s) URL, never NULL; Basic: may be NULL */
	char *service; /* NULL when absent */
	char *scope;   /* NULL when absent */
	char *error;   /* e.g. "insufficient_scope", NULL when absent */
};

/* Parses a WWW-Authenticate header value (RFC 7235 / RFC 6750 auth-params,
 * quoted strings may hold commas and backslash escapes; scheme names are
 * case-insensitive; a trailing CRLF is ignored).  When several challenges
 * are offered, Bearer wins over Basic and the first of a scheme counts.
 * @param[out] out  zeroed first, filled on success only.
 * @return 0; PP_EUNSUPPORTED when only unknown schemes are offered;
 * PP_EPROTO for garbage, a Bearer challenge without realm or a realm that
 * is not an http(s) URL.  On success the caller frees *out with
 * pp_challenge_free; on failure there is nothing to free. */
int pp_challenge_parse(struct pp_challenge *out, const char *header, struct pp_error *err);
/* Frees what c holds and zeroes it; c itself is the caller's.  NULL is a no-op. */
void pp_challenge_free(struct pp_challenge *c);

/* Credentials for one registry.  Every string is a secret owned by the
 * struct, wiped and freed by pp_creds_free. */
struct pp_creds {
	char *username;       /* NULL when none */
	char *password;       /* NULL when none */
	char *identity_token; /* refresh token, NULL when none */
	char *registry_token; /* bearer token to send as is, NULL when none */
};

/* Looks up credentials for a registry domain ("docker.io",
 * "localhost:5000") as the docker CLI does: $DOCKER_CONFIG/config.json or
 * ~/.docker/config.json; credHelpers[key] then credsStore (running
 * `docker-credential-NAME get` with the key on stdin; the helper is looked
 * up in absolute PATH elements only) else auths[key] (exact key, then any
 * key reducing to the same host).
 * @param[out] out  zeroed first, filled on success only.
 * @return 0 when found (caller frees *out with pp_creds_free);
 * PP_ENOTFOUND when there are none (err holds a debug-worthy message);
 * PP_EPROTO for a malformed config; PP_EAUTH for a helper that is missing,
 * fails or answers garbage; PP_EUSAGE for an empty domain; an errno-based
 * error when the config cannot be read. */
int pp_creds_lookup(struct pp_creds *out, const char *domain, struct pp_error *err);
/* Wipes and frees what c holds and zeroes it; c itself is the caller's.
 * NULL is a no-op. */
void pp_creds_free(struct pp_creds *c);

/* Standard base64 of "user:pass" for a Basic Authorization header (NULL
 * user or pass count as "").
 * @return a string the caller frees, or NULL when the input is absurdly
 * long (over 1 GiB). */
char *pp_basic_auth_value(const char *user, const char *pass);

#endif
