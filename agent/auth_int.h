/* Declarations shared by the agent/auth_*.c files and nobody else.  Other
 * modules use include/prepull/auth.h. */
#ifndef PREPULL_AUTH_INT_H
#define PREPULL_AUTH_INT_H

#include <stdbool.h>
#include <stddef.h>

struct pp_buf;
struct pp_creds;
struct pp_error;

/* Wipes a NUL-terminated secret, then frees it.  NULL is a no-op. */
void pp_auth_free_secret(char *s);
/* Wipes the whole of b's buffer (its capacity, not only its length), then
 * frees it. */
void pp_auth_buf_free_secret(struct pp_buf *b);

/* A copy of s, or NULL when s is NULL or empty.  Caller frees. */
char *pp_auth_dup_nonempty(const char *s);
/* True when c holds no credential at all. */
bool pp_auth_creds_empty(const struct pp_creds *c);

/* Standard base64 (RFC 4648 §4) decoding; padding may be omitted, any
 * other character outside the alphabet is an error.
 * @return a NUL-terminated buffer (it may itself hold NULs) with its length
 * in *out_len, or NULL for invalid input.  The caller wipes and frees it. */
char *pp_auth_b64_decode(const char *s, size_t *out_len);

/* Runs `docker-credential-HELPER get` for the config key `key` (found on
 * PATH, absolute PATH elements only).
 * @return 0 with *out filled (caller frees with pp_creds_free);
 * PP_ENOTFOUND when the helper has none for `key`; PP_EAUTH when the helper
 * is invalid, missing, fails, times out or answers garbage. */
int pp_auth_creds_from_helper(struct pp_creds *out, const char *helper, const char *key,
			      struct pp_error *err);

#endif
