#include "prepull/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "prepull/sanitize.h"

/* Every message may quote what a server sent (a header, an error body) and
 * ends up on a terminal, in the journal and in --json events: it is made
 * printable valid UTF-8 here, once, where it is written.  This also mends a
 * multi-byte character that formatting or wrapping cut in two. */
static void sanitize_msg(struct pp_error *err)
{
	if (pp_is_sanitized(err->msg))
		return;
	char clean[sizeof(err->msg)];
	pp_sanitize(clean, sizeof(clean), err->msg, sizeof(err->msg));
	memcpy(err->msg, clean, sizeof(clean));
}

int pp_error_set(struct pp_error *err, int code, const char *fmt, ...)
{
	if (!err)
		return code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	sanitize_msg(err);
	err->code = code;
	err->sys_errno = 0;
	err->http_status = 0;
	return code;
}

int pp_errno_code(int e)
{
	switch (e) {
	case ENOENT:
	case ENOTDIR:
		return PP_ENOTFOUND;
	case EACCES:
	case EPERM:
	case EROFS:
		return PP_EPERM;
	case ECONNREFUSED:
	case ECONNRESET:
	case ECONNABORTED:
	case ETIMEDOUT:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case ENETDOWN:
	case EPIPE:
		return PP_ENET;
	default:
		return PP_EIO;
	}
}

int pp_error_errno(struct pp_error *err, const char *fmt, ...)
{
	int saved = errno;
	if (!err)
		return pp_errno_code(saved);
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < sizeof(err->msg))
		snprintf(err->msg + n, sizeof(err->msg) - n, ": %s%s", strerror(saved),
			 saved == ELOOP ? " (a symbolic link is not followed here)" : "");
	sanitize_msg(err);
	err->code = pp_errno_code(saved);
	err->sys_errno = saved;
	err->http_status = 0;
	return err->code;
}

int pp_error_wrap(struct pp_error *err, const char *fmt, ...)
{
	if (!err)
		return PP_EGENERIC;
	char prefix[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	size_t plen = strlen(prefix);
	if (plen + 2 >= sizeof(err->msg))
		plen = sizeof(err->msg) - 3;
	/* Shift the old message right and put "<prefix>: " in front of it. */
	memmove(err->msg + plen + 2, err->msg, sizeof(err->msg) - plen - 2);
	err->msg[sizeof(err->msg) - 1] = '\0';
	memcpy(err->msg, prefix, plen);
	err->msg[plen] = ':';
	err->msg[plen + 1] = ' ';
	sanitize_msg(err);
	return err->code ? err->code : PP_EGENERIC;
}

void pp_error_clear(struct pp_error *err)
{
	if (err)
		memset(err, 0, sizeof(*err));
}
