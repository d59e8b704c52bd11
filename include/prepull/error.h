/* One error type carried explicitly through every fallible call.
 *
 * Convention (as in crun/libgit2): a fallible function takes a
 * `struct pp_error *err` last, returns 0 on success and a negative
 * PP_E* code on failure with `err` filled in.  Callers add context with
 * pp_error_wrap() so the final message reads outermost-first:
 *   "layer sha256:ab12cd34ef56: chunk 7: HTTP 503"
 */
#ifndef PREPULL_ERROR_H
#define PREPULL_ERROR_H

#include <stddef.h>

enum pp_error_code {
	PP_OK = 0,
	PP_EGENERIC = -1,
	PP_ENOTFOUND = -2,    /* image, tag, blob or file does not exist */
	PP_EAUTH = -3,        /* 401/403, bad credentials */
	PP_EUSAGE = -4,       /* bad command line / invalid reference */
	PP_EUNSUPPORTED = -5, /* media type, schema1, digest algorithm */
	PP_EDIGEST = -6,      /* content does not hash to what was vouched for */
	PP_EIO = -7,          /* local filesystem */
	PP_ENET = -8,         /* transport: connect, reset, timeout */
	PP_ETLS = -9,         /* certificate verification */
	PP_EPROTO = -10,      /* server answered something malformed */
	PP_EDEADLINE = -11,   /* --deadline reached */
	PP_EINTR = -12,       /* SIGINT / SIGTERM */
	PP_EPERM = -13,       /* local permission denied (a file, a socket) */
};

/* err->msg is always printable, valid UTF-8: every function below passes
 * the message it formats through pp_sanitize, so a message may quote what
 * a server sent and still go to a terminal or into JSON as it is. */
struct pp_error {
	int code;         /* enum pp_error_code */
	int sys_errno;    /* errno when the cause was a syscall, else 0 */
	long http_status; /* HTTP status when the cause was a response, else 0 */
	char msg[1024];
};

/* Sets err (if non-NULL) and returns `code`. */
int pp_error_set(struct pp_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Our code for an errno: ENOENT/ENOTDIR -> PP_ENOTFOUND, EACCES/EPERM/
 * EROFS -> PP_EPERM, connection errors -> PP_ENET, the rest PP_EIO. */
int pp_errno_code(int e);

/* Like pp_error_set with pp_errno_code(errno), appending
 * ": strerror(errno)". */
int pp_error_errno(struct pp_error *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Prefixes "<context>: " to err->msg; returns err->code (or PP_EGENERIC). */
int pp_error_wrap(struct pp_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void pp_error_clear(struct pp_error *err);

#endif
