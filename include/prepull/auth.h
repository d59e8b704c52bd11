/* Registry authentication: the WWW-Authenticate challenge and docker's
 * credential sources.  Secrets held here are never logged. */
#ifndef PREPULL_AUTH_H
#define PREPULL_AUTH_H

struct pp_error;

enum pp_auth_scheme { PP_AUTH_NONE = 0, PP_AUTH_BASIC, PP_AUTH_BEARER };

struct pp_challenge {
	enum pp_auth_scheme scheme;
	char *realm;
	char *service; /* NULL when absent */
	char *scope;   /* NULL when absent */
	char *error;   /* e.g. "insufficient_scope", NULL when absent */
};

/* Parses a WWW-Authenticate header value (RFC 7235 / RFC 6750 auth-params,
 * quoted strings may hold commas and backslash escapes; scheme names are
 * case-insensitive).  An unknown scheme is PP_EUNSUPPORTED; garbage is
 * PP_EPROTO.  Caller frees with pp_challenge_free. */
int pp_challenge_parse(struct pp_challenge *out, const char *header, struct pp_error *err);
void pp_challenge_free(struct pp_challenge *c);

struct pp_creds {
	char *username;       /* NULL when none */
	char *password;       /* NULL when none */
	char *identity_token; /* refresh token, NULL when none */
	char *registry_token; /* bearer token to send as is, NULL when none */
};

/* Looks up credentials for a registry domain ("docker.io",
 * "localhost:5000") as the docker CLI does: $DOCKER_CONFIG/config.json or
 * ~/.docker/config.json; credHelpers[key] then credsStore (running
 * `docker-credential-NAME get` with the key on stdin) else auths[key]
 * (exact key, then any key reducing to the same host).
 * Returns 0 and fills *out when found; PP_ENOTFOUND (err untouched apart
 * from a debug-worthy message) when there are none; other codes for a
 * config or helper that fails (malformed JSON, helper error).  Caller frees
 * with pp_creds_free. */
int pp_creds_lookup(struct pp_creds *out, const char *domain, struct pp_error *err);
void pp_creds_free(struct pp_creds *c);

/* Standard base64 of "user:pass" for a Basic Authorization header.  Caller frees. */
char *pp_basic_auth_value(const char *user, const char *pass);

#endif
