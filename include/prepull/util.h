/* Small helpers shared by every module. */
#ifndef PREPULL_UTIL_H
#define PREPULL_UTIL_H

#include <curl/curl.h>
#include <dirent.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static inline void pp_freep(void *p)
{
	free(*(void **)p);
}
static inline void pp_closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}
#define cleanup_free __attribute__((cleanup(pp_freep)))
#define cleanup_close __attribute__((cleanup(pp_closep)))

/* Growable byte buffer; `data` is always NUL-terminated for convenience. */
struct pp_buf {
	char *data;
	size_t len;
	size_t cap;
	size_t limit; /* 0 = unlimited; appending past it fails */
};

int pp_buf_append(struct pp_buf *b, const void *p, size_t n); /* 0 or -1 (limit/ENOMEM) */
void pp_buf_free(struct pp_buf *b);
/* Appends all that fd has left to read.  0, or -1 with errno set (EFBIG
 * past the buffer's limit); the buffer keeps what was read. */
int pp_buf_read_fd(struct pp_buf *b, int fd);

/* Cleanup attributes for the other things a function may hold: each frees
 * what the variable points at (NULL is fine) when it goes out of scope.
 * Hand ownership on with `*out = p; p = NULL;`. */
void pp_buf_freep(struct pp_buf *b);
void pp_filep(FILE **f);
void pp_dirp(DIR **d);
void pp_jsonp(json_t **j);
void pp_curlp(CURL **h);
#define cleanup_buf __attribute__((cleanup(pp_buf_freep)))
#define cleanup_file __attribute__((cleanup(pp_filep)))
#define cleanup_dir __attribute__((cleanup(pp_dirp)))
#define cleanup_json __attribute__((cleanup(pp_jsonp)))
#define cleanup_curl __attribute__((cleanup(pp_curlp)))

/* Allocation that aborts on failure: out of memory is not recoverable here. */
void *pp_xmalloc(size_t n);
void *pp_xcalloc(size_t n, size_t m);
void *pp_xrealloc(void *p, size_t n);
char *pp_xstrdup(const char *s);
char *pp_xstrndup(const char *s, size_t n);
char *pp_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Monotonic seconds. */
double pp_now(void);

/* "sha256:0123456789ab" — the short form used in every log line — written
 * into buf (at least PP_SHORT_DIGEST_LEN bytes); returns buf, or "(none)"
 * for NULL. */
#define PP_SHORT_DIGEST_LEN 20
const char *pp_short_digest_r(char *buf, size_t n, const char *digest);
/* The same in a buffer on the caller's stack (a compound literal, alive
 * until the end of the enclosing block): safe from any thread, and as
 * short to write in a log line as a static buffer would be. */
#define pp_short_digest(digest) \
	pp_short_digest_r((char[PP_SHORT_DIGEST_LEN]){0}, PP_SHORT_DIGEST_LEN, (digest))

/* Parses "4M", "16MiB", "512k", "1T", "1048576" into bytes; -1 on error
 * (also for "nan", "inf", hex and exponents: plain decimals only). */
int64_t pp_parse_size(const char *s);

/* Parses "90", "90s", "5m", "1h30m" into seconds; -1 on error (also for
 * "nan", "inf" and anything else that is not a plain decimal). */
double pp_parse_duration(const char *s);

/* Formats bytes as "1.5 GiB" into buf. */
const char *pp_format_bytes(char *buf, size_t n, double bytes);

/* Cuts s to fit buf (n bytes, "..." when cut) and replaces anything that
 * is not printable ASCII, so a hostile value cannot flood or escape a
 * terminal when it is quoted in a message.  Returns buf. */
const char *pp_printable(char *buf, size_t n, const char *s);

/* Seconds to wait before retry number `attempt` (0-based): exponential from
 * 0.5 s, capped at 30 s, with jitter over its upper half. */
double pp_backoff(int attempt);

/* mkdir -p; 0 or -1 with errno. */
int pp_mkdir_p(const char *path, unsigned mode);

/* Writes data to path atomically: a new temp file in the same dir (created
 * with O_EXCL under an unguessable name), fsync, rename, fsync the
 * directory.  The file is 0644.  A symlink at path is replaced, not
 * followed. */
struct pp_error;
int pp_write_file_atomic(const char *path, const void *data, size_t len, struct pp_error *err);

/* fsync a directory by path. */
int pp_fsync_dir(const char *dir);

/* The value of one hex digit (either case), or -1. */
int pp_hex_value(char c);

#endif
