/* A tar archive made on demand.  libarchive is only the encoder here: its
 * write callback appends to a small buffer, and each read advances a state
 * machine (next header, next piece of data, the trailer) just far enough
 * to refill that buffer.  No threads, no pipe, no temporary file; memory
 * stays at a few hundred KiB whatever the entries' sizes. */
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_findDecompressedSize (exported since 1.3) */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "prepull/digest.h"
#include "prepull/error.h"
#include "prepull/log.h"
#include "prepull/tar_stream.h"
#include "prepull/util.h"

#define PIECE (256 * 1024) /* data handed to libarchive per step */

/* A zstd file being decompressed piece by piece. */
struct unzstd {
	int fd;
	ZSTD_DStream *z;
	ZSTD_inBuffer in;
	char *inbuf;
	bool eof;
	size_t last; /* ZSTD_decompressStream's last hint: 0 at a frame's end */
};

static int unzstd_open(struct unzstd *u, const char *path, struct pp_error *err)
{
	memset(u, 0, sizeof(*u));
	u->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (u->fd < 0)
		return pp_error_errno(err, "open %s", path);
	u->z = ZSTD_createDStream();
	if (!u->z)
		abort();
	ZSTD_initDStream(u->z);
	u->inbuf = pp_xmalloc(ZSTD_DStreamInSize());
	return 0;
}

static void unzstd_close(struct unzstd *u)
{
	if (u->fd >= 0)
		close(u->fd);
	u->fd = -1;
	ZSTD_freeDStream(u->z);
	u->z = NULL;
	free(u->inbuf);
	u->inbuf = NULL;
}

/* Decompresses into out (up to cap bytes); *got = 0 means the end. */
static int unzstd_pull(struct unzstd *u, const char *path, char *out, size_t cap, size_t *got,
		       struct pp_error *err)
{
	ZSTD_outBuffer o = {out, cap, 0};
	for (;;) {
		if (u->in.pos == u->in.size && !u->eof) {
			ssize_t n = read(u->fd, u->inbuf, ZSTD_DStreamInSize());
			if (n < 0) {
				if (errno == EINTR)
					continue;
				return pp_error_errno(err, "read %s", path);
			}
			if (n == 0)
				u->eof = true;
			u->in = (ZSTD_inBuffer){u->inbuf, (size_t)n, 0};
		}
		/* Called with no input too: that flushes what zstd holds back. */
		size_t in_before = u->in.pos, out_before = o.pos;
		size_t r = ZSTD_decompressStream(u->z, &o, &u->in);
		if (ZSTD_isError(r))
			return pp_error_set(err, PP_EDIGEST, "%s: zstd: %s", path,
					    ZSTD_getErrorName(r));
		/* A call that moved nothing says only "a new frame could start". */
		if (u->in.pos != in_before || o.pos != out_before)
			u->last = r;
		if (o.pos > 0)
			break;
		if (u->eof && u->in.pos == u->in.size) {
			if (u->last != 0)
				return pp_error_set(err, PP_EDIGEST,
						    "%s: the zstd stream is truncated", path);
			break;
		}
	}
	*got = o.pos;
	return 0;
}

bool pp_file_is_zstd(const char *path)
{
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	unsigned char m[4];
	if (fd < 0 || read(fd, m, 4) != 4)
		return false;
	uint32_t magic =
		(uint32_t)m[0] | (uint32_t)m[1] << 8 | (uint32_t)m[2] << 16 | (uint32_t)m[3] << 24;
	return magic == ZSTD_MAGICNUMBER ||
	       (magic & ZSTD_MAGIC_SKIPPABLE_MASK) == ZSTD_MAGIC_SKIPPABLE_START;
}

int pp_zstd_content_size(const char *path, int64_t *out, bool *counted, struct pp_error *err)
{
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return pp_error_errno(err, "open %s", path);
	if (st.st_size == 0)
		return pp_error_set(err, PP_EDIGEST, "%s: empty, not a zstd stream", path);
	/* The frame headers usually carry the size: walking them reads a few
	 * bytes per frame. */
	void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED)
		return pp_error_errno(err, "map %s", path);
	unsigned long long size = ZSTD_findDecompressedSize(map, (size_t)st.st_size);
	munmap(map, (size_t)st.st_size);
	if (size == ZSTD_CONTENTSIZE_ERROR)
		return pp_error_set(err, PP_EDIGEST, "%s: not a valid zstd stream", path);
	if (size != ZSTD_CONTENTSIZE_UNKNOWN && size <= INT64_MAX) {
		*out = (int64_t)size;
		*counted = false;
		return 0;
	}
	/* A streaming compressor left the size out: count it. */
	struct unzstd u;
	int r = unzstd_open(&u, path, err);
	if (r < 0)
		return r;
	char *buf = pp_xmalloc(PIECE);
	int64_t total = 0;
	size_t got;
	while ((r = unzstd_pull(&u, path, buf, PIECE, &got, err)) == 0 && got)
		total += (int64_t)got;
	free(buf);
	unzstd_close(&u);
	if (r < 0)
		return r;
	*out = total;
	*counted = true;
	return 0;
}

