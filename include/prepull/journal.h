/* The journal beside each partial blob: which chunks are done and the
 * sha256 of each, so a killed run resumes without fetching them again.
 *
 * Text, append-only, one line per event:
 *   prepull-journal 1 sha256:<hex> <blob size> <chunk size>
 *   part <chunk index> <bytes> sha256:<hex of the chunk's first bytes>
 *   done <chunk index> sha256:<chunk hex>
 *
 * `part` lines are checkpoints of a chunk still being received, so a kill
 * loses only the bytes since the last checkpoint of each open request.
 *
 * A line is trusted only as a claim: on resume every done chunk is read
 * back and must hash to what its line says before its bytes count.  So a
 * torn last line, a garbage line or a journal written before a power loss
 * that lost data costs at most a refetch of those chunks, never a wrong
 * commit.  That is why nothing here needs an fsync per chunk. */
#ifndef PREPULL_JOURNAL_H
#define PREPULL_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "prepull/digest.h"

struct pp_error;

#define PP_JOURNAL_MAX_BYTES (64 * 1024 * 1024)
#define PP_JOURNAL_MAX_CHUNKS (1 << 20) /* the engine never cuts a blob finer */

struct pp_journal {
	char digest[PP_DIGEST_STR_LEN + 1];
	int64_t size;
	int64_t chunk_size;
	size_t n_chunks;
	struct pp_journal_chunk {
		char done[PP_DIGEST_STR_LEN + 1]; /* claimed sha256, "" when not done */
		int64_t part_len;                 /* else: bytes checkpointed, 0 for none */
		char part[PP_DIGEST_STR_LEN + 1]; /* and the sha256 of those bytes */
	} * chunks;
};

/* Parses journal text.  The header must be valid (PP_EPROTO otherwise);
 * later lines that do not parse, or name a chunk out of range, are
 * skipped; a later line for the same chunk wins.  Caller frees with
 * pp_journal_free. */
int pp_journal_parse(struct pp_journal *out, const char *text, size_t len, struct pp_error *err);
void pp_journal_free(struct pp_journal *j);

/* Reads and parses the journal at path.  PP_ENOTFOUND when there is none. */
int pp_journal_load(struct pp_journal *out, const char *path, struct pp_error *err);

/* Starts a journal afresh and returns its fd, open for appending: any old
 * file (or symlink) at path is removed and a new one created, 0600.
 * Symlinks are never followed here. */
int pp_journal_create(int *out_fd, const char *path, const char *digest, int64_t size,
		      int64_t chunk_size, struct pp_error *err);

/* Opens an existing journal for appending. */
int pp_journal_open_append(int *out_fd, const char *path, struct pp_error *err);

/* Records a done chunk: one write(2) of one line. */
int pp_journal_append_done(int fd, const char *path, size_t index, const char *chunk_digest,
			   struct pp_error *err);

/* Records a checkpoint: the first `len` bytes of a chunk hash to `digest`. */
int pp_journal_append_part(int fd, const char *path, size_t index, int64_t len, const char *digest,
			   struct pp_error *err);

#endif
