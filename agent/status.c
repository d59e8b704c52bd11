/* `prepull status`: what partial blobs a state dir knows of.  The partial
 * files live in <state>/partial, and beside stores on other filesystems
 * (listed in <state>/stage-dirs); partial.c reads each for us. */
#include <stdio.h>
#include <sys/types.h>

#include "prepull/commands.h"
#include "prepull/partial.h"
#include "prepull/store.h"
#include "prepull/util.h"

struct status_ctx {
	const char *dir;
	bool show_dir;
};

static void print_partial(void *ctx, const struct pp_partial_info *p)
{
	const struct status_ctx *sc = ctx;
	if (p->error) {
		printf("%s  unreadable journal: %s\n", p->name, p->error);
		return;
	}
	char total[32], got[32];
	printf("%s  %5.1f%%  %s of %s", p->digest,
	       p->size ? 100.0 * (double)p->have / (double)p->size : 100.0,
	       pp_format_bytes(got, sizeof(got), (double)p->have),
	       pp_format_bytes(total, sizeof(total), (double)p->size));
	if (p->holder)
		printf("  (being fetched by pid %ld)", (long)p->holder);
	if (sc->show_dir)
		printf("  in %s", sc->dir);
	putchar('\n');
}

/* Lists one staging directory's partial blobs, adding up how many. */
static void status_dir(void *ctx, const char *dir, bool own)
{
	int *n = ctx;
	struct status_ctx sc = {dir, !own};
	*n += pp_partial_list(dir, print_partial, &sc);
}

int pp_status(const char *state_dir)
{
	int n = 0;
	pp_store_each_stage_dir(state_dir, status_dir, &n);
	if (!n)
		printf("no partial downloads in %s\n", state_dir);
	else
		printf("(`prepull prune` removes the partial downloads no run is working on)\n");
	return PP_EXIT_OK;
}
