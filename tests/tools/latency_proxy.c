/* latency_proxy: a TCP proxy that delays each direction by a fixed one-way time,
 * the latency model of the far-registry tests and benchmarks (the kernel here has
 * no netem).
 *
 *   latency_proxy --listen ADDR:PORT --target ADDR:PORT --delay-ms N
 *                 [--queue-bytes B] [--no-connect-rtt]
 *
 * Every accepted connection gets its own connection to the target.  Bytes read
 * from one side at time t are written to the other at t + N ms (so a request and
 * its answer see a round trip of 2N), FIN included.  A new connection also pays
 * the TCP handshake's round trip: the client's first bytes reach the target no
 * earlier than 2N after the accept, then N more (--no-connect-rtt: off).
 *
 * One thread, epoll, any number of connections.  Each direction's delay line is
 * a pipe: bytes are spliced from the sender's socket into it and, when due, from
 * it to the receiver's, so the proxy never copies them through its own memory (a
 * read and a write per byte made the proxy's CPU a large part of what a
 * benchmark on 2 cores measured).  A direction holds at most --queue-bytes
 * (default 8 MiB; at most the pipe's size, which an unprivileged run may not
 * raise past /proc/sys/fs/pipe-max-size) in flight: above it the proxy stops
 * reading from the sender, whose TCP window then closes, so memory stays bounded
 * and a fast sender is paced by what the delay line can hold (queue / delay per
 * connection).  An error or reset on either side closes both.
 *
 * It terminates TCP on both sides: the sender's congestion window grows against
 * the proxy, not across the delay, so effects of TCP across a long path (slow
 * start after idle, loss recovery) are not modelled; only the time data takes.
 *
 * PORT 0 listens on a free port; the port taken is printed on stdout as
 * "listening on ADDR:PORT" once the proxy accepts connections. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SPLICE_MAX (1024 * 1024) /* the most one splice moves */

/* What the pipe holds, in the order it holds it: the bytes of one splice in. */
struct seg {
	struct seg *next;
	uint64_t due; /* ns, CLOCK_MONOTONIC */
	size_t len, off;
	bool eof; /* the sender's FIN: shutdown(SHUT_WR) when due */
};

struct dir {
	struct seg *head, *tail;
	size_t queued; /* bytes in the pipe */
	size_t cap;    /* the most it may hold: --queue-bytes, or the pipe's size if less */
	int pipe[2];   /* the delay line, opened with the first bytes */
	bool full;     /* the pipe took no more (its slots are used): read after a flush */
	bool src_eof;  /* read side finished */
	bool done;     /* FIN delivered */
	bool blocked;  /* the last write met EAGAIN: wait for EPOLLOUT */
	uint64_t open; /* nothing is due before this (the handshake's round trip) */
};

struct conn;
struct end {
	struct conn *c;
	int fd;
	uint32_t events; /* what epoll watches now */
};

/* e[0] the client, e[1] the target; d[i] carries bytes read from e[i] to e[1 - i]. */
struct conn {
	struct end e[2];
	struct dir d[2];
	bool connecting; /* the target's non-blocking connect is under way */
	bool dead;
	struct conn *next;
};

static int ep = -1;
static uint64_t delay_ns;
static size_t queue_max = 8u << 20;
static bool connect_rtt = true;
static struct conn *conns;
static struct sockaddr_storage target;
static socklen_t target_len;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "latency_proxy: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void usage(void)
{
	fprintf(stderr, "usage: latency_proxy --listen ADDR:PORT --target ADDR:PORT --delay-ms N "
			"[--queue-bytes B] [--no-connect-rtt]\n");
	exit(2);
}

