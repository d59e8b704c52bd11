/* Image references: parse and normalise as docker does.
 *
 *   busybox                    -> docker.io/library/busybox:latest
 *   user/app:1.0               -> docker.io/user/app:1.0
 *   localhost:5000/a/b@sha256:… -> localhost:5000/a/b@sha256:…
 *   [::1]:5000/x:tag           -> [::1]:5000/x:tag
 */
#ifndef PREPULL_REFERENCE_H
#define PREPULL_REFERENCE_H

#include <stdbool.h>

struct pp_error;

struct pp_ref {
	char *domain; /* "docker.io", "localhost:5000", "[::1]:5000" */
	char *path;   /* "library/busybox" */
	char *tag;    /* "latest", or NULL when only a digest was given */
	char *digest; /* "sha256:<hex>" or NULL */
	char *full;   /* normalised: domain/path[:tag][@digest] */
};

/* Parses `s`.  On success fills *out (caller frees with pp_ref_free).
 * Errors: PP_EUSAGE with a message saying what is wrong, e.g.
 * "invalid reference \"Foo/Bar\": repository name must be lowercase". */
int pp_ref_parse(struct pp_ref *out, const char *s, struct pp_error *err);
void pp_ref_free(struct pp_ref *ref);

/* "domain/path" without tag or digest. */
char *pp_ref_name(const struct pp_ref *ref);

/* The host[:port] to send HTTP requests to: docker.io -> registry-1.docker.io. */
const char *pp_ref_api_host(const struct pp_ref *ref);

/* True for localhost, 127.0.0.0/8 and ::1 (with or without port): for
 * such registries HTTPS is tried first and plain HTTP is the fallback, as
 * docker does. */
bool pp_domain_is_local(const char *domain);

/* The key docker's config.json uses for this domain:
 * docker.io -> "https://index.docker.io/v1/", else the domain itself. */
const char *pp_domain_config_key(const char *domain);

#endif
