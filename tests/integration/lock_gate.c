/* Test helper, loaded with LD_PRELOAD into prepull: the first time prepull
 * asks for a record lock (F_SETLK, the lock on a partial blob file), it
 * creates the file $PP_GATE_READY and waits until $PP_GATE_GO exists.  A
 * test uses the pause to change the file under prepull between its open
 * and its lock.
 *
 * With $PP_INDEX_GATE_READY and $PP_INDEX_GATE_GO instead, the pause is
 * before the first rename onto a path ending in "/index.json": the run has
 * read index.json and holds the layout's lock while another run tries to
 * write its own entry. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void wait_for(const char *ready, const char *go)
{
	int fd = open(ready, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd >= 0)
		close(fd);
	while (access(go, F_OK) != 0)
		usleep(20000);
}

int rename(const char *from, const char *to)
{
	static int passed;
	int (*real)(const char *, const char *) =
		(int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
	const char *ready = getenv("PP_INDEX_GATE_READY"), *go = getenv("PP_INDEX_GATE_GO");
	size_t n = strlen(to);
	if (!passed && ready && go && n >= 11 && strcmp(to + n - 11, "/index.json") == 0) {
		passed = 1;
		wait_for(ready, go);
	}
	return real(from, to);
}

static void gate(int cmd)
{
	static int passed;
	const char *ready = getenv("PP_GATE_READY"), *go = getenv("PP_GATE_GO");
	if (cmd != F_SETLK || passed || !ready || !go)
		return;
	passed = 1;
	wait_for(ready, go);
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
