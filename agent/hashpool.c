/* The hash workers: a FIFO of jobs under one lock, each worker with its
 * own read buffer.  Jobs are whole ranges (a chunk, or what arrived of it
 * since the last one), so the lock is taken a few times per MiB. */
#include "hashpool.h"

#include <errno.h>
#include <pthread.h>
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

struct hashpool {
	pthread_mutex_t lock;
	pthread_cond_t work;
	struct job *head, *tail;
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

/* Reads and hashes one job's range; returns 0 or an errno. */
static int run_job(struct job *j, unsigned char *buf, int64_t *done)
{
	for (int64_t pos = j->from; pos < j->to;) {
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

static void *worker(void *arg)
{
	struct hashpool *p = arg;
	unsigned char *buf = pp_xmalloc(READ_BUFFER);
	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (!p->head && !p->stopping)
			pthread_cond_wait(&p->work, &p->lock);
		struct job *j = p->head;
		if (!j)
			break; /* stopping, and the queue is empty */
		p->head = j->next;
		if (!p->head)
			p->tail = NULL;
		pthread_mutex_unlock(&p->lock);

		int64_t done = 0;
		int error = run_job(j, buf, &done);
		pthread_mutex_lock(&p->lock);
		p->bytes += done;
		pthread_mutex_unlock(&p->lock);
		/* Released only now: the owner reads the hash once we let go. */
		pp_sha256_release(j->h, error);
		if (j->h2)
			pp_sha256_release(j->h2, error);
		free(j);
		p->wake(p->wake_ctx);

		pthread_mutex_lock(&p->lock);
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
	p->wake = wake;
	p->wake_ctx = wake_ctx;
	if (threads < 1)
		threads = 1;
	if (threads > HASHPOOL_MAX)
		threads = HASHPOOL_MAX;
	for (int i = 0; i < threads; i++) {
		if (pthread_create(&p->threads[p->n_threads], NULL, worker, p) != 0)
			break;
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
		   struct pp_sha256 *h2)
{
	struct job *j = pp_xcalloc(1, sizeof(*j));
	*j = (struct job){.fd = fd, .from = from, .to = to, .h = h, .h2 = h2};
	pp_sha256_hold(h);
	if (h2)
		pp_sha256_hold(h2);
	pthread_mutex_lock(&p->lock);
	if (p->tail)
		p->tail->next = j;
	else
		p->head = j;
	p->tail = j;
	pthread_cond_signal(&p->work);
	pthread_mutex_unlock(&p->lock);
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
	pthread_mutex_destroy(&p->lock);
	free(p);
}
