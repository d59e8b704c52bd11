/* Base64 for credentials: the Basic Authorization value and the "auth"
 * field of docker's config.json.  Buffers that held a secret are wiped
 * before they are freed. */
#include "prepull/auth.h"

#include "auth_int.h"
#include "prepull/util.h"

#include <openssl/evp.h>
#include <stdint.h>
#include <string.h>

char *pp_basic_auth_value(const char *user, const char *pass)
{
	if (!user)
		user = "";
	if (!pass)
		pass = "";
	size_t ul = strlen(user), pl = strlen(pass);
	size_t n = ul + 1 + pl;
	if (n > (size_t)INT32_MAX / 2)
		return NULL;
	char *plain = pp_xmalloc(n + 1);
	memcpy(plain, user, ul);
	plain[ul] = ':';
	memcpy(plain + ul + 1, pass, pl + 1);
	char *out = pp_xmalloc(4 * ((n + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)plain, (int)n);
	explicit_bzero(plain, n);
	free(plain);
	return out;
}

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Standard base64 (RFC 4648 §4).  Padding may be omitted; anything else
 * that is not part of the alphabet is an error.  Returns a NUL-terminated
 * buffer (which may itself hold NULs) and its length, or NULL. */
char *pp_auth_b64_decode(const char *s, size_t *out_len)
{
	size_t len = strlen(s);
	while (len > 0 && s[len - 1] == '=')
		len--;
	if (strlen(s) - len > 2 || len % 4 == 1)
		return NULL;
	char *out = pp_xmalloc(len / 4 * 3 + 3);
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < len; i++) {
		int v = b64_value((unsigned char)s[i]);
		if (v < 0) {
			explicit_bzero(out, o);
			free(out);
			return NULL;
		}
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (char)((acc >> bits) & 0xff);
		}
	}
	out[o] = '\0';
	*out_len = o;
	return out;
}
