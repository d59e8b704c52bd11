/* A few worker threads that hash file bytes, so the curl loop thread only
 * moves bytes: it posts "hash [from, to) of this file into this sha256"
 * and learns that a job is over from the hash itself (pp_sha256_busy and
 * pp_sha256_fed), after the pool's wake callback has nudged it.  A hash is
 * held (digest.h) from the post until its worker is through, so at most
 * one job runs per hash and its owner cannot touch it meanwhile; the jobs
 * in the queue are bounded by the hashes their owner has. */
#ifndef PREPULL_HASHPOOL_H
#define PREPULL_HASHPOOL_H

#include <stdbool.h>
#include <stdint.h>

struct pp_sha256;
struct hashpool;

/* Workers by default: one core is the loop's, at most four hash. */
int hashpool_default_threads(void);
/* Starts `threads` workers (at least one); `wake` is called from a worker
 * after each job (it must be thread-safe: curl_multi_wakeup is). */
struct hashpool *hashpool_new(int threads, void (*wake)(void *ctx), void *wake_ctx);
/* Hashes bytes [from, to) of fd into h, and into h2 too unless NULL.
 * Neither may be held already.  A read error is left in the hashes
 * (pp_sha256_error), which then stop short of `to`.  The fd must stay
 * open until the hashes are released.  An urgent job goes before every
 * job that is not (the whole-blob hash, which a commit waits for, before
 * chunk hashes, which only a repair needs at once). */
void hashpool_post(struct hashpool *p, int fd, int64_t from, int64_t to, struct pp_sha256 *h,
		   struct pp_sha256 *h2, bool urgent);
/* Drops the jobs on fd that no worker has started, and cuts the ones
 * running short at their next read (a MiB at most); their hashes are
 * released short of their end.  Returns once no worker reads fd. */
void hashpool_cancel(struct hashpool *p, int fd);
/* CPU seconds the workers used, and the bytes they hashed (h2's counted
 * once more). */
double hashpool_cpu_seconds(const struct hashpool *p);
int64_t hashpool_bytes(const struct hashpool *p);
/* Finishes the jobs queued, then stops the workers. */
void hashpool_free(struct hashpool *p);

#endif