enum state { ST_HEADER, ST_DATA, ST_CLOSE, ST_END };

struct pp_tar_stream {
	const struct pp_tar_entry *entries;
	size_t n, i;
	enum state state;
	struct archive *a;
	struct pp_buf out; /* archive bytes not yet handed out */
	size_t out_off;
	int64_t offset;
	/* The entry being written. */
	int fd;
	struct unzstd u;
	bool unzstd;
	int64_t size, sent;
	struct pp_sha256 *sha;
	char *piece;
};

static la_ssize_t on_write(struct archive *a, void *ctx, const void *buf, size_t len)
{
	struct pp_tar_stream *t = ctx;
	if (pp_buf_append(&t->out, buf, len) < 0) {
		archive_set_error(a, ENOMEM, "out of memory");
		return -1;
	}
	return (la_ssize_t)len;
}

int pp_tar_stream_new(struct pp_tar_stream **out, const struct pp_tar_entry *entries, size_t n,
		      struct pp_error *err)
{
	struct pp_tar_stream *t = pp_xcalloc(1, sizeof(*t));
	t->entries = entries;
	t->n = n;
	t->fd = -1;
	t->u.fd = -1;
	t->piece = pp_xmalloc(PIECE);
	t->a = archive_write_new();
	if (!t->a)
		abort();
	/* pax only where ustar cannot say it (a layer over 8 GiB). */
	if (archive_write_set_format_pax_restricted(t->a) != ARCHIVE_OK ||
	    archive_write_add_filter_none(t->a) != ARCHIVE_OK ||
	    archive_write_set_bytes_in_last_block(t->a, 1) != ARCHIVE_OK ||
	    archive_write_open2(t->a, t, NULL, on_write, NULL, NULL) != ARCHIVE_OK) {
		pp_error_set(err, PP_EGENERIC, "libarchive: %s", archive_error_string(t->a));
		pp_tar_stream_free(t);
		return PP_EGENERIC;
	}
	*out = t;
	return 0;
}

static int archive_fail(struct pp_tar_stream *t, const char *what, struct pp_error *err)
{
	return pp_error_set(err, PP_EGENERIC, "tar %s: %s", what,
			    archive_error_string(t->a) ? archive_error_string(t->a) : "failed");
}

static void close_entry(struct pp_tar_stream *t)
{
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
	if (t->unzstd)
		unzstd_close(&t->u);
	t->unzstd = false;
	pp_sha256_free(t->sha);
	t->sha = NULL;
}

static int start_entry(struct pp_tar_stream *t, struct pp_error *err)
{
	const struct pp_tar_entry *e = &t->entries[t->i];
	int r;
	t->sent = 0;
	switch (e->source) {
	case PP_TAR_MEMORY:
		t->size = (int64_t)e->len;
		break;
	case PP_TAR_FILE: {
		t->fd = open(e->path, O_RDONLY | O_CLOEXEC);
		struct stat st;
		if (t->fd < 0 || fstat(t->fd, &st) < 0)
			return pp_error_errno(err, "open %s", e->path);
		t->size = st.st_size;
		break;
	}
	case PP_TAR_FILE_UNZSTD: {
		bool counted = false;
		double t0 = pp_now();
		if ((r = pp_zstd_content_size(e->path, &t->size, &counted, err)) < 0)
			return r;
		if (counted)
			pp_debug("%s: decompressed size %lld counted in %.2f s", e->name,
				 (long long)t->size, pp_now() - t0);
		if ((r = unzstd_open(&t->u, e->path, err)) < 0)
			return r;
		t->unzstd = true;
		if (e->expect_digest)
			t->sha = pp_sha256_new();
		break;
	}
	}
	struct archive_entry *ae = archive_entry_new();
	if (!ae)
		abort();
	archive_entry_set_pathname(ae, e->name);
	archive_entry_set_filetype(ae, AE_IFREG);
	archive_entry_set_perm(ae, 0644);
	archive_entry_set_size(ae, t->size);
	archive_entry_set_mtime(ae, 0, 0);
	r = archive_write_header(t->a, ae);
	archive_entry_free(ae);
	if (r != ARCHIVE_OK)
		return archive_fail(t, e->name, err);
	t->state = ST_DATA;
	return 0;
}

