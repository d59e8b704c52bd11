/* Test helper, loaded with LD_PRELOAD into prepull: CLOCK_MONOTONIC (the
 * clock of pp_now and of libcurl's timers) runs $PP_CLOCK_SPEED times as
 * fast as the real one, from the first time it is read.  A test uses it to
 * let prepull see a 60 s token lifetime pass in a few real seconds. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

int clock_gettime(clockid_t id, struct timespec *ts)
{
	static int (*real)(clockid_t, struct timespec *);
	static double speed, base;
	if (!real) {
		real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
		const char *s = getenv("PP_CLOCK_SPEED");
		speed = s ? atof(s) : 1;
		if (speed <= 0)
			speed = 1;
	}
	int r = real(id, ts);
	if (r != 0 || speed == 1 ||
	    (id != CLOCK_MONOTONIC && id != CLOCK_MONOTONIC_COARSE && id != CLOCK_MONOTONIC_RAW &&
	     id != CLOCK_BOOTTIME))
		return r;
	double now = (double)ts->tv_sec + (double)ts->tv_nsec / 1e9;
	if (base == 0)
		base = now;
	double fast = base + (now - base) * speed;
	ts->tv_sec = (time_t)fast;
	ts->tv_nsec = (long)((fast - (double)ts->tv_sec) * 1e9);
	return 0;
}
