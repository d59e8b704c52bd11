/* Text from outside made safe to print and to put in JSON.  A leaf: the
 * error and log modules use it, so it uses neither. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prepull/sanitize.h"

/* The length of the valid UTF-8 sequence at s (at most `left` bytes) with
 * its code point in *cp; 0 when the bytes are not valid UTF-8: a stray or
 * missing continuation byte, an overlong form, a surrogate, a code point
 * above U+10FFFF.  These are the bytes jansson refuses. */
static size_t utf8_seq(const unsigned char *s, size_t left, uint32_t *cp)
{
	unsigned char c = s[0];
	size_t n;
	uint32_t v, min;
	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2, v = c & 0x1f, min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3, v = c & 0x0f, min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4, v = c & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (left < n)
		return 0;
	/* Checked one by one, so a NUL ends the sequence before we read past it. */
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		v = (v << 6) | (s[i] & 0x3f);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return n;
}

/* Code points that change what a terminal or a log viewer shows: controls
 * (an ESC starts a sequence; C1 0x9b is a CSI on some terminals), line
 * breaks that split one log line into two, and bidi controls that reorder
 * the text around them. */
static bool unsafe_code_point(uint32_t cp)
{
	return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 ||
	       cp == 0x061c || cp == 0x200e || cp == 0x200f || (cp >= 0x202a && cp <= 0x202e) ||
	       (cp >= 0x2066 && cp <= 0x2069);
}

const char *pp_sanitize(char *buf, size_t n, const char *s, size_t len)
{
	if (n == 0)
		return buf;
	if (!s)
		s = "";
	const unsigned char *p = (const unsigned char *)s, *end = p + strnlen(s, len);
	size_t o = 0, mark = 0; /* mark: the last boundary that leaves room for "..." */
	bool cut = false;
	while (p < end) {
		char esc[16];
		const char *piece = (const char *)p;
		uint32_t cp;
		size_t used = utf8_seq(p, (size_t)(end - p), &cp), plen = used;
		if (used == 0) {
			used = 1;
			plen = (size_t)snprintf(esc, sizeof(esc), "\\x%02x", *p);
			piece = esc;
		} else if (unsafe_code_point(cp)) {
			plen = (size_t)snprintf(esc, sizeof(esc), cp < 0x80 ? "\\x%02x" : "\\u%04x",
						(unsigned)cp);
			piece = esc;
		}
		if (o + plen + 1 > n) {
			cut = true;
			break;
		}
		memcpy(buf + o, piece, plen);
		o += plen;
		p += used;
		if (o + 4 <= n)
			mark = o;
	}
	if (cut && n >= 4) {
		memcpy(buf + mark, "...", 3);
		o = mark + 3;
	} else if (cut) {
		o = 0;
	}
	buf[o] = '\0';
	return buf;
}

char *pp_sanitize_dup(const char *s)
{
	size_t len = s ? strlen(s) : 0;
	/* The longest escape, "\x1b", is 4 bytes for 1. */
	size_t n = 4 * len + 4;
	char *buf = malloc(n);
	if (!buf)
		abort(); /* out of memory is not recoverable here */
	pp_sanitize(buf, n, s, len);
	return buf;
}

bool pp_is_sanitized(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t left = strlen(s);
	while (left) {
		uint32_t cp;
		size_t k = utf8_seq(p, left, &cp);
		if (k == 0 || unsafe_code_point(cp))
			return false;
		p += k;
		left -= k;
	}
	return true;
}
