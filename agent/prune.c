/* `prepull prune`: gives back the disk that partial blobs hold.  A failed
 * or stopped run keeps every verified byte for the next one, so partial
 * files stay until a run completes them or a user prunes them.  The
 * places are those `prepull status` reads: <state>/partial and the
 * staging dirs beside stores on other filesystems (<state>/stage-dirs);
 * partial.c removes each blob under its lock. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "prepull/commands.h"
#include "prepull/partial.h"
#include "prepull/store.h"
#include "prepull/util.h"

struct prune_ctx {
	const char *dir;
	int removed;
	int kept;
	int errors;
	int64_t freed;
	double older_than; /* seconds */
};

static void print_age(char *buf, size_t n, double secs)
{
	if (secs < 120)
		snprintf(buf, n, "%.0fs", secs < 0 ? 0 : secs);
	else if (secs < 7200)
		snprintf(buf, n, "%.0fm", secs / 60);
	else
		snprintf(buf, n, "%.0fh", secs / 3600);
}

static void on_partial(void *ctx, const struct pp_prune_info *p)
{
	struct prune_ctx *pc = ctx;
	char size[32], age[32];
	pp_format_bytes(size, sizeof(size), (double)p->bytes);
	print_age(age, sizeof(age), p->age);
	if (p->removed) {
		printf("removed %s  %s, untouched for %s  in %s\n", p->name, size, age, pc->dir);
		pc->removed++;
		pc->freed += p->bytes;
	} else if (p->holder) {
		printf("kept    %s  being fetched by pid %ld  in %s\n", p->name, (long)p->holder,
		       pc->dir);
		pc->kept++;
	} else if (p->error) {
		fprintf(stderr, "prepull: prune: %s/%s: %s\n", pc->dir, p->name, p->error);
		pc->errors++;
	} else {
		printf("kept    %s  %s, changed %s ago (--older-than)  in %s\n", p->name, size, age,
		       pc->dir);
		pc->kept++;
	}
}

static void prune_dir(void *ctx, const char *dir, bool own)
{
	struct prune_ctx *pc = ctx;
	double older_than = pc->older_than;
	(void)own;
	if (access(dir, F_OK) < 0)
		return;
	bool busy = false;
	int fd = pp_partial_dir_lock(dir, true, &busy);
	if (fd < 0) {
		if (busy)
			printf("skipped %s: a prepull run is using it\n", dir);
		else {
			fprintf(stderr, "prepull: prune: %s: %s\n", dir, strerror(errno));
			pc->errors++;
		}
		return;
	}
	pc->dir = dir;
	pp_partial_prune(dir, older_than, on_partial, pc);
	close(fd);
}

int pp_prune(const char *state_dir, double older_than)
{
	struct prune_ctx pc = {.older_than = older_than};
	pp_store_each_stage_dir(state_dir, prune_dir, &pc);
	char freed[32];
	printf("pruned %d partial blob(s), %s freed; %d kept\n", pc.removed,
	       pp_format_bytes(freed, sizeof(freed), (double)pc.freed), pc.kept);
	return pc.errors ? PP_EXIT_FAILED : PP_EXIT_OK;
}