/* The next piece of the current entry's data into t->piece. */
static int next_piece(struct pp_tar_stream *t, size_t *got, struct pp_error *err)
{
	const struct pp_tar_entry *e = &t->entries[t->i];
	size_t want = PIECE;
	if (t->size - t->sent < (int64_t)want)
		want = (size_t)(t->size - t->sent);
	*got = 0;
	switch (e->source) {
	case PP_TAR_MEMORY:
		memcpy(t->piece, (const char *)e->data + t->sent, want);
		*got = want;
		return 0;
	case PP_TAR_FILE:
		while (want) {
			ssize_t n = read(t->fd, t->piece, want);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return pp_error_errno(err, "read %s", e->path);
			if (n == 0)
				return pp_error_set(err, PP_EIO, "%s shrank while being sent",
						    e->path);
			*got = (size_t)n;
			return 0;
		}
		return 0;
	case PP_TAR_FILE_UNZSTD: {
		/* Ask for one byte more than is left, to notice a stream that
		 * grew since it was measured. */
		size_t cap = want < PIECE ? want + 1 : PIECE;
		int r = unzstd_pull(&t->u, e->path, t->piece, cap, got, err);
		if (r < 0)
			return r;
		if (*got > want || (*got == 0 && want > 0))
			return pp_error_set(err, PP_EDIGEST,
					    "%s: decompresses to a size other than the %lld bytes "
					    "measured",
					    e->path, (long long)t->size);
		if (t->sha)
			pp_sha256_update(t->sha, t->piece, *got);
		return 0;
	}
	}
	return 0;
}

static int finish_entry(struct pp_tar_stream *t, struct pp_error *err)
{
	const struct pp_tar_entry *e = &t->entries[t->i];
	if (t->unzstd) {
		/* Whatever follows the measured bytes must be nothing. */
		size_t got = 0;
		int r = unzstd_pull(&t->u, e->path, t->piece, 1, &got, err);
		if (r < 0)
			return r;
		if (got)
			return pp_error_set(err, PP_EDIGEST,
					    "%s: decompresses to more than the %lld bytes measured",
					    e->path, (long long)t->size);
	}
	if (t->sha) {
		char got[PP_DIGEST_STR_LEN + 1];
		pp_sha256_final(t->sha, got);
		if (strcmp(got, e->expect_digest) != 0)
			return pp_error_set(err, PP_EDIGEST,
					    "%s: decompressed content hashes to %s, not %s",
					    e->path, got, e->expect_digest);
	}
	close_entry(t);
	if (archive_write_finish_entry(t->a) != ARCHIVE_OK)
		return archive_fail(t, e->name, err);
	t->i++;
	t->state = ST_HEADER;
	return 0;
}

/* Moves the state machine on until some output is buffered or the end. */
static int step(struct pp_tar_stream *t, struct pp_error *err)
{
	switch (t->state) {
	case ST_HEADER:
		if (t->i == t->n) {
			t->state = ST_CLOSE;
			return 0;
		}
		return start_entry(t, err);
	case ST_DATA: {
		if (t->sent == t->size)
			return finish_entry(t, err);
		size_t got = 0;
		int r = next_piece(t, &got, err);
		if (r < 0)
			return r;
		la_ssize_t w = archive_write_data(t->a, t->piece, got);
		if (w < 0 || (size_t)w != got)
			return archive_fail(t, t->entries[t->i].name, err);
		t->sent += (int64_t)got;
		return 0;
	}
	case ST_CLOSE:
		if (archive_write_close(t->a) != ARCHIVE_OK)
			return archive_fail(t, "trailer", err);
		t->state = ST_END;
		return 0;
	case ST_END:
		return 0;
	}
	return 0;
}

ssize_t pp_tar_stream_read(struct pp_tar_stream *t, void *buf, size_t n, struct pp_error *err)
{
	while (t->out_off == t->out.len) {
		t->out.len = 0;
		t->out_off = 0;
		if (t->state == ST_END)
			return 0;
		int r = step(t, err);
		if (r < 0) {
			close_entry(t);
			t->state = ST_END;
			return r;
		}
	}
	size_t k = t->out.len - t->out_off;
	if (k > n)
		k = n;
	memcpy(buf, t->out.data + t->out_off, k);
	t->out_off += k;
	t->offset += (int64_t)k;
	return (ssize_t)k;
}

int64_t pp_tar_stream_offset(const struct pp_tar_stream *t)
{
	return t->offset;
}

void pp_tar_stream_free(struct pp_tar_stream *t)
{
	if (!t)
		return;
	close_entry(t);
	if (t->a)
		archive_write_free(t->a);
	pp_buf_free(&t->out);
	free(t->piece);
	free(t);
}
