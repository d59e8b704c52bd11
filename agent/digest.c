#include "prepull/digest.h"

#include "prepull/error.h"
#include "prepull/util.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

struct pp_sha256 {
	EVP_MD_CTX *ctx;
	/* Under hold_lock: a hash a worker thread updates is its while held,
	 * and every call from its owner waits until the worker lets go. */
	int held;
	int error;   /* errno a holder left, 0 for none */
	int64_t fed; /* bytes in since new or final */
};

static pthread_mutex_t hold_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hold_done = PTHREAD_COND_INITIALIZER;

/* algorithm grammar from the OCI image spec: [a-z0-9]+([+._-][a-z0-9]+)* */
static bool algorithm_ok(const char *a, size_t len)
{
	bool want_alnum = true;
	for (size_t i = 0; i < len; i++) {
		char c = a[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
		if (alnum) {
			want_alnum = false;
		} else if (!want_alnum && (c == '+' || c == '.' || c == '_' || c == '-')) {
			want_alnum = true;
		} else {
			return false;
		}
	}
	return len > 0 && !want_alnum;
}

int pp_digest_validate(const char *digest, struct pp_error *err)
{
	char shown[96];

	if (!digest || !*digest)
		return pp_error_set(err, PP_EPROTO, "empty digest");
	pp_printable(shown, sizeof(shown), digest);

	const char *colon = strchr(digest, ':');
	if (!colon || colon == digest)
		return pp_error_set(err, PP_EPROTO,
				    "invalid digest \"%s\": no algorithm (expected sha256:<hex>)",
				    shown);
	size_t alg_len = (size_t)(colon - digest);
	if (!algorithm_ok(digest, alg_len))
		return pp_error_set(err, PP_EPROTO, "invalid digest \"%s\": malformed algorithm",
				    shown);

	const char *hex = colon + 1;
	size_t hex_len = strlen(hex);
	if (alg_len != 6 || memcmp(digest, "sha256", 6) != 0) {
		if ((alg_len == 6 && memcmp(digest, "sha512", 6) == 0) ||
		    (alg_len == 6 && memcmp(digest, "blake3", 6) == 0))
			return pp_error_set(err, PP_EUNSUPPORTED,
					    "digest \"%s\": algorithm %.*s is not supported "
					    "(only sha256)",
					    shown, (int)alg_len, digest);
		return pp_error_set(err, PP_EPROTO,
				    "invalid digest \"%s\": unknown algorithm \"%.*s\"", shown,
				    alg_len > 32 ? 32 : (int)alg_len, digest);
	}

	for (size_t i = 0; i < hex_len; i++) {
		char c = hex[i];
		if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))
			continue;
		if (c >= 'A' && c <= 'F')
			return pp_error_set(err, PP_EPROTO,
					    "invalid digest \"%s\": hex must be lowercase", shown);
		return pp_error_set(err, PP_EPROTO,
				    "invalid digest \"%s\": non-hex character at offset %zu", shown,
				    i);
	}
	if (hex_len != PP_SHA256_HEX_LEN)
		return pp_error_set(
			err, PP_EPROTO,
			"invalid digest \"%s\": sha256 needs %d hex characters, got %zu", shown,
			PP_SHA256_HEX_LEN, hex_len);
	return 0;
}

const char *pp_digest_hex(const char *digest)
{
	const char *colon = strchr(digest, ':');
	return colon ? colon + 1 : digest;
}

static void crypto_fail(const char *what)
{
	fprintf(stderr, "prepull: OpenSSL %s failed\n", what);
	abort();
}

struct pp_sha256 *pp_sha256_new(void)
{
	struct pp_sha256 *h = pp_xcalloc(1, sizeof(*h));
	h->ctx = EVP_MD_CTX_new();
	if (!h->ctx)
		crypto_fail("EVP_MD_CTX_new");
	if (EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1)
		crypto_fail("EVP_DigestInit_ex");
	return h;
}

void pp_sha256_wait(const struct pp_sha256 *h)
{
	pthread_mutex_lock(&hold_lock);
	while (h->held)
		pthread_cond_wait(&hold_done, &hold_lock);
	pthread_mutex_unlock(&hold_lock);
}

