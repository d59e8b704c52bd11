/* Docker credential helpers: finding docker-credential-NAME on PATH and
 * running `docker-credential-NAME get` with the registry key on stdin,
 * bounded in time and output.  A helper's answer is a secret: it never
 * reaches a message or a log line. */
#include "prepull/auth.h"

#include "auth_int.h"
#include "prepull/error.h"
#include "prepull/log.h"
#include "prepull/util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HELPER_TIMEOUT_S 30.0
#define HELPER_OUTPUT_LIMIT (1024 * 1024)

/* ------------------------------------------------------------------ */
/* Credential helpers                                                  */
/* ------------------------------------------------------------------ */

/* Looks `name` up on PATH.  An empty element means the current directory,
 * as for execvp; but a helper found through it or through any other
 * relative element ("." included) is refused, not run, as docker's CLI
 * refuses it: which program gets the registry key, and whose credentials
 * come back, must not depend on where prepull happens to be started.
 * Returns 0 with *out (caller frees), or PP_EAUTH. */
static int search_path(char **out, const char *name, struct pp_error *err)
{
	*out = NULL;
	const char *path = getenv("PATH");
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	const char *p = path;
	for (;;) {
		size_t n = strcspn(p, ":");
		cleanup_free char *dir = n ? pp_xstrndup(p, n) : pp_xstrdup(".");
		cleanup_free char *cand = pp_xasprintf("%s/%s", dir, name);
		struct stat st;
		if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) && access(cand, X_OK) == 0) {
			if (dir[0] != '/')
				return pp_error_set(err, PP_EAUTH,
						    "credential helper %s found through the "
						    "relative PATH element \"%.200s\": not running "
						    "it (PATH elements must be absolute)",
						    name, n ? dir : "");
			*out = cand;
			cand = NULL;
			return 0;
		}
		if (p[n] == '\0')
			return pp_error_set(err, PP_EAUTH, "credential helper %s not found in PATH",
					    name);
		p += n + 1;
	}
}

/* Keeps a helper's message fit for a log line: one line, printable,
 * bounded. */
