/* Cancellation state shared by every loop and wait. */
#include "prepull/stop.h"
#include "prepull/util.h"

_Atomic int pp_stop_requested;
double pp_deadline_at;

bool pp_should_stop(void)
{
	return pp_stop_requested || (pp_deadline_at > 0 && pp_now() >= pp_deadline_at);
}
