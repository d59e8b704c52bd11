/* The hash workers: two FIFOs of jobs (urgent first) under one lock,
 * each worker with its own read buffer.  Jobs are whole ranges (a chunk, or what arrived of it
 * since the last one), so the lock is taken a few times per MiB. */
#include "hashpool.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "prepull/digest.h"
#include "prepull/util.h"

#define HASHPOOL_MAX 4
#define READ_BUFFER (1024 * 1024)

struct job {
	int fd;
	int64_t from, to;
	struct pp_sha256 *h, *h2;
	struct job *next;
};

/* A FIFO of jobs. */
struct queue {
	struct job *head, *tail;
};

struct hashpool {
	pthread_mutex_t lock;
	pthread_cond_t work;
	pthread_cond_t idle;           /* a job is over */
	struct queue urgent, later;    /* a worker takes urgent jobs first */
	int running_fd[HASHPOOL_MAX];  /* the file each worker reads, -1 for none */
	atomic_bool cut[HASHPOOL_MAX]; /* its job stops at the next read (hashpool_cancel) */
	bool stopping;
	void (*wake)(void *ctx);
	void *wake_ctx;
	int n_threads;
	pthread_t threads[HASHPOOL_MAX];
	int64_t bytes; /* under lock */
};

int hashpool_default_threads(void)
{
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	long n = cores - 1;
	if (n > HASHPOOL_MAX)
		n = HASHPOOL_MAX;
	return n < 1 ? 1 : (int)n;
}

/* Reads and hashes one job's range, or the part of it before `cut` was
 * set; returns 0 or an errno. */
static int run_job(struct job *j, unsigned char *buf, int64_t *done, const atomic_bool *cut)
{
	for (int64_t pos = j->from; pos < j->to;) {
		if (atomic_load_explicit(cut, memory_order_relaxed))
			break;
		size_t want = j->to - pos > READ_BUFFER ? READ_BUFFER : (size_t)(j->to - pos);
		ssize_t n = pread(j->fd, buf, want, pos);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n == 0 ? EIO : errno; /* EIO: the file is shorter */
		pp_sha256_update_held(j->h, buf, (size_t)n);
		if (j->h2)
			pp_sha256_update_held(j->h2, buf, (size_t)n);
		pos += n;
		*done += n * (j->h2 ? 2 : 1);
	}
	return 0;
}

static void push(struct queue *q, struct job *j)
{
	if (q->tail)
		q->tail->next = j;
	else
		q->head = j;
	q->tail = j;
}

static struct job *pop(struct queue *q)
{
	struct job *j = q->head;
	if (j) {
		q->head = j->next;
		if (!q->head)
			q->tail = NULL;
		j->next = NULL;
	}
	return j;
}

static void release(struct job *j, int error)
{
	pp_sha256_release(j->h, error);
	if (j->h2)
		pp_sha256_release(j->h2, error);
	free(j);
}

struct worker_arg {
	struct hashpool *p;
	int slot;
};

static void *worker(void *arg)
{
	struct hashpool *p = ((struct worker_arg *)arg)->p;
	int slot = ((struct worker_arg *)arg)->slot;
	free(arg);
	unsigned char *buf = pp_xmalloc(READ_BUFFER);
	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (!p->urgent.head && !p->later.head && !p->stopping)
			pthread_cond_wait(&p->work, &p->lock);
		struct job *j = p->urgent.head ? pop(&p->urgent) : pop(&p->later);
		if (!j)
			break; /* stopping, and the queue is empty */
		p->running_fd[slot] = j->fd;
		pthread_mutex_unlock(&p->lock);

		int64_t done = 0;
		int error = run_job(j, buf, &done, &p->cut[slot]);
		pthread_mutex_lock(&p->lock);
		p->bytes += done;
		pthread_mutex_unlock(&p->lock);
		/* Released only now: the owner reads the hash once we let go. */
		release(j, error);
		p->wake(p->wake_ctx);

		pthread_mutex_lock(&p->lock);
		p->running_fd[slot] = -1; /* a cancel waits until the hashes are free */
		atomic_store(&p->cut[slot], false);
		pthread_cond_broadcast(&p->idle);
	}
	pthread_mutex_unlock(&p->lock);
	free(buf);
	return NULL;
}

