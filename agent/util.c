#include "prepull/util.h"

#include "prepull/error.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
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

/* A plain decimal number at *s ("5", "1.5", ".5"): digits with at most
 * one point, nothing strtod would also take ("nan", "inf", "0x1p3",
 * "1e400", leading blanks or signs).  Moves *s past it; -1 when there is
 * none. */
static double parse_decimal(const char **s)
{
	const char *p = *s;
	size_t digits = 0, points = 0;
	for (; isdigit((unsigned char)*p) || *p == '.'; p++) {
		if (*p == '.')
			points++;
		else
			digits++;
	}
	if (digits == 0 || points > 1 || p - *s > 30)
		return -1;
	char num[32];
	memcpy(num, *s, (size_t)(p - *s));
	num[p - *s] = '\0';
	double v = strtod(num, NULL);
	if (!isfinite(v))
		return -1;
	*s = p;
	return v;
}

int64_t pp_parse_size(const char *s)
{
	if (!s || !*s)
		return -1;
	const char *end = s;
	double v = parse_decimal(&end);
	if (v < 0)
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
	case 't':
		mult = 1024.0 * 1024 * 1024 * 1024;
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
	if (!(v <= (double)INT64_MAX / 2))
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
		double v = parse_decimal(&p);
		if (v < 0)
			return -1;
		double mult = 1;
		if (*p == 'h') {
			mult = 3600, p++;
		} else if (*p == 'm' && p[1] == 's') {
			mult = 0.001, p += 2;
		} else if (*p == 'm') {
			mult = 60, p++;
		} else if (*p == 's') {
			p++;
		} else if (*p != '\0') {
			return -1;
		}
		total += v * mult;
	}
	return isfinite(total) ? total : -1;
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

double pp_backoff(int attempt)
{
	double base = 0.5 * (double)(1 << (attempt < 6 ? attempt : 6));
	if (base > 30)
		base = 30;
	return base / 2 + base / 2 * ((double)rand() / RAND_MAX);
}

int pp_hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}
