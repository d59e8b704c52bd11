/* Cancellation: a signal or the --deadline stops every loop and wait at its
 * next turn.  Lives apart from the engine so the registry, Docker and
 * containerd code can ask "should I stop?" without depending on the fetch
 * engine. */
#ifndef PREPULL_STOP_H
#define PREPULL_STOP_H

#include <stdbool.h>

/* Set from a signal handler, read by every thread: everything stops at its
 * next turn.  Atomic (lock-free int) rather than volatile, which orders
 * nothing between threads. */
extern _Atomic int pp_stop_requested;
/* pp_now() time at which everything stops (--deadline); 0 for none. */
extern double pp_deadline_at;

/* True once a signal came or the deadline passed. */
bool pp_should_stop(void);

#endif