/* ADDR:PORT or [ADDR]:PORT, numeric only (no name lookups in a test network). */
static void parse_addr(const char *s, struct sockaddr_storage *out, socklen_t *len)
{
	char host[256];
	const char *colon = strrchr(s, ':');
	if (!colon || colon == s || (size_t)(colon - s) >= sizeof(host))
		usage();
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	char *h = host;
	size_t hl = strlen(h);
	if (h[0] == '[' && hl > 2 && h[hl - 1] == ']') {
		h[hl - 1] = '\0';
		h++;
	}
	struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
				 .ai_socktype = SOCK_STREAM};
	struct addrinfo *ai = NULL;
	int r = getaddrinfo(h, colon + 1, &hints, &ai);
	if (r != 0) {
		fprintf(stderr, "latency_proxy: bad address %s: %s\n", s, gai_strerror(r));
		exit(2);
	}
	memcpy(out, ai->ai_addr, ai->ai_addrlen);
	*len = ai->ai_addrlen;
	freeaddrinfo(ai);
}

static void watch(struct end *e, uint32_t want)
{
	if (e->fd < 0 || e->events == want)
		return;
	struct epoll_event ev = {.events = want, .data.ptr = e};
	if (epoll_ctl(ep, EPOLL_CTL_MOD, e->fd, &ev) < 0)
		die("epoll_ctl");
	e->events = want;
}

static void close_end(struct end *e)
{
	if (e->fd < 0)
		return;
	epoll_ctl(ep, EPOLL_CTL_DEL, e->fd, NULL);
	close(e->fd);
	e->fd = -1;
}

static void kill_conn(struct conn *c)
{
	for (int i = 0; i < 2; i++) {
		close_end(&c->e[i]);
		for (int k = 0; k < 2; k++)
			if (c->d[i].pipe[k] >= 0) {
				close(c->d[i].pipe[k]);
				c->d[i].pipe[k] = -1;
			}
		while (c->d[i].head) {
			struct seg *s = c->d[i].head;
			c->d[i].head = s->next;
			free(s);
		}
		c->d[i].tail = NULL;
		c->d[i].queued = 0;
	}
	c->dead = true;
}

static void push(struct dir *d, struct seg *s, uint64_t now)
{
	uint64_t from = now > d->open ? now : d->open;
	s->due = from + delay_ns;
	s->next = NULL;
	if (d->tail)
		d->tail->next = s;
	else
		d->head = s;
	d->tail = s;
	d->queued += s->len;
}

/* Opens direction d's pipe and sizes it to the queue.  Returns false when no
 * pipe could be had (out of descriptors): the connection is closed. */
static bool open_pipe(struct dir *d)
{
	if (d->pipe[0] >= 0)
		return true;
	if (pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
		fprintf(stderr, "latency_proxy: pipe: %s\n", strerror(errno));
		d->pipe[0] = d->pipe[1] = -1;
		return false;
	}
	size_t want = queue_max;
	while (want > 4096 &&
	       fcntl(d->pipe[1], F_SETPIPE_SZ, (int)(want > INT_MAX ? INT_MAX : want)) < 0)
		want /= 2; /* over pipe-max-size without the privilege to pass it */
	int size = fcntl(d->pipe[1], F_GETPIPE_SZ);
	d->cap = size > 0 && (size_t)size < queue_max ? (size_t)size : queue_max;
	return true;
}

/* Splices what end i has (up to the queue's bound, unless the socket has failed:
 * then what still fits) into direction i's pipe.  A reset ends the direction
 * like a FIN, after the bytes that came before it. */
static void pull_from(struct conn *c, int i, uint64_t now, bool failed)
{
	struct dir *d = &c->d[i];
	int fd = c->e[i].fd;
	if (!open_pipe(d)) {
		kill_conn(c);
		return;
	}
	while (!d->src_eof && !d->full) {
		size_t room = d->cap - d->queued;
		if (room == 0 && !failed)
			return;
		ssize_t n = -1;
		if (room > 0) {
			n = splice(fd, NULL, d->pipe[1], NULL,
				   room > SPLICE_MAX ? SPLICE_MAX : room,
				   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				/* Nothing to read, or the pipe's slots are all used. */
				int avail = 0;
				if (ioctl(fd, FIONREAD, &avail) == 0 && avail > 0 && !failed) {
					d->full = true;
					return;
				}
				if (!failed)
					return;
			}
		}
		if (n < 0)
			n = 0; /* failed: what did not fit is lost with the connection */
		struct seg *s = malloc(sizeof(*s));
		if (!s)
			die("malloc");
		s->len = (size_t)n;
		s->off = 0;
		s->eof = n == 0;
		push(d, s, now);
		if (n == 0)
			d->src_eof = true;
	}
}