static void add_fed(struct pp_sha256 *h, int64_t len)
{
	pthread_mutex_lock(&hold_lock);
	h->fed += len;
	pthread_mutex_unlock(&hold_lock);
}

void pp_sha256_update(struct pp_sha256 *h, const void *data, size_t len)
{
	if (!len)
		return;
	pp_sha256_wait(h);
	if (EVP_DigestUpdate(h->ctx, data, len) != 1)
		crypto_fail("EVP_DigestUpdate");
	add_fed(h, (int64_t)len);
}

void pp_sha256_hold(struct pp_sha256 *h)
{
	pthread_mutex_lock(&hold_lock);
	h->held++;
	pthread_mutex_unlock(&hold_lock);
}

void pp_sha256_update_held(struct pp_sha256 *h, const void *data, size_t len)
{
	if (len && EVP_DigestUpdate(h->ctx, data, len) != 1)
		crypto_fail("EVP_DigestUpdate");
	add_fed(h, (int64_t)len);
}

void pp_sha256_release(struct pp_sha256 *h, int error)
{
	pthread_mutex_lock(&hold_lock);
	h->held--;
	if (error && !h->error)
		h->error = error;
	pthread_cond_broadcast(&hold_done);
	pthread_mutex_unlock(&hold_lock);
}

bool pp_sha256_busy(const struct pp_sha256 *h)
{
	pthread_mutex_lock(&hold_lock);
	bool busy = h->held > 0;
	pthread_mutex_unlock(&hold_lock);
	return busy;
}

int64_t pp_sha256_fed(const struct pp_sha256 *h)
{
	pthread_mutex_lock(&hold_lock);
	int64_t fed = h->fed;
	pthread_mutex_unlock(&hold_lock);
	return fed;
}

int pp_sha256_error(const struct pp_sha256 *h)
{
	pthread_mutex_lock(&hold_lock);
	int error = h->error;
	pthread_mutex_unlock(&hold_lock);
	return error;
}

static void to_digest_string(const unsigned char *md, char out[PP_DIGEST_STR_LEN + 1])
{
	static const char hexdig[] = "0123456789abcdef";
	memcpy(out, "sha256:", 7);
	for (size_t i = 0; i < PP_SHA256_HEX_LEN / 2; i++) {
		out[7 + 2 * i] = hexdig[md[i] >> 4];
		out[7 + 2 * i + 1] = hexdig[md[i] & 0xf];
	}
	out[PP_DIGEST_STR_LEN] = '\0';
}

void pp_sha256_final(struct pp_sha256 *h, char out[PP_DIGEST_STR_LEN + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	pp_sha256_wait(h);
	if (EVP_DigestFinal_ex(h->ctx, md, &md_len) != 1 || md_len != PP_SHA256_HEX_LEN / 2)
		crypto_fail("EVP_DigestFinal_ex");
	to_digest_string(md, out);
	if (EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1)
		crypto_fail("EVP_DigestInit_ex");
	pthread_mutex_lock(&hold_lock);
	h->fed = 0;
	h->error = 0;
	pthread_mutex_unlock(&hold_lock);
}

void pp_sha256_copy(struct pp_sha256 *dst, const struct pp_sha256 *src)
{
	pp_sha256_wait(dst);
	pp_sha256_wait(src);
	if (EVP_MD_CTX_copy_ex(dst->ctx, src->ctx) != 1)
		crypto_fail("EVP_MD_CTX_copy_ex");
	pthread_mutex_lock(&hold_lock);
	dst->fed = src->fed;
	dst->error = src->error;
	pthread_mutex_unlock(&hold_lock);
}

void pp_sha256_free(struct pp_sha256 *h)
{
	if (!h)
		return;
	pp_sha256_wait(h);
	EVP_MD_CTX_free(h->ctx);
	free(h);
}

void pp_sha256_digest(const void *data, size_t len, char out[PP_DIGEST_STR_LEN + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	if (EVP_Digest(data, len, md, &md_len, EVP_sha256(), NULL) != 1 ||
	    md_len != PP_SHA256_HEX_LEN / 2)
		crypto_fail("EVP_Digest");
	to_digest_string(md, out);
}
