/* The commands main() dispatches to.  Each returns the process's exit code
 * and has printed whatever the user needs to know on the way. */
#ifndef PREPULL_COMMANDS_H
#define PREPULL_COMMANDS_H

struct pp_options;

enum pp_exit {
	PP_EXIT_OK = 0,       /* every image is in */
	PP_EXIT_FAILED = 1,   /* something failed; one line on stderr said what */
	PP_EXIT_USAGE = 2,    /* the command line or config was wrong */
	PP_EXIT_DEADLINE = 3, /* --deadline reached; progress kept for the next run */
};

/* `prepull pull`: resolves, plans, fetches and registers `refs` into the
 * store opts->store names.  Stops early on pp_stop_requested / the
 * deadline. */
int pp_pull(const struct pp_options *opts, const char *const *refs, int n_refs);

/* `prepull status`: the partial blobs a state dir knows of, with their
 * progress and the pid of a run fetching them now. */
int pp_status(const char *state_dir);

/* `prepull prune`: removes the partial blobs (file and journal) of a state
 * dir and its stores' staging dirs that no run is working on, those
 * untouched for `older_than` seconds or more (0: all of them).  A
 * staging dir a live pull run uses is left alone. */
int pp_prune(const char *state_dir, double older_than);

#endif