/* Writes what is due of direction i to end 1 - i. */
static void flush_to(struct conn *c, int i, uint64_t now)
{
	struct dir *d = &c->d[i];
	struct end *dst = &c->e[1 - i];
	if (dst->fd < 0 || (i == 0 && c->connecting))
		return;
	d->blocked = false;
	while (d->head && d->head->due <= now) {
		struct seg *s = d->head;
		if (s->eof) {
			shutdown(dst->fd, SHUT_WR);
			d->done = true;
		} else {
			while (s->off < s->len) {
				ssize_t n = splice(d->pipe[0], NULL, dst->fd, NULL, s->len - s->off,
						   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
				if (n < 0 && errno == EINTR)
					continue;
				if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
					d->blocked = true;
					return;
				}
				if (n <= 0) {
					kill_conn(c);
					return;
				}
				s->off += (size_t)n;
				d->queued -= (size_t)n;
				d->full = false;
			}
		}
		d->head = s->next;
		if (!d->head)
			d->tail = NULL;
		free(s);
	}
}

/* Whether a direction's head is waiting for time (not for the socket). */
static bool waits_for_time(const struct conn *c, int i)
{
	const struct dir *d = &c->d[i];
	return d->head && !d->blocked && c->e[1 - i].fd >= 0 && !(i == 0 && c->connecting);
}

/* Brings a connection's epoll interest and ends up to date; frees ends that
 * have nothing more to read nor to receive. */
static void settle(struct conn *c)
{
	if (c->dead)
		return;
	for (int k = 0; k < 2; k++) {
		struct end *e = &c->e[k];
		if (e->fd < 0)
			continue;
		/* Both ways over for this end: its socket is no longer needed (keeping
		 * it would report EPOLLHUP for ever). */
		if (c->d[k].src_eof && c->d[1 - k].done) {
			close_end(e);
			continue;
		}
		uint32_t want = 0;
		if (!c->d[k].src_eof && !c->d[k].full &&
		    (c->d[k].pipe[0] < 0 || c->d[k].queued < c->d[k].cap) &&
		    !(k == 1 && c->connecting))
			want |= EPOLLIN;
		if (c->d[1 - k].blocked || (k == 1 && c->connecting))
			want |= EPOLLOUT;
		watch(e, want);
	}
	if (c->e[0].fd < 0 && c->e[1].fd < 0)
		kill_conn(c);
}

static void set_nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void add_fd(struct end *e, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = e};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, e->fd, &ev) < 0)
		die("epoll_ctl add");
	e->events = events;
}

static void accept_all(int lfd, uint64_t now)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (errno == EMFILE || errno == ENFILE) {
				fprintf(stderr, "latency_proxy: accept: %s\n", strerror(errno));
				return;
			}
			die("accept");
		}
		int tfd = socket(target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (tfd < 0) {
			fprintf(stderr, "latency_proxy: socket: %s\n", strerror(errno));
			close(fd);
			continue;
		}
		set_nodelay(fd);
		set_nodelay(tfd);
		struct conn *c = calloc(1, sizeof(*c));
		if (!c)
			die("calloc");
		c->e[0] = (struct end){c, fd, 0};
		c->e[1] = (struct end){c, tfd, 0};
		for (int i = 0; i < 2; i++)
			c->d[i].pipe[0] = c->d[i].pipe[1] = -1;
		if (connect_rtt)
			c->d[0].open = now + 2 * delay_ns;
		int r = connect(tfd, (struct sockaddr *)&target, target_len);
		c->connecting = r < 0 && errno == EINPROGRESS;
		if (r < 0 && !c->connecting) {
			fprintf(stderr, "latency_proxy: connect: %s\n", strerror(errno));
			close(fd);
			close(tfd);
			free(c);
			continue;
		}
		add_fd(&c->e[0], EPOLLIN);
		add_fd(&c->e[1], c->connecting ? EPOLLOUT : EPOLLIN);
		c->next = conns;
		conns = c;
	}
}