static void helper_message(char *dst, size_t n, const char *src)
{
	size_t o = 0;
	while (*src && isspace((unsigned char)*src))
		src++;
	for (; *src && o + 1 < n && o < 300; src++) {
		unsigned char c = (unsigned char)*src;
		dst[o++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
	}
	while (o > 0 && dst[o - 1] == ' ')
		o--;
	dst[o] = '\0';
}

struct helper_run {
	struct pp_buf out, errout;
	int status;
	bool timed_out;
};

static void close_fd(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

/* Reads what is available on *fd into b; closes it at EOF.  -1 when b is
 * over its limit. */
static int drain(int *fd, struct pp_buf *b)
{
	char chunk[4096];
	ssize_t n = read(*fd, chunk, sizeof(chunk));
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return 0;
	if (n <= 0) {
		close_fd(fd);
		return 0;
	}
	int r = pp_buf_append(b, chunk, (size_t)n);
	explicit_bzero(chunk, sizeof(chunk));
	return r;
}

/* Runs `prog get` with `input` on stdin, collecting stdout and stderr,
 * killing it after HELPER_TIMEOUT_S.  Returns 0 when it ran (whatever its
 * exit status), else an error naming `name`. */
static int run_helper(struct helper_run *run, const char *prog, const char *name, const char *input,
		      struct pp_error *err)
{
	int in[2] = {-1, -1}, out[2] = {-1, -1}, errp[2] = {-1, -1};
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
		int r = pp_error_errno(err, "credential helper %s: pipe", name);
		close_fd(&in[0]), close_fd(&in[1]), close_fd(&out[0]), close_fd(&out[1]);
		close_fd(&errp[0]), close_fd(&errp[1]);
		return r;
	}
	char *const argv[] = {(char *)prog, (char *)"get", NULL};
	pid_t pid = fork();
	if (pid < 0) {
		int r = pp_error_errno(err, "credential helper %s: fork", name);
		close_fd(&in[0]), close_fd(&in[1]), close_fd(&out[0]), close_fd(&out[1]);
		close_fd(&errp[0]), close_fd(&errp[1]);
		return r;
	}
	if (pid == 0) {
		/* Only async-signal-safe calls from here to exec. */
		struct sigaction dfl = {.sa_handler = SIG_DFL};
		sigaction(SIGPIPE, &dfl, NULL);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		/* Move the ends above 2 first so that no dup2 clobbers another
		 * end (fds 0-2 may have been closed in the parent). */
		int fds[3] = {in[0], out[1], errp[1]};
		for (int i = 0; i < 3; i++)
			if ((fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3)) < 0)
				_exit(127);
		for (int i = 0; i < 3; i++)
			if (dup2(fds[i], i) < 0)
				_exit(127);
		execv(prog, argv);
		_exit(127);
	}
	close_fd(&in[0]);
	close_fd(&out[1]);
	close_fd(&errp[1]);

	/* A helper that exits without reading stdin must not kill us with
	 * SIGPIPE: block it around the write and swallow one that is pending. */
	sigset_t pipe_set, old_set, pending;
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
	sigpending(&pending);
	bool was_pending = sigismember(&pending, SIGPIPE);
	size_t len = strlen(input), off = 0;
	while (off < len) {
		ssize_t w = write(in[1], input + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break; /* EPIPE: the helper's exit status says what happened */
		off += (size_t)w;
	}
	close_fd(&in[1]);
	if (off < len && !was_pending) {
		struct timespec zero = {0, 0};
		sigtimedwait(&pipe_set, NULL, &zero);
	}
	pthread_sigmask(SIG_SETMASK, &old_set, NULL);

	run->out.limit = HELPER_OUTPUT_LIMIT;
	run->errout.limit = HELPER_OUTPUT_LIMIT;
	double deadline = pp_now() + HELPER_TIMEOUT_S;
	bool too_big = false, exited = false;
	int status = -1;
	/* Read until both pipes are at EOF and the helper has exited.  Once it
	 * has exited, what it wrote is in the pipes already: take what is
	 * readable and stop, even if a process it left behind holds them open. */
	while (!exited || out[0] >= 0 || errp[0] >= 0) {
		double left = deadline - pp_now();
		if (left <= 0) {
			run->timed_out = true;
			break;
		}
		if (!exited) {
			pid_t w = waitpid(pid, &status, WNOHANG);
			if (w == pid) {
				exited = true;
			} else if (w < 0 && errno != EINTR) {
				exited = true; /* reaped elsewhere (SIGCHLD ignored) */
				status = -1;
			}
		}
		/* Short naps once both pipes are closed: the exit is imminent. */
		double nap = out[0] < 0 && errp[0] < 0 ? 0.005 : 0.05;
		int wait_ms = exited ? 0 : (int)((left < nap ? left : nap) * 1000) + 1;
		struct pollfd pfd[2] = {{.fd = out[0], .events = POLLIN},
					{.fd = errp[0], .events = POLLIN}};
		int pr = poll(pfd, 2, wait_ms);
		if (pr < 0 && errno != EINTR)
			break;
		if (pr == 0 && exited)
			break;
		if (pr <= 0)
			continue;
		if (pfd[0].revents && drain(&out[0], &run->out) < 0)
			too_big = true;
		if (pfd[1].revents && drain(&errp[0], &run->errout) < 0)
			too_big = true;
		if (too_big)
			break;
	}
	close_fd(&out[0]);
	close_fd(&errp[0]);
	if (!exited) {
		kill(pid, SIGKILL);
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
	}
	run->status = status;
	if (run->timed_out)
		return pp_error_set(err, PP_EAUTH, "credential helper %s timed out after %.0f s",
				    name, HELPER_TIMEOUT_S);
	if (too_big)
		return pp_error_set(err, PP_EAUTH, "credential helper %s: output too large", name);
	return 0;
}

int pp_auth_creds_from_helper(struct pp_creds *out, const char *helper, const char *key,
			      struct pp_error *err)
{
	cleanup_free char *name = pp_xasprintf("docker-credential-%s", helper);
	if (strchr(helper, '/') || !*helper)
		return pp_error_set(err, PP_EAUTH, "invalid credential helper name \"%s\"", helper);
	cleanup_free char *prog = NULL;
	int r = search_path(&prog, name, err);
	if (r < 0)
		return r;
	pp_debug("credentials for %s: running %s get", key, prog);

	struct helper_run run = {0};
	r = run_helper(&run, prog, name, key, err);
	if (r < 0)
		goto done;

	if (run.status == -1) {
		r = pp_error_set(err, PP_EAUTH, "credential helper %s: exit status lost", name);
		goto done;
	}
	if (!WIFEXITED(run.status) || WEXITSTATUS(run.status) != 0) {
		/* The message is on stdout by the helpers' convention; stderr
		 * when stdout has none.  Helpers print no secret on failure,
		 * but a message naming "Secret" is dropped all the same. */
		const char *src = run.out.data && run.out.data[strspn(run.out.data, " \t\r\n")]
					  ? run.out.data
				  : run.errout.data ? run.errout.data
						    : "";
		if (strstr(src, "Secret"))
			src = "";
		char msg[320];
		helper_message(msg, sizeof(msg), src);
		if (strstr(msg, "credentials not found")) {
			r = pp_error_set(err, PP_ENOTFOUND, "no credentials for %s in %s", key,
					 name);
		} else if (WIFSIGNALED(run.status)) {
			r = pp_error_set(err, PP_EAUTH, "credential helper %s killed by signal %d",
					 name, WTERMSIG(run.status));
		} else if (WEXITSTATUS(run.status) == 127 && !msg[0]) {
			r = pp_error_set(err, PP_EAUTH, "credential helper %s could not be run",
					 name);
		} else {
			r = pp_error_set(err, PP_EAUTH, "credential helper %s failed (exit %d)%s%s",
					 name, WEXITSTATUS(run.status), msg[0] ? ": " : "", msg);
		}
		goto done;
	}

	json_error_t je;
	json_t *root = run.out.data ? json_loadb(run.out.data, run.out.len, 0, &je) : NULL;
	const json_t *u = json_object_get(root, "Username");
	const json_t *s = json_object_get(root, "Secret");
	if (!json_is_object(root) || (u && !json_is_string(u)) || (s && !json_is_string(s))) {
		json_decref(root);
		r = pp_error_set(err, PP_EAUTH, "credential helper %s: malformed answer", name);
		goto done;
	}
	const char *user = u ? json_string_value(u) : "";
	const char *secret = s ? json_string_value(s) : "";
	struct pp_creds c = {0};
	if (strcmp(user, "<token>") == 0) {
		c.identity_token = pp_auth_dup_nonempty(secret);
	} else {
		c.username = pp_auth_dup_nonempty(user);
		c.password = pp_auth_dup_nonempty(secret);
	}
	json_decref(root);
	if (pp_auth_creds_empty(&c)) {
		r = pp_error_set(err, PP_ENOTFOUND, "no credentials for %s in %s", key, name);
		goto done;
	}
	*out = c;
	r = 0;
done:
	pp_auth_buf_free_secret(&run.out);
	pp_auth_buf_free_secret(&run.errout);
	return r;
}
