/* A tar archive produced on demand, a few hundred KiB at a time, from
 * entries held in memory or in files — for streaming an upload (docker
 * load) without a temporary tar on disk.  libarchive writes the format;
 * the caller pulls bytes with pp_tar_stream_read (e.g. from curl's read
 * callback).  A zstd-compressed file can be sent decompressed: its
 * decompressed size (needed up front by the tar header) is taken from the
 * zstd frame headers or, when they do not say, counted by decompressing
 * it once without keeping the output. */
#ifndef PREPULL_TAR_STREAM_H
#define PREPULL_TAR_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct pp_error;
struct pp_tar_stream;

enum pp_tar_source {
	PP_TAR_MEMORY,     /* data, len */
	PP_TAR_FILE,       /* path, sent as it is */
	PP_TAR_FILE_UNZSTD /* path, a zstd stream sent decompressed */
};

struct pp_tar_entry {
	const char *name; /* path inside the archive */
	enum pp_tar_source source;
	const void *data;
	size_t len;
	const char *path;
	/* PP_TAR_FILE_UNZSTD: when non-NULL, the sha256 digest the
	 * decompressed bytes must have ("sha256:<hex>"); a mismatch fails the
	 * stream before its last byte is handed out. */
	const char *expect_digest;
};

/* Creates a stream over `entries` (borrowed: the array, its strings and
 * data must outlive the stream).  Caller frees with pp_tar_stream_free. */
int pp_tar_stream_new(struct pp_tar_stream **out, const struct pp_tar_entry *entries, size_t n,
		      struct pp_error *err);

/* Copies up to n bytes of the archive into buf.  Returns the count, 0 at
 * the end of the archive, or a negative PP_E* code with err filled in. */
ssize_t pp_tar_stream_read(struct pp_tar_stream *t, void *buf, size_t n, struct pp_error *err);

/* Archive bytes handed out so far. */
int64_t pp_tar_stream_offset(const struct pp_tar_stream *t);

void pp_tar_stream_free(struct pp_tar_stream *t);

/* True when the file starts with a zstd frame (or a skippable frame). */
bool pp_file_is_zstd(const char *path);

/* The decompressed size of a zstd file: from the frame headers when every
 * frame records it (*counted = false), else by decompressing it once
 * (*counted = true). */
int pp_zstd_content_size(const char *path, int64_t *out, bool *counted, struct pp_error *err);

#endif
