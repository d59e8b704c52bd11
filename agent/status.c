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

static int status_dir(const char *dir, bool show_dir)
{
	struct status_ctx sc = {dir, show_dir};
	return pp_partial_list(dir, print_partial, &sc);
}

int pp_status(const char *state_dir)
{
	cleanup_free char *own = pp_xasprintf("%s/partial", state_dir);
	int n = status_dir(own, false);
	cleanup_free char *list = pp_xasprintf("%s/%s", state_dir, PP_STAGE_DIRS_FILE);
	cleanup_file FILE *f = fopen(list, "re");
	cleanup_free char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	while (f && (len = getline(&line, &cap, f)) > 0) {
		if (line[len - 1] == '\n')
			line[--len] = '\0';
		if (len > 0)
			n += status_dir(line, true);
	}
	if (!n)
		printf("no partial downloads in %s\n", state_dir);
	else
		printf("(`prepull prune` removes the partial downloads no run is working on)\n");
	return PP_EXIT_OK;
}
