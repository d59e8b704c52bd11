/* The streaming unpacker's insides, shared by its files and nobody else
 * (the public API is include/prepull/unpack.h):
 *
 *   unpack.c          the API, the input ring between feed() and the
 *                     threads, the applier thread: the diffID hash and
 *                     libarchive's reader over the inflated stream;
 *   unpack_inflate.c  the inflater thread: input ring in, inflate (ISA-L
 *                     gzip, zstd, or plain tar copied), the plain ring out;
 *   unpack_apply.c    everything that writes into the target directory: name
 *                     confinement, entries, whiteouts, hardlinks, parent
 *                     directories copied from lower layers, directory times.
 *
 * Two threads, so that the inflate (the bulk of the CPU for gzip) runs on
 * one core while the hash and the tar writes run on another:
 *
 *   feed() --input ring--> inflater --plain ring--> applier --> files
 *
 * Both rings are fixed (RING_CAP bytes, PLAIN_SLOTS slots of PLAIN_CAP
 * bytes) and live under one mutex; each side copies or computes outside it
 * and publishes under it.  The applier owns the result (rc, werr, done);
 * the inflater only reports how its stream ended (irc, ierr) at the end of
 * the plain ring, where the applier meets it in order, so an error is
 * reported exactly where the single-threaded reader met it. */
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

/* Input ring: compressed bytes fed but not yet inflated.  The fetch engine
 * tops it up once per turn of its loop (what writable() says), and a turn
 * that reads back a backlog to hash can take tens of ms: 4 MiB is ~20 ms
 * of ISA-L's inflate on a compressible layer, where 1 MiB starved it. */
#define RING_CAP (4 * 1024 * 1024)
/* The most of the input ring the inflater holds at once. */
#define IN_CAP (128 * 1024)
/* Plain ring: inflated bytes between the threads.  A slot is what
 * libarchive gets per read (its file data is written from there without a
 * copy, so a slot is also the largest write()). */
#define PLAIN_SLOTS 4
#define PLAIN_CAP (256 * 1024)

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

	/* Shared, under mu.  cond: the input ring and the result (feed(),
	 * finish() and the inflater wait on it); pcond: the plain ring (the
	 * inflater and the applier wait on it). */
	pthread_mutex_t mu;
	pthread_cond_t cond, pcond;
	unsigned char *ring;
	size_t ring_head; /* next byte the inflater takes */
	size_t ring_len;  /* bytes fed and not yet released by the inflater */
	bool input_end;   /* finish() was called */
	bool abort;       /* free() wants the threads gone */
	bool done;        /* the applier has finished; rc, werr and refusal are final */
	int rc;
	struct pp_error werr;
	enum pp_unpack_refusal refusal;
	uint64_t fed;
	/* The plain ring: slots [p_head, p_head + p_count) hold inflated bytes
	 * (p_len each) for the applier, the rest are the inflater's. */
	unsigned char *plain_buf; /* PLAIN_SLOTS * PLAIN_CAP */
	size_t p_len[PLAIN_SLOTS];
	size_t p_head, p_count;
	bool p_end; /* the inflater has finished; irc, ierr, irefusal final */
	int irc;
	struct pp_error ierr;
	enum pp_unpack_refusal irefusal;

	pthread_t thread, ithread; /* the applier, the inflater */
	bool joined, ijoined;

	/* Inflater only (unpack_inflate.c): the input span it holds in the
	 * ring (in_len bytes from ring_head, released when consumed), and the
	 * decompressor. */
	const unsigned char *in;
	size_t in_len, in_pos;
	bool in_eof;
	bool more_out; /* the decompressor may hold output without new input */
	struct inflate_state *isal;
	bool gz_in_member;
	uint64_t gz_members;
	ZSTD_DCtx *zd;
	size_t z_hint; /* ZSTD_decompressStream's last return: 0 at a frame's end */
	uint64_t z_frames;
	enum pp_unpack_refusal in_refusal;

	/* Applier only (unpack.c, unpack_apply.c): the plain slot libarchive
	 * is reading (p_head, until the next read), the hash... */
	bool p_holding;
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

/* free() wants the threads gone: checked between blocks of data. */
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

/* unpack_inflate.c */

/* The inflater thread's body (started by pp_unpack_new). */
void *unpack_inflater(void *arg);

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