static void on_event(struct end *e, uint32_t ev, uint64_t now)
{
	struct conn *c = e->c;
	int k = e == &c->e[0] ? 0 : 1;
	if (c->dead)
		return;
	if (k == 1 && c->connecting) {
		if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		getsockopt(e->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
		if (soerr != 0) {
			fprintf(stderr, "latency_proxy: connect: %s\n", strerror(soerr));
			kill_conn(c);
			return;
		}
		c->connecting = false;
		return;
	}
	if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))
		pull_from(c, k, now, (ev & EPOLLERR) != 0);
	if (!c->dead && (ev & EPOLLOUT))
		c->d[1 - k].blocked = false;
}

int main(int argc, char **argv)
{
	const char *listen_s = NULL, *target_s = NULL;
	long delay_ms = -1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--no-connect-rtt") == 0) {
			connect_rtt = false;
			continue;
		}
		if (i + 1 >= argc)
			usage();
		if (strcmp(a, "--listen") == 0)
			listen_s = argv[++i];
		else if (strcmp(a, "--target") == 0)
			target_s = argv[++i];
		else if (strcmp(a, "--delay-ms") == 0 || strcmp(a, "--queue-bytes") == 0) {
			char *end = NULL;
			errno = 0;
			long long v = strtoll(argv[++i], &end, 10);
			if (errno || !end || *end || v < 0 || v > INT_MAX)
				usage();
			if (a[2] == 'd')
				delay_ms = (long)v;
			else
				queue_max = v > 0 ? (size_t)v : 1;
		} else
			usage();
	}
	if (!listen_s || !target_s || delay_ms < 0)
		usage();
	delay_ns = (uint64_t)delay_ms * 1000000u;
	signal(SIGPIPE, SIG_IGN);

	struct sockaddr_storage la;
	socklen_t ll;
	parse_addr(listen_s, &la, &ll);
	parse_addr(target_s, &target, &target_len);
	int lfd = socket(la.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		die("socket");
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&la, ll) < 0)
		die("bind");
	if (listen(lfd, 512) < 0)
		die("listen");
	ll = sizeof(la);
	getsockname(lfd, (struct sockaddr *)&la, &ll);
	char host[NI_MAXHOST], port[NI_MAXSERV];
	getnameinfo((struct sockaddr *)&la, ll, host, sizeof(host), port, sizeof(port),
		    NI_NUMERICHOST | NI_NUMERICSERV);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1");
	struct end lend = {NULL, lfd, EPOLLIN};
	struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &lend};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0)
		die("epoll_ctl");
	printf(strchr(host, ':') ? "listening on [%s]:%s\n" : "listening on %s:%s\n", host, port);
	fflush(stdout);

	struct epoll_event evs[64];
	for (;;) {
		/* The nearest due time of a head that only waits for its time. */
		uint64_t now = now_ns(), next = UINT64_MAX;
		for (struct conn *c = conns; c; c = c->next)
			for (int i = 0; i < 2; i++)
				if (!c->dead && waits_for_time(c, i) && c->d[i].head->due < next)
					next = c->d[i].head->due;
		int timeout = -1;
		if (next != UINT64_MAX)
			timeout = next <= now ? 0 : (int)((next - now + 999999) / 1000000);
		int n = epoll_wait(ep, evs, 64, timeout);
		if (n < 0 && errno != EINTR)
			die("epoll_wait");
		now = now_ns();
		for (int i = 0; i < n; i++) {
			struct end *e = evs[i].data.ptr;
			if (e == &lend)
				accept_all(lfd, now);
			else
				on_event(e, evs[i].events, now);
		}
		/* Deliver what is due, then bring interest up to date; free the dead. */
		for (struct conn **pc = &conns; *pc;) {
			struct conn *c = *pc;
			for (int i = 0; i < 2 && !c->dead; i++)
				flush_to(c, i, now);
			settle(c);
			if (c->dead) {
				*pc = c->next;
				free(c);
			} else
				pc = &c->next;
		}
	}
}
