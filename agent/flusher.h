/* One thread that makes partial files durable while they still arrive.
 *
 * A blob is fsynced before its commit renames it into the store.  On a
 * virtual disk whose host keeps what the guest wrote in its own cache
 * until the guest asks for a flush, that one fsync pays for the whole blob
 * with its last byte already in: 0.3-0.8 s for a 1.5 GiB blob on this
 * project's VMs, though the kernel had written the pages back long before
 * (sync_file_range as each chunk lands).  An fdatasync every
 * PP_FLUSH_EVERY bytes of a blob spreads that cost over the download, and
 * a thread of its own does them: it waits on the disk, it takes no core
 * from the loop or the hash workers.
 *
 * The flusher uses the caller's fd (not a dup: closing any fd of a file
 * drops this process's fcntl lock on it, and the partial file's lock is
 * what keeps other runs away).  So the caller must call flusher_forget()
 * before it closes the fd.  An error of a flush is kept for flusher_forget
 * to return: the kernel reports a writeback error once per open file, so
 * the commit's own fsync would not see it again. */
#ifndef PREPULL_FLUSHER_H
#define PREPULL_FLUSHER_H

#include <stdint.h>

/* Bytes of a blob landed between two flushes of it. */
#define PP_FLUSH_EVERY (64LL << 20)

struct flusher;

/* Starts the thread; NULL when it cannot (then nothing is flushed early,
 * and every call below accepts NULL). */
struct flusher *flusher_new(void);
/* Queues an fdatasync of fd.  Never blocks; does nothing when one for fd
 * is queued already or the queue is full (the commit's fsync does it). */
void flusher_post(struct flusher *f, int fd);
/* Drops fd's queued flush and waits for one running.  Returns 0, or the
 * errno of a flush of fd that failed since the last flusher_forget(fd). */
int flusher_forget(struct flusher *f, int fd);
/* Flushes done so far, and the seconds the thread spent in them. */
void flusher_stats(struct flusher *f, int *flushes, double *secs);
/* Finishes the flush running, drops the rest, stops the thread. */
void flusher_free(struct flusher *f);

#endif
