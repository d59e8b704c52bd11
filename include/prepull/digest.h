/* Digests and sha256 (OpenSSL EVP underneath). */
#ifndef PREPULL_DIGEST_H
#define PREPULL_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pp_error;

#define PP_SHA256_HEX_LEN 64
#define PP_DIGEST_STR_LEN (7 + PP_SHA256_HEX_LEN) /* "sha256:" + hex */

/* Checks "sha256:<64 lowercase hex>".  Other registered algorithms
 * (sha512, blake3) give PP_EUNSUPPORTED; anything else PP_EPROTO with a
 * message naming the problem (uppercase hex, wrong length, no algorithm). */
int pp_digest_validate(const char *digest, struct pp_error *err);

/* Pointer to the hex part of a validated digest. */
const char *pp_digest_hex(const char *digest);

struct pp_sha256; /* opaque; wraps an EVP_MD_CTX */

struct pp_sha256 *pp_sha256_new(void); /* aborts on allocation failure */
void pp_sha256_update(struct pp_sha256 *h, const void *data, size_t len);
/* Writes "sha256:<hex>" into out (PP_DIGEST_STR_LEN + 1 bytes) and resets h. */
void pp_sha256_final(struct pp_sha256 *h, char out[PP_DIGEST_STR_LEN + 1]);
/* Copies the running state (for taking a digest without ending the stream). */
void pp_sha256_copy(struct pp_sha256 *dst, const struct pp_sha256 *src);
void pp_sha256_free(struct pp_sha256 *h);

/* Handing a hash to another thread.  While a hash is held, the holder
 * updates it (pp_sha256_update_held) and every other call on it waits
 * until the holder lets go, so its owner needs no care about who has it;
 * pp_sha256_busy, _fed and _error only look, and never wait. */
void pp_sha256_hold(struct pp_sha256 *h);
void pp_sha256_update_held(struct pp_sha256 *h, const void *data, size_t len);
/* error: an errno the holder met (kept until final), 0 for none. */
void pp_sha256_release(struct pp_sha256 *h, int error);
/* Waits until no thread holds h. */
void pp_sha256_wait(const struct pp_sha256 *h);
bool pp_sha256_busy(const struct pp_sha256 *h);
/* Bytes put in since new or final (copy copies it): how far a stream has
 * been hashed. */
int64_t pp_sha256_fed(const struct pp_sha256 *h);
int pp_sha256_error(const struct pp_sha256 *h);

/* One-shot. */
void pp_sha256_digest(const void *data, size_t len, char out[PP_DIGEST_STR_LEN + 1]);

#endif