struct hashpool *hashpool_new(int threads, void (*wake)(void *ctx), void *wake_ctx)
{
	struct hashpool *p = pp_xcalloc(1, sizeof(*p));
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->work, NULL);
	pthread_cond_init(&p->idle, NULL);
	for (int i = 0; i < HASHPOOL_MAX; i++) {
		p->running_fd[i] = -1;
		atomic_init(&p->cut[i], false);
	}
	p->wake = wake;
	p->wake_ctx = wake_ctx;
	if (threads < 1)
		threads = 1;
	if (threads > HASHPOOL_MAX)
		threads = HASHPOOL_MAX;
	for (int i = 0; i < threads; i++) {
		struct worker_arg *a = pp_xmalloc(sizeof(*a));
		*a = (struct worker_arg){p, p->n_threads};
		if (pthread_create(&p->threads[p->n_threads], NULL, worker, a) != 0) {
			free(a);
			break;
		}
		pthread_setname_np(p->threads[p->n_threads], "prepull-hash"); /* for top, perf */
		p->n_threads++;
	}
	if (p->n_threads == 0) {
		fprintf(stderr, "prepull: cannot start a hash thread\n");
		abort();
	}
	return p;
}

void hashpool_post(struct hashpool *p, int fd, int64_t from, int64_t to, struct pp_sha256 *h,
		   struct pp_sha256 *h2, bool urgent)
{
	struct job *j = pp_xcalloc(1, sizeof(*j));
	*j = (struct job){.fd = fd, .from = from, .to = to, .h = h, .h2 = h2};
	pp_sha256_hold(h);
	if (h2)
		pp_sha256_hold(h2);
	pthread_mutex_lock(&p->lock);
	push(urgent ? &p->urgent : &p->later, j);
	pthread_cond_signal(&p->work);
	pthread_mutex_unlock(&p->lock);
}

/* Moves q's jobs on fd to *out. */
static void take_fd(struct queue *q, int fd, struct queue *out)
{
	struct queue keep = {0};
	for (struct job *j; (j = pop(q));)
		push(j->fd == fd ? out : &keep, j);
	*q = keep;
}

void hashpool_cancel(struct hashpool *p, int fd)
{
	struct queue dropped = {0};
	pthread_mutex_lock(&p->lock);
	take_fd(&p->urgent, fd, &dropped);
	take_fd(&p->later, fd, &dropped);
	for (int i = 0; i < p->n_threads; i++)
		if (p->running_fd[i] == fd)
			atomic_store(&p->cut[i], true);
	for (bool running = true; running;) {
		running = false;
		for (int i = 0; i < p->n_threads; i++)
			running = running || p->running_fd[i] == fd;
		if (running)
			pthread_cond_wait(&p->idle, &p->lock);
	}
	pthread_mutex_unlock(&p->lock);
	for (struct job *j; (j = pop(&dropped));)
		release(j, 0);
}

double hashpool_cpu_seconds(const struct hashpool *p)
{
	double secs = 0;
	for (int i = 0; i < p->n_threads; i++) {
		clockid_t clock;
		struct timespec ts;
		if (pthread_getcpuclockid(p->threads[i], &clock) == 0 &&
		    clock_gettime(clock, &ts) == 0)
			secs += (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	}
	return secs;
}

int64_t hashpool_bytes(const struct hashpool *p)
{
	pthread_mutex_lock((pthread_mutex_t *)&p->lock);
	int64_t bytes = p->bytes;
	pthread_mutex_unlock((pthread_mutex_t *)&p->lock);
	return bytes;
}

void hashpool_free(struct hashpool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stopping = true;
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < p->n_threads; i++)
		pthread_join(p->threads[i], NULL);
	pthread_cond_destroy(&p->work);
	pthread_cond_destroy(&p->idle);
	pthread_mutex_destroy(&p->lock);
	free(p);
}
