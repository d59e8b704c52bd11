/* Per-blob chunk journal: see include/prepull/journal.h for the format and
 * why each line is only a claim to be checked. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "prepull/error.h"
#include "prepull/journal.h"
#include "prepull/util.h"

#define HEADER_MAGIC "prepull-journal 1 "

/* Parses a non-negative decimal int64 at *p, advancing it. */
static int parse_u64(const char **p, const char *end, int64_t *out)
{
	const char *s = *p;
	int64_t v = 0;
	if (s >= end || *s < '0' || *s > '9')
		return -1;
	while (s < end && *s >= '0' && *s <= '9') {
		if (v > (INT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (*s - '0');
		s++;
	}
	*p = s;
	*out = v;
	return 0;
}

/* Copies a "sha256:<64 lowercase hex>" at *p into out, advancing *p. */
static int parse_digest(const char **p, const char *end, char out[PP_DIGEST_STR_LEN + 1])
{
	const char *s = *p;
	if (end - s < PP_DIGEST_STR_LEN || memcmp(s, "sha256:", 7) != 0)
		return -1;
	for (int i = 7; i < PP_DIGEST_STR_LEN; i++) {
		char c = s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return -1;
	}
	memcpy(out, s, PP_DIGEST_STR_LEN);
	out[PP_DIGEST_STR_LEN] = '\0';
	*p = s + PP_DIGEST_STR_LEN;
	return 0;
}

int pp_journal_parse(struct pp_journal *out, const char *text, size_t len, struct pp_error *err)
{
	memset(out, 0, sizeof(*out));
	const char *p = text, *end = text + len;
	const char *nl = memchr(p, '\n', len);
	if (!nl || (size_t)(nl - p) < sizeof(HEADER_MAGIC) - 1 ||
	    memcmp(p, HEADER_MAGIC, sizeof(HEADER_MAGIC) - 1) != 0)
		return pp_error_set(err, PP_EPROTO, "journal: no valid header");
	p += sizeof(HEADER_MAGIC) - 1;
	if (parse_digest(&p, nl, out->digest) < 0 || p >= nl || *p++ != ' ' ||
	    parse_u64(&p, nl, &out->size) < 0 || p >= nl || *p++ != ' ' ||
	    parse_u64(&p, nl, &out->chunk_size) < 0 || p != nl || out->chunk_size <= 0 ||
	    out->size > (1LL << 40) || out->chunk_size > (1LL << 40))
		return pp_error_set(err, PP_EPROTO, "journal: malformed header");
	int64_t n = out->size ? (out->size + out->chunk_size - 1) / out->chunk_size : 0;
	if (n > PP_JOURNAL_MAX_CHUNKS)
		return pp_error_set(err, PP_EPROTO, "journal: %" PRId64 " chunks is too many", n);
	out->n_chunks = (size_t)n;
	out->chunks = pp_xcalloc(out->n_chunks ? out->n_chunks : 1, sizeof(*out->chunks));
	for (p = nl + 1; p < end; p = nl + 1) {
		nl = memchr(p, '\n', (size_t)(end - p));
		if (!nl)
			break; /* a torn last line */
		const char *q = p;
		int64_t idx, part_len = 0;
		char digest[PP_DIGEST_STR_LEN + 1];
		bool done;
		if (nl - q > 5 && memcmp(q, "done ", 5) == 0)
			done = true;
		else if (nl - q > 5 && memcmp(q, "part ", 5) == 0)
			done = false;
		else
			continue;
		q += 5;
		if (parse_u64(&q, nl, &idx) < 0 || q >= nl || *q++ != ' ' || idx >= n)
			continue;
		if (!done && (parse_u64(&q, nl, &part_len) < 0 || q >= nl || *q++ != ' '))
			continue;
		if (parse_digest(&q, nl, digest) < 0 || q != nl)
			continue;
		struct pp_journal_chunk *c = &out->chunks[idx];
		int64_t len = idx == n - 1 ? out->size - idx * out->chunk_size : out->chunk_size;
		/* A later line wins: a checkpoint after a `done` line is a chunk
		 * being fetched again (a repair), whose bytes are changing. */
		if (done) {
			memcpy(c->done, digest, sizeof(digest));
			c->part_len = 0;
			c->part[0] = '\0';
		} else if (part_len > 0 && part_len < len) {
			c->done[0] = '\0';
			c->part_len = part_len;
			memcpy(c->part, digest, sizeof(digest));
		}
	}
	return 0;
}

void pp_journal_free(struct pp_journal *j)
{
	free(j->chunks);
	j->chunks = NULL;
}

int pp_journal_load(struct pp_journal *out, const char *path, struct pp_error *err)
{
	cleanup_close int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return pp_error_set(err, PP_ENOTFOUND, "%s: no journal", path);
		return pp_error_errno(err, "open %s", path);
	}
	struct pp_buf b = {.limit = PP_JOURNAL_MAX_BYTES};
	if (pp_buf_read_fd(&b, fd) < 0) {
		int r = errno == EFBIG ? pp_error_set(err, PP_EPROTO, "%s: journal too large", path)
				       : pp_error_errno(err, "read %s", path);
		pp_buf_free(&b);
		return r;
	}
	int r = pp_journal_parse(out, b.data ? b.data : "", b.len, err);
	pp_buf_free(&b);
	if (r < 0)
		pp_error_wrap(err, "%s", path);
	return r;
}

static int write_all(int fd, const char *path, const char *s, size_t len, struct pp_error *err)
{
	while (len) {
		ssize_t w = write(fd, s, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return pp_error_errno(err, "write %s", path);
		}
		s += w;
		len -= (size_t)w;
	}
	return 0;
}

int pp_journal_create(int *out_fd, const char *path, const char *digest, int64_t size,
		      int64_t chunk_size, struct pp_error *err)
{
	/* A new file, private like the partial blob it describes: whatever was
	 * at the path goes (a symlink planted there is removed, not followed,
	 * and O_EXCL makes sure nothing took its place meanwhile). */
	if (unlink(path) < 0 && errno != ENOENT)
		return pp_error_errno(err, "remove %s", path);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return pp_error_errno(err, "create %s", path);
	char line[160];
	int n = snprintf(line, sizeof(line), HEADER_MAGIC "%s %" PRId64 " %" PRId64 "\n", digest,
			 size, chunk_size);
	int r = write_all(fd, path, line, (size_t)n, err);
	if (r < 0) {
		close(fd);
		return r;
	}
	*out_fd = fd;
	return 0;
}

int pp_journal_open_append(int *out_fd, const char *path, struct pp_error *err)
{
	int fd = open(path, O_RDWR | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return pp_error_errno(err, "open %s", path);
	/* End a torn last line, so the next line is not glued to it. */
	off_t end = lseek(fd, 0, SEEK_END);
	char last = '\n';
	if (end > 0 && pread(fd, &last, 1, end - 1) == 1 && last != '\n' &&
	    write_all(fd, path, "\n", 1, err) < 0) {
		close(fd);
		return err->code;
	}
	*out_fd = fd;
	return 0;
}

int pp_journal_append_done(int fd, const char *path, size_t index, const char *chunk_digest,
			   struct pp_error *err)
{
	char line[128];
	int n = snprintf(line, sizeof(line), "done %zu %s\n", index, chunk_digest);
	return write_all(fd, path, line, (size_t)n, err);
}

int pp_journal_append_part(int fd, const char *path, size_t index, int64_t len, const char *digest,
			   struct pp_error *err)
{
	char line[160];
	int n = snprintf(line, sizeof(line), "part %zu %" PRId64 " %s\n", index, len, digest);
	return write_all(fd, path, line, (size_t)n, err);
}
