/* Partial blobs as files, for readers outside the fetch engine (`prepull
 * status`): where a blob's partial file and journal live, who holds one,
 * and how far each has come.  The engine's partial.c owns the format; this
 * is its read-only face. */
#ifndef PREPULL_PARTIAL_H
#define PREPULL_PARTIAL_H

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

#endif
