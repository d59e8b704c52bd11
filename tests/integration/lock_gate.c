/* Test helper, loaded with LD_PRELOAD into prepull: the first time prepull
 * asks for a record lock (F_SETLK, the lock on a partial blob file), it
 * creates the file $PP_GATE_READY and waits until $PP_GATE_GO exists.  A
 * test uses the pause to change the file under prepull between its open
 * and its lock. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

static void gate(int cmd)
{
	static int passed;
	const char *ready = getenv("PP_GATE_READY"), *go = getenv("PP_GATE_GO");
	if (cmd != F_SETLK || passed || !ready || !go)
		return;
	passed = 1;
	int fd = open(ready, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd >= 0)
		close(fd);
	while (access(go, F_OK) != 0)
		usleep(20000);
}

static int forward(const char *name, int fd, int cmd, void *arg)
{
	int (*real)(int, int, ...) = (int (*)(int, int, ...))dlsym(RTLD_NEXT, name);
	gate(cmd);
	return real(fd, cmd, arg);
}

int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	va_start(ap, cmd);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	return forward("fcntl", fd, cmd, arg);
}

int fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	va_start(ap, cmd);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	return forward("fcntl64", fd, cmd, arg);
}
