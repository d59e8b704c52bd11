/* Text that came from outside (a server's header or body, a file) made
 * safe to print and to put in JSON. */
#ifndef PREPULL_SANITIZE_H
#define PREPULL_SANITIZE_H

#include <stdbool.h>
#include <stddef.h>

/* Makes text that came from outside (a server's header or body, a file)
 * safe to print and to put in JSON: valid UTF-8 is kept except control
 * characters (C0, DEL, C1), line and paragraph separators and bidi
 * controls; those and every byte that is not valid UTF-8 are written as
 * visible escapes ("\x1b", "\u202e").  The result is always valid UTF-8
 * with no control character, and sanitising it again changes nothing.
 *
 * pp_sanitize writes at most n bytes (n >= 4) including the NUL into buf,
 * cut at a character boundary with "..." at the end when it does not fit;
 * it reads at most len bytes of s (stopping at a NUL).  Returns buf. */
const char *pp_sanitize(char *buf, size_t n, const char *s, size_t len);

/* The same, whole, in memory the caller frees; NULL gives "". */
char *pp_sanitize_dup(const char *s);

/* Whether s is already what pp_sanitize would make of it. */
bool pp_is_sanitized(const char *s);

#endif
