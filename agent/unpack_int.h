/* The streaming unpacker's insides, shared by its two files and nobody
 * else (the public API is include/prepull/unpack.h):
 *
 *   unpack.c        the API, the input ring between feed() and the worker,
 *                   the worker thread, the inflate (ISA-L gzip, zstd), the
 *                   diffID hash and libarchive's reader;
 *   unpack_apply.c  everything that writes into the target directory: name
 *                   confinement, entries, whiteouts, hardlinks, parent
 *                   directories copied from lower layers, directory times.
 *
 * The worker thread alone runs unpack_apply.c's functions, so the fields
 * they use are the worker's (see struct pp_unpack). */
#ifndef PREPULL_UNPACK_INT_H
#define PREPULL_UNPACK_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <zstd.h>

#include "prepull/digest.h"
#include "prepull/error.h"
#include "prepull/unpack.h"

struct archive;
struct archive_entry;
struct inflate_state;
struct pp_sha256;

struct pp_unpack {
	/* Fixed at new(). */
	char *root; /* real path, no trailing slash (unless "/") */
	char **lowers;
	char *label;
	char diff_id[PP_DIGEST_STR_LEN + 1];
	enum pp_unpack_compression comp;
	enum pp_unpack_whiteout whiteout;

	/* Shared, under mu. */
	pthread_mutex_t mu;
	pthread_cond_t cond;
	unsigned char *ring;
	size_t ring_head; /* next byte the worker takes */
	size_t ring_len;  /* bytes fed and not yet taken */
	bool input_end;   /* finish() was called */
	bool abort;       /* free() wants the worker gone */
	bool done;        /* the worker has finished; rc, werr and refusal are final */
	int rc;
	struct pp_error werr;
	enum pp_unpack_refusal refusal;
	uint64_t fed;

	pthread_t thread;
	bool joined;

	/* Worker only: the input and the inflate (unpack.c)... */
	unsigned char *in;
	size_t in_len, in_pos;
	bool in_eof;
	unsigned char *out;
	bool more_out; /* the decompressor may hold output without new input */
	struct inflate_state *isal;
	bool gz_in_member;
	uint64_t gz_members;
	ZSTD_DCtx *zd;
	size_t z_hint; /* ZSTD_decompressStream's last return: 0 at a frame's end */
	uint64_t z_frames;
	struct pp_sha256 *sha;
	uint64_t plain;
	uint64_t entries;
	struct pp_error rerr; /* why our read callback failed libarchive */
	char got_diff_id[PP_DIGEST_STR_LEN + 1];
	/* ...and the tar: ar reads it (unpack.c), aw writes it out
	 * (unpack_apply.c). */
	struct archive *ar, *aw;
	/* Directory entries whose times are set at the end, when nothing will
	 * be created in them any more (containerd's `dirs`): one record per
	 * directory of the layer. */
	struct dir_time *dirs;
	size_t ndirs, dirs_cap;
};

struct dir_time {
	char *path;
	struct timespec ts[2]; /* atime, mtime */
};

/* free() wants the worker gone: checked between blocks of data. */
static inline bool unpack_aborted(struct pp_unpack *u)
{
	return __atomic_load_n(&u->abort, __ATOMIC_RELAXED);
}

/* libarchive failed because our read callback did: its reason. */
static inline int unpack_read_failed(struct pp_unpack *u, struct pp_error *err)
{
	if (err)
		*err = u->rerr;
	return u->rerr.code;
}

/* unpack_apply.c */

/* Applies one tar entry (the reader is positioned on it; its data is read
 * or skipped here).  Returns 0 or a negative PP_E* code with err set;
 * PP_EUNSUPPORTED also sets u->refusal. */
int unpack_apply_entry(struct pp_unpack *u, struct archive_entry *e, struct pp_error *err);

/* After the last entry: directory modes (libarchive's deferred ones) and
 * the times of every directory of the layer.  Returns 0 or a negative PP_E*
 * code with err set. */
int unpack_apply_finish(struct pp_unpack *u, struct pp_error *err);

#endif
