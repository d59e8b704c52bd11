/* Consumers of a blob's in-order prefix.
 *
 * Chunks land out of order; the "prefix" is the part [0, n) of the blob that
 * is on disk without a gap.  The whole-blob sha256 follows it, and so can
 * anything else that wants the blob's bytes in order while they arrive (for
 * a layer: inflate, then apply the tar into a snapshot).  Every byte reaches
 * a consumer exactly once per pass, from the transfer's buffer when the
 * consumer is at the frontier, or read back from the partial file (page
 * cache) when it is behind.
 *
 * Bytes fed are NOT verified: the blob's digest is known only when the last
 * byte has been hashed.  A consumer must keep what it makes of them where
 * nobody can use it until finish() says `verified`. */
#ifndef PREPULL_PREFIX_H
#define PREPULL_PREFIX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pp_error;

struct pp_prefix_consumer_ops {
	const char *name; /* for -v lines */
	/* Offers the blob's bytes [offset, offset + len), always where the
	 * consumer's last call left it.  Returns how many it took (0..len):
	 * the rest is offered again on a later turn, read back from the
	 * partial file; so a consumer that is not ready, or full, never holds
	 * up the download.  A negative return fails the blob with err (a full
	 * disk, a corrupt stream).  Called from the fetch loop's thread: it
	 * must not block for long. */
	int64_t (*feed)(void *ctx, int64_t offset, const void *data, size_t len,
			struct pp_error *err);
	/* Optional: how many bytes feed() would take now (0: none, so the
	 * engine reads nothing back for it this turn).  Without it, the engine
	 * offers what it has. */
	int64_t (*wants)(void *ctx);
	/* Everything fed so far is void: the bytes come again from offset 0
	 * (a chunk that failed after its bytes were fed, a repair pass, a
	 * server that ignores Range). */
	void (*restart)(void *ctx);
	/* The blob is over: verified (digest matched and the blob is
	 * committed into the store), or not (failed, or the run stopped).  A
	 * consumer still behind when the blob is verified takes the rest from
	 * the store itself (the blob is there by then).  Returns what the
	 * consumer could not finish (err set), which fails the blob's images. */
	int (*finish)(void *ctx, bool verified, struct pp_error *err);
	/* Frees ctx.  Called once, after finish() or when the engine is freed. */
	void (*free)(void *ctx);
};

struct pp_prefix_consumer {
	const struct pp_prefix_consumer_ops *ops;
	void *ctx;
};

#endif
