/* The flush thread: a small ring of fds to fdatasync under one lock, the
 * fd being flushed, and the errors of flushes not yet handed back. */
#include "flusher.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "prepull/util.h"

#define QUEUE_MAX 64  /* fds waiting (at most one each): more blobs than -j opens */
#define ERRORS_MAX 64 /* one per fd, as many as may be open */

struct flusher {
	pthread_mutex_t lock;
	pthread_cond_t work;
	pthread_cond_t idle; /* a flush is over */
	int queue[QUEUE_MAX];
	int head, len;
	int running; /* the fd being flushed, -1 for none */
	/* Failed flushes not yet handed back: fd and errno.  Past ERRORS_MAX,
	 * `lost` makes every forget report one, so none goes unseen. */
	int err_fd[ERRORS_MAX], err_no[ERRORS_MAX];
	int n_errs;
	int lost;
	bool stopping;
	int flushes;
	double secs;
	pthread_t thread;
};

static void *flush_thread(void *arg)
{
	struct flusher *f = arg;
	pthread_mutex_lock(&f->lock);
	for (;;) {
		while (f->len == 0 && !f->stopping)
			pthread_cond_wait(&f->work, &f->lock);
		if (f->stopping)
			break;
		int fd = f->queue[f->head];
		f->head = (f->head + 1) % QUEUE_MAX;
		f->len--;
		f->running = fd;
		pthread_mutex_unlock(&f->lock);
		double t0 = pp_now();
		int r = fdatasync(fd);
		int no = r < 0 ? errno : 0;
		double took = pp_now() - t0;
		pthread_mutex_lock(&f->lock);
		f->running = -1;
		f->flushes++;
		f->secs += took;
		if (no != 0) {
			int i = 0;
			while (i < f->n_errs && f->err_fd[i] != fd)
				i++;
			if (i < f->n_errs) {
				f->err_no[i] = no;
			} else if (f->n_errs < ERRORS_MAX) {
				f->err_fd[f->n_errs] = fd;
				f->err_no[f->n_errs++] = no;
			} else {
				f->lost = no;
			}
		}
		pthread_cond_broadcast(&f->idle);
	}
	pthread_mutex_unlock(&f->lock);
	return NULL;
}

struct flusher *flusher_new(void)
{
	struct flusher *f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->work, NULL);
	pthread_cond_init(&f->idle, NULL);
	f->running = -1;
	if (pthread_create(&f->thread, NULL, flush_thread, f) != 0) {
		pthread_cond_destroy(&f->idle);
		pthread_cond_destroy(&f->work);
		pthread_mutex_destroy(&f->lock);
		free(f);
		return NULL;
	}
	return f;
}

/* The queue slot holding fd, or -1.  Under the lock. */
static int queued_at(const struct flusher *f, int fd)
{
	for (int i = 0; i < f->len; i++)
		if (f->queue[(f->head + i) % QUEUE_MAX] == fd)
			return (f->head + i) % QUEUE_MAX;
	return -1;
}

void flusher_post(struct flusher *f, int fd)
{
	if (!f || fd < 0)
		return;
	pthread_mutex_lock(&f->lock);
	if (f->len < QUEUE_MAX && queued_at(f, fd) < 0) {
		f->queue[(f->head + f->len) % QUEUE_MAX] = fd;
		f->len++;
		pthread_cond_signal(&f->work);
	}
	pthread_mutex_unlock(&f->lock);
}

int flusher_forget(struct flusher *f, int fd)
{
	if (!f || fd < 0)
		return 0;
	pthread_mutex_lock(&f->lock);
	int at = queued_at(f, fd);
	if (at >= 0) {
		/* Close the gap: the slots after it move up by one. */
		for (int i = at; i != (f->head + f->len - 1) % QUEUE_MAX; i = (i + 1) % QUEUE_MAX)
			f->queue[i] = f->queue[(i + 1) % QUEUE_MAX];
		f->len--;
	}
	while (f->running == fd)
		pthread_cond_wait(&f->idle, &f->lock);
	int no = f->lost;
	for (int i = 0; i < f->n_errs;) {
		if (f->err_fd[i] != fd) {
			i++;
			continue;
		}
		no = f->err_no[i];
		f->n_errs--;
		f->err_fd[i] = f->err_fd[f->n_errs];
		f->err_no[i] = f->err_no[f->n_errs];
	}
	pthread_mutex_unlock(&f->lock);
	return no;
}

void flusher_stats(struct flusher *f, int *flushes, double *secs)
{
	*flushes = 0;
	*secs = 0;
	if (!f)
		return;
	pthread_mutex_lock(&f->lock);
	*flushes = f->flushes;
	*secs = f->secs;
	pthread_mutex_unlock(&f->lock);
}

void flusher_free(struct flusher *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->lock);
	f->stopping = true;
	pthread_cond_signal(&f->work);
	pthread_mutex_unlock(&f->lock);
	pthread_join(f->thread, NULL);
	pthread_cond_destroy(&f->idle);
	pthread_cond_destroy(&f->work);
	pthread_mutex_destroy(&f->lock);
	free(f);
}
