/* A layer applied while its bytes arrive: push-style streaming unpack of
 * one image layer (gzip, zstd or plain tar) into a directory, the way
 * containerd's overlay applier does it.
 *
 * The caller hands the layer's compressed bytes in order with
 * pp_unpack_feed() as they land (e.g. as the contiguous prefix of a blob
 * grows), then calls pp_unpack_finish() once the blob is complete.  The
 * bytes are inflated (ISA-L for gzip, libzstd for zstd), hashed (the
 * sha256 of the uncompressed stream is the layer's diffID) and applied by
 * libarchive on two worker threads of this object (one inflates, the other
 * hashes and applies), so feed() costs the caller a copy into a bounded
 * buffer, not the inflate.
 *
 * What a layer may do to the target directory (all names confined to it,
 * as containerd's archive.Apply does):
 *  - `..` and absolute names are cleaned to stay inside the root;
 *  - symlinks met on the way to an entry's parent are resolved within the
 *    root, never followed out of it; an entry's own name is never followed;
 *  - a hardlink's target is resolved the same way and must stay inside;
 *  - overlay whiteouts: `.wh.NAME` becomes a 0/0 character device NAME
 *    owned as the whiteout entry; `.wh..wh..opq` sets the opaque xattr
 *    (`trusted.overlay.opaque=y`, or `user.overlay.opaque=y`) on its dir;
 *  - a parent directory the layer does not hold is created with the mode,
 *    owner, times and xattrs of the same directory in the first lower layer
 *    that has it (opts.lowers), else 0755 root:root.
 * Two known differences from containerd's result: a hardlink entry's own
 * owner, times and xattrs are not applied to the shared inode (libarchive's
 * and GNU tar's rule; containerd re-applies them, and its chown then drops
 * a security.capability the link entry does not repeat); and whiteouts are
 * always overlay ones, while containerd removes the named files instead in
 * a layer without a parent (the result seen through overlayfs is the
 * same).
 *
 * Bytes the caller has fed are applied before they are verified: the
 * target must be a directory nobody uses until pp_unpack_finish() returned
 * 0 (an active snapshot), and is to be thrown away otherwise.
 *
 * One thread drives an unpacker (new, feed, finish, free); writable, refused
 * and stats may be asked from any thread.  The workers block all signals:
 * they stay with the caller's threads, whose loops watch for them.
 *
 * Memory is bounded whatever the layer's size: a fixed input ring, fixed
 * inflate buffers, libarchive's own buffers, plus one record per directory
 * of the layer (their modes and times are set at the end, as containerd
 * does) and a zstd window of at most 128 MiB (larger windows are refused,
 * see PP_UNPACK_REFUSED_ZSTD_WINDOW). */
#ifndef PREPULL_UNPACK_H
#define PREPULL_UNPACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pp_error;
struct pp_unpack;

enum pp_unpack_compression {
	PP_UNPACK_TAR = 0, /* uncompressed tar */
	PP_UNPACK_GZIP,
	PP_UNPACK_ZSTD,
};

enum pp_unpack_whiteout {
	PP_WHITEOUT_OVERLAY = 0,       /* .wh.NAME -> char device 0/0; opaque -> trusted.overlay */
	PP_WHITEOUT_OVERLAY_USERXATTR, /* the same with user.overlay.opaque (userxattr mounts) */
};

/* Why an unpack failed with PP_EUNSUPPORTED, so a caller can fall back to
 * another way of applying the layer (containerd's Diff.Apply) instead of
 * failing the image. */
enum pp_unpack_refusal {
	PP_UNPACK_REFUSED_NONE = 0,
	PP_UNPACK_REFUSED_ZSTD_WINDOW, /* a zstd frame needs a window over 128 MiB */
	PP_UNPACK_REFUSED_ENTRY_TYPE,  /* a tar entry type this applier does not handle */
};

/* Largest zstd window accepted (log2): 128 MiB. */
#define PP_UNPACK_ZSTD_WINDOW_LOG_MAX 27

struct pp_unpack_opts {
	/* Directory to apply into (must exist).  Its real path is resolved
	 * once, in pp_unpack_new; every name is created beneath it. */
	const char *root;
	enum pp_unpack_compression compression;
	/* "sha256:<hex>" the uncompressed stream must hash to (the config's
	 * rootfs.diff_ids[i]).  Required. */
	const char *diff_id;
	enum pp_unpack_whiteout whiteout;
	/* Lower layers' directories, topmost first, NULL-terminated (may be
	 * NULL): where a parent directory missing from this layer takes its
	 * mode, owner, times and xattrs from.  Borrowed for new() only. */
	const char *const *lowers;
	/* A label for error messages, e.g. the layer's short digest; may be
	 * NULL.  Copied. */
	const char *label;
};

/* Media type of an OCI or Docker layer -> compression.  Returns 0, or
 * PP_EUNSUPPORTED for anything else (foreign/nondistributable layers are
 * accepted: only the compression matters here). */
int pp_unpack_compression_of(const char *media_type, enum pp_unpack_compression *out,
			     struct pp_error *err);

/* Creates an unpacker and starts its worker threads.  *out is owned by the
 * caller and released with pp_unpack_free.  Returns 0, or a negative PP_E*
 * code (PP_EUSAGE for bad options; when the root cannot be resolved,
 * what its errno says: PP_ENOTFOUND, PP_EPERM, PP_EIO) with err filled in
 * and *out left NULL. */
int pp_unpack_new(struct pp_unpack **out, const struct pp_unpack_opts *opts, struct pp_error *err);

/* Hands the next `len` bytes of the compressed layer, in order.  The bytes
 * are copied (the caller keeps `data`); the call blocks only while the
 * input ring is full, i.e. while the worker is behind by more than the
 * ring's size.  Returns 0, or the worker's failure (sticky: every later
 * feed and finish return it again).  PP_EUNSUPPORTED comes with a
 * pp_unpack_refused() reason. */
int pp_unpack_feed(struct pp_unpack *u, const void *data, size_t len, struct pp_error *err);

/* Bytes that pp_unpack_feed would take now without blocking (0 once the
 * worker has failed or finished). */
size_t pp_unpack_writable(struct pp_unpack *u);

/* Declares the end of the input and waits for the worker: every entry
 * written, directory modes and times set.  Returns 0 when the compressed
 * stream ended cleanly (a whole gzip member / zstd frame, no trailing
 * bytes that are not one), the tar was read to its end and the sha256 of
 * the uncompressed stream equals opts.diff_id; PP_EDIGEST when only the
 * digest differs; another PP_E* code on any other failure. */
int pp_unpack_finish(struct pp_unpack *u, struct pp_error *err);

/* After a PP_EUNSUPPORTED failure: why (PP_UNPACK_REFUSED_NONE otherwise). */
enum pp_unpack_refusal pp_unpack_refused(struct pp_unpack *u);

/* Counters for logs and benchmarks (valid after finish). */
struct pp_unpack_stats {
	uint64_t compressed;   /* bytes fed */
	uint64_t uncompressed; /* bytes of tar stream */
	uint64_t entries;      /* tar entries applied (whiteouts included) */
	char diff_id[80];      /* "sha256:<hex>" of the uncompressed stream, after finish */
};
void pp_unpack_stats(struct pp_unpack *u, struct pp_unpack_stats *out);

/* Stops the worker if it still runs (promptly: it checks between blocks of
 * data) and frees everything.  What was written stays on disk: removing the
 * target is the caller's business.  NULL is a no-op. */
void pp_unpack_free(struct pp_unpack *u);

#endif
