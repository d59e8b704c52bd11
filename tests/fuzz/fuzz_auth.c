/* libFuzzer target for the WWW-Authenticate parser. */
#include "prepull/auth.h"
#include "prepull/error.h"
#include "prepull/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 8192)
		return 0;
	char *s = pp_xstrndup((const char *)data, size);
	struct pp_challenge c;
	struct pp_error err = {0};

	int r = pp_challenge_parse(&c, s, &err);
	if (r == 0) {
		if (c.scheme != PP_AUTH_BEARER && c.scheme != PP_AUTH_BASIC)
			abort();
		/* A Bearer challenge always names where to ask for a token. */
		if (c.scheme == PP_AUTH_BEARER && (!c.realm || !c.realm[0]))
			abort();
		/* Values end up in URLs and headers: no CR or LF may survive. */
		const char *const values[] = {c.realm, c.service, c.scope, c.error};
		for (size_t i = 0; i < 4; i++)
			if (values[i] && strpbrk(values[i], "\r\n"))
				abort();
		pp_challenge_free(&c);
		if (c.realm || c.service || c.scope || c.error)
			abort();
	} else {
		if (r != PP_EPROTO && r != PP_EUNSUPPORTED)
			abort();
		if (err.code != r || !err.msg[0] || strlen(err.msg) >= sizeof(err.msg))
			abort();
		if (c.realm || c.service || c.scope || c.error)
			abort();
	}
	free(s);
	return 0;
}
