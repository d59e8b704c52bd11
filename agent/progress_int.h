/* The live display's insides, for the unit test: what one image's row
 * says.  Nobody else includes this. */
#ifndef PREPULL_PROGRESS_INT_H
#define PREPULL_PROGRESS_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "prepull/progress.h"

/* Seconds without a byte after which a started image is "waiting"
 * rather than shown with a rate that only decays. */
#define PROGRESS_IDLE_SECONDS 2.0

enum progress_state {
	PROGRESS_QUEUED,      /* nothing downloaded for it this run: it waits its turn */
	PROGRESS_WAITING,     /* bytes came, none lately */
	PROGRESS_DOWNLOADING, /* bytes arriving: a rate and an ETA */
	PROGRESS_UNPACKING,   /* every byte in; the store still unpacks layers */
	PROGRESS_DONE,        /* every byte in (and unpacked), or registered */
	PROGRESS_FAILED,
};

/* What one image is at.  `idle` is the seconds since its last byte came;
 * `registered` says the pull made it visible in the store. */
enum progress_state progress_state_of(const struct pp_image *img,
				      const struct pp_image_progress *ip, double idle,
				      bool registered);

/* Its row on the display (without the name): "queued, 0 B of 3.0 MiB (0%)",
 * "1.0 MiB of 3.0 MiB (33%), 2.0 MB/s, ETA 1s", "all 3.0 MiB in, unpacking
 * layer 2 of 3", "done", ... */
const char *progress_image_row(char *buf, size_t n, const struct pp_image *img,
			       const struct pp_image_progress *ip, double rate, double idle,
			       bool registered);

#endif
