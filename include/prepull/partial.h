/* Partial blobs as files, for readers outside the fetch engine (`prepull
 * status`): where a blob's partial file and journal live, who holds one,
 * and how far each has come.  The engine's partial.c owns the format; this
 * is its read-only face. */
#ifndef PREPULL_PARTIAL_H
#define PREPULL_PARTIAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct pp_error;

/* "<dir>/<hex>.partial" and "<dir>/<hex>.journal" for a digest
 * ("sha256:<hex>").  Caller frees. */
char *pp_partial_path(const char *dir, const char *digest);
char *pp_partial_journal_path(const char *dir, const char *digest);

/* One partial blob found in a directory. */
struct pp_partial_info {
	const char *name;   /* the file name's hex part */
	const char *digest; /* from the journal; NULL when it could not be read */
	int64_t size;       /* the blob's size */
	int64_t have;       /* bytes done or checkpointed (claims, not yet re-read) */
	pid_t holder;       /* the prepull run fetching it now, 0 for none */
	const char *error;  /* why the journal could not be read, else NULL */
};

/* Calls fn for each partial blob (each journal) in dir.  Returns how many
 * were found; a missing dir has none. */
int pp_partial_list(const char *dir, void (*fn)(void *ctx, const struct pp_partial_info *info),
		    void *ctx);

/* Every pull run holds its staging dir's run lock (flock on the
 * directory, shared) while it runs, for the blobs it will want but has
 * not opened yet; `prepull prune` takes it exclusively, so it never
 * removes what a live run will resume.  Returns the directory's fd, which
 * holds the lock until closed, or -1: *busy when a run holds it (prune),
 * else errno says why. */
int pp_partial_dir_lock(const char *dir, bool exclusive, bool *busy);

/* What pp_partial_prune did with one partial blob. */
struct pp_prune_info {
	const char *name; /* the file name's hex part */
	int64_t bytes;    /* disk space its files take */
	double age;       /* seconds since either file last changed */
	pid_t holder;     /* a run holds it: left alone */
	bool removed;
	const char *error; /* why it could not be removed, else NULL */
};

/* Removes the partial blobs in dir (the file and its journal, or either
 * one alone) that nobody holds and that are `older_than` seconds old or
 * more, each while holding its lock.  Calls fn for each one found.  The
 * caller holds the dir's run lock exclusively. */
int pp_partial_prune(const char *dir, double older_than,
		     void (*fn)(void *ctx, const struct pp_prune_info *info), void *ctx);

#endif
