#include "prepull/util.h"

#include "prepull/error.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void oom(void)
{
	fputs("prepull: out of memory\n", stderr);
	abort();
}

void *pp_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		oom();
	return p;
}

void *pp_xcalloc(size_t n, size_t m)
{
	void *p = calloc(n ? n : 1, m ? m : 1);
	if (!p)
		oom();
	return p;
}

void *pp_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		oom();
	return q;
}

char *pp_xstrdup(const char *s)
{
	char *p = strdup(s);
	if (!p)
		oom();
	return p;
}

char *pp_xstrndup(const char *s, size_t n)
{
	char *p = strndup(s, n);
	if (!p)
		oom();
	return p;
}

char *pp_xasprintf(const char *fmt, ...)
{
	char *p;
	va_list ap;
	va_start(ap, fmt);
	int r = vasprintf(&p, fmt, ap);
	va_end(ap);
	if (r < 0)
		oom();
	return p;
}

int pp_buf_append(struct pp_buf *b, const void *p, size_t n)
{
	if (b->limit && b->len + n > b->limit)
		return -1;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *d = realloc(b->data, cap);
		if (!d)
			return -1;
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

int pp_buf_read_fd(struct pp_buf *b, int fd)
{
	char tmp[65536];
	for (;;) {
		ssize_t n = read(fd, tmp, sizeof(tmp));
		if (n == 0)
			return 0;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (pp_buf_append(b, tmp, (size_t)n) < 0) {
			errno = EFBIG;
			return -1;
		}
	}
}

void pp_buf_free(struct pp_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

double pp_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const char *pp_short_digest_r(char *buf, size_t n, const char *digest)
{
	if (!digest)
		return "(none)";
	snprintf(buf, n, "%.19s", digest); /* "sha256:" + 12 hex */
	return buf;
}

void pp_buf_freep(struct pp_buf *b)
{
	pp_buf_free(b);
}

void pp_filep(FILE **f)
{
	if (*f)
		fclose(*f);
}

void pp_dirp(DIR **d)
{
	if (*d)
		closedir(*d);
}

void pp_jsonp(json_t **j)
{
	json_decref(*j);
}

void pp_curlp(CURL **h)
{
	curl_easy_cleanup(*h);
}

int64_t pp_parse_size(const char *s)
{
	if (!s || !*s)
		return -1;
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || v < 0)
		return -1;
	double mult = 1;
	switch (tolower((unsigned char)*end)) {
	case '\0':
		break;
	case 'k':
		mult = 1024.0;
		end++;
		break;
	case 'm':
		mult = 1024.0 * 1024;
		end++;
		break;
	case 'g':
		mult = 1024.0 * 1024 * 1024;
		end++;
		break;
	default:
		return -1;
	}
	if (*end == 'i' || *end == 'I')
		end++;
	if (*end == 'b' || *end == 'B')
		end++;
	if (*end)
		return -1;
	v *= mult;
	if (v > (double)INT64_MAX / 2)
		return -1;
	return (int64_t)v;
}

double pp_parse_duration(const char *s)
{
	if (!s || !*s)
		return -1;
	double total = 0;
	const char *p = s;
	while (*p) {
		char *end;
		errno = 0;
		double v = strtod(p, &end);
		if (errno || end == p || v < 0)
			return -1;
		double mult = 1;
		if (*end == 'h') {
			mult = 3600, end++;
		} else if (*end == 'm' && end[1] == 's') {
			mult = 0.001, end += 2;
		} else if (*end == 'm') {
			mult = 60, end++;
		} else if (*end == 's') {
			end++;
		} else if (*end != '\0') {
			return -1;
		}
		total += v * mult;
		p = end;
	}
	return total;
}

const char *pp_format_bytes(char *buf, size_t n, double bytes)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	int u = 0;
	while (bytes >= 1024 && u < 4) {
		bytes /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, n, "%.0f B", bytes);
	else
		snprintf(buf, n, "%.1f %s", bytes, units[u]);
	return buf;
}

int pp_mkdir_p(const char *path, unsigned mode)
{
	char tmp[4096];
	if (strlen(path) >= sizeof(tmp)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(tmp, path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, mode) < 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		return -1;
	return 0;
}

int pp_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int r = fsync(fd);
	close(fd);
	return r;
}

int pp_write_file_atomic(const char *path, const void *data, size_t len, struct pp_error *err)
{
	/* A new file of a name nobody could guess (O_EXCL): never one planted
	 * there beforehand, nor a symlink's target.  0644 is what every file
	 * written this way wants: OCI layout files are read by other tools, and
	 * private ones sit in private directories. */
	cleanup_free char *tmp = pp_xasprintf("%s.tmp.XXXXXX", path);
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return pp_error_errno(err, "create %s", tmp);
	if (fchmod(fd, 0644) < 0) {
		pp_error_errno(err, "chmod %s", tmp);
		close(fd);
		unlink(tmp);
		return PP_EIO;
	}
	const char *p = data;
	size_t left = len;
	while (left) {
		ssize_t w = write(fd, p, left);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			pp_error_errno(err, "write %s", tmp);
			close(fd);
			unlink(tmp);
			return PP_EIO;
		}
		p += w;
		left -= (size_t)w;
	}
	if (fsync(fd) < 0 || close(fd) < 0) {
		pp_error_errno(err, "sync %s", tmp);
		unlink(tmp);
		return PP_EIO;
	}
	if (rename(tmp, path) < 0) {
		pp_error_errno(err, "rename %s", path);
		unlink(tmp);
		return PP_EIO;
	}
	cleanup_free char *dir = pp_xstrdup(path);
	char *slash = strrchr(dir, '/');
	if (slash) {
		*slash = '\0';
		pp_fsync_dir(*dir ? dir : "/");
	} else {
		pp_fsync_dir(".");
	}
	return 0;
}

const char *pp_printable(char *buf, size_t n, const char *s)
{
	size_t i = 0;
	for (; s[i] && i + 1 < n; i++)
		buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	buf[i] = '\0';
	if (s[i] && n > 4)
		memcpy(buf + n - 4, "...", 4);
	return buf;
}

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
	char *buf = pp_xmalloc(n);
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

double pp_backoff(int attempt)
{
	double base = 0.5 * (double)(1 << (attempt < 6 ? attempt : 6));
	if (base > 30)
		base = 30;
	return base / 2 + base / 2 * ((double)rand() / RAND_MAX);
}
