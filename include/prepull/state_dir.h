/* The state dir: partial blobs and their journals (partial/), the stores
 * prepull keeps itself (oci/, docker/) and a little bookkeeping.
 *
 * Partial blobs are layers of private images, and every file prepull
 * later opens there it takes for its own: a symlink planted at a partial
 * file's path would be followed and filled with registry bytes.  So the
 * state dir is private (0700, as /var/lib/docker is 0710) and nobody but
 * this user (and root) can change it or any directory above it.
 *
 * The layout has a version, in the file `version` ("1"), so that a later
 * prepull can change it and an older one refuses what it cannot read
 * instead of misreading it. */
#ifndef PREPULL_STATE_DIR_H
#define PREPULL_STATE_DIR_H

struct pp_error;

/* The state dir layout this prepull writes and reads. */
#define PP_STATE_DIR_VERSION 1
#define PP_STATE_DIR_VERSION_FILE "version"

/* Makes `dir` ready for a pull, before anything is written there:
 *  - creates it 0700 (missing parents 0755) and partial/ 0700;
 *  - refuses (PP_EIO) a dir not owned by this user, one writable by group
 *    or others, and one below a directory that another user owns or that
 *    group or others can write without the sticky bit (they could swap the
 *    state dir for their own);
 *  - refuses (PP_EUNSUPPORTED) a dir whose `version` is newer than
 *    PP_STATE_DIR_VERSION, and one whose `version` is not a number;
 *  - a dir without `version` (new, or made by a prepull before versions)
 *    is version 1: it gets the file, and loses the group and other
 *    permissions older prepulls gave it and its partial/.
 * Returns 0, or a negative PP_E* code with err set to one line that names
 * the dir and says what to do. */
int pp_state_dir_open(const char *dir, struct pp_error *err);

#endif
