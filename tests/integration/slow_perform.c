/* Test helper, loaded with LD_PRELOAD into prepull: each call of
 * curl_multi_perform first sleeps $PP_PERFORM_DELAY_MS (default 50) ms.  A
 * deadline then mostly passes while libcurl is about to run the transfers,
 * so their progress callbacks, not the engine's loop, are the first to see
 * it: the path where a stopped request must still keep its bytes. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

typedef void CURLM;

int curl_multi_perform(CURLM *m, int *running)
{
	static int (*real)(CURLM *, int *);
	static useconds_t delay;
	if (!real) {
		real = (int (*)(CURLM *, int *))dlsym(RTLD_NEXT, "curl_multi_perform");
		const char *s = getenv("PP_PERFORM_DELAY_MS");
		delay = (useconds_t)((s ? atoi(s) : 50) * 1000);
	}
	usleep(delay);
	return real(m, running);
}
