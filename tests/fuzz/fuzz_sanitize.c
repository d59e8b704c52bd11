/* libFuzzer target for the sanitiser every printed string passes through:
 * whatever bytes come in, what comes out is valid UTF-8 without control
 * characters (jansson takes it), fits the buffer, and is stable. */
#include "prepull/error.h"
#include "prepull/sanitize.h"
#include "prepull/util.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const char *out, size_t n)
{
	if (strlen(out) >= n || !pp_is_sanitized(out))
		abort();
	for (const unsigned char *p = (const unsigned char *)out; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			abort();
	json_t *j = json_string(out);
	if (!j)
		abort();
	json_decref(j);
	char again[4096];
	if (strlen(out) < sizeof(again) &&
	    strcmp(pp_sanitize(again, sizeof(again), out, strlen(out)), out) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 1024)
		return 0;
	/* The first byte picks the output buffer's size, to exercise cutting. */
	size_t n = 4 + data[0];
	char *s = pp_xstrndup((const char *)data + 1, size - 1);
	char *out = pp_xmalloc(n);
	check(pp_sanitize(out, n, s, size - 1), n);
	char *dup = pp_sanitize_dup(s);
	check(dup, strlen(dup) + 1);
	struct pp_error err = {0};
	pp_error_set(&err, PP_EPROTO, "%s", s);
	pp_error_wrap(&err, "%s", s);
	check(err.msg, sizeof(err.msg));
	free(dup);
	free(out);
	free(s);
	return 0;
}
