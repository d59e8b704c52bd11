/* The fetch engine's scheduler.  Three steps per turn, as in curl's
 * 10-at-a-time: start transfers up to the limits, drain the finished ones
 * (transfer.c decides what each outcome means), poll.  Chunks and blobs
 * change state here only, in chunk_set_state() and blob_set_state(). */
#include <errno.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "engine_int.h"
#include "flusher.h"
#include "hashpool.h"
#include "prepull/journal.h"
#include "prepull/log.h"
#include "prepull/options.h"
#include "prepull/partial.h"
#include "prepull/progress.h"
#include "prepull/registry.h"
#include "prepull/stop.h"
#include "prepull/store.h"

static const char *const chunk_state_names[] = {"pending", "active", "done"};
static const char *const blob_state_names[] = {"queued", "running", "done", "failed"};

static void notify(struct blob *b, const struct pp_error *err);
static void release_plan(struct blob *b);

void chunk_set_state_at(struct blob *b, size_t ci, enum chunk_state s, const char *fn, int line)
{
	struct chunk *c = &b->chunks[ci];
	if (c->state == s)
		return;
	pp_debug("blob %s: chunk %zu: %s -> %s (%s:%d)", pp_short_digest(b->digest), ci,
		 chunk_state_names[c->state], chunk_state_names[s], fn, line);
	c->state = s;
	if (s == CHUNK_PENDING && ci < b->first_pending)
		b->first_pending = ci;
}

void blob_set_state_at(struct blob *b, enum blob_state s, const char *fn, int line)
{
	if (b->state == s)
		return;
	pp_debug("blob %s: %s -> %s (%s:%d)", pp_short_digest(b->digest),
		 blob_state_names[b->state], blob_state_names[s], fn, line);
	b->state = s;
	if (s == BLOB_RUNNING) {
		b->started = b->progress_at = pp_now();
		b->kept_max = b->resumed;
	} else if (s == BLOB_DONE) {
		notify(b, NULL);
		release_plan(b);
	} else if (s == BLOB_FAILED) {
		notify(b, &b->err); /* each image that wanted it reports it once */
		release_plan(b);
	}
}

/* A blob that is over needs its chunks and hashes no more. */
static void release_plan(struct blob *b)
{
	for (size_t i = 0; i < b->n_chunks; i++) {
		pp_sha256_free(b->chunks[i].sha);
		pp_sha256_free(b->chunks[i].resume_hash);
	}
	free(b->chunks);
	b->chunks = NULL;
	b->n_chunks = b->first_pending = b->hash_chunk = 0;
	pp_sha256_free(b->hash);
	pp_sha256_free(b->frontier);
	pp_sha256_free(b->check);
	b->hash = b->frontier = b->check = NULL;
}

int *engine_host_slot(struct pp_engine *e, const struct pp_registry *reg)
{
	for (size_t i = 0; i < e->n_hosts; i++)
		if (e->hosts[i].reg == reg)
			return &e->hosts[i].n;
	e->hosts = pp_xrealloc(e->hosts, (e->n_hosts + 1) * sizeof(*e->hosts));
	e->hosts[e->n_hosts] = (struct host_count){.reg = reg};
	return &e->hosts[e->n_hosts++].n;
}

int pp_engine_new(struct pp_engine **out, const struct pp_options *opts, struct pp_store *store,
		  struct pp_progress *progress, struct pp_error *err)
{
	struct pp_engine *e = pp_xcalloc(1, sizeof(*e));
	e->opts = opts;
	e->store = store;
	e->progress = progress;
	e->multi = curl_multi_init();
	if (!e->multi) {
		free(e);
		return pp_error_set(err, PP_EGENERIC, "curl_multi_init failed");
	}
	/* No HTTP/2 multiplexing: every chunk gets its own TCP connection, so a
	 * CDN that caps each connection serves N ranges at N times the speed. */
	curl_multi_setopt(e->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING);
	lanes_init(e);
	/* Racers (lanes.c) come on top of the lanes, for a moment. */
	long most = (long)e->lanes.max + RACE_MAX;
	curl_multi_setopt(e->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, most);
	curl_multi_setopt(e->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)opts->per_host + RACE_MAX);
	curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, (long)e->lanes.limit + RACE_MAX);
	e->xfers = pp_xcalloc((size_t)most, sizeof(*e->xfers));
	e->hashbuf = pp_xmalloc(HASH_BUFFER);
	e->scratch = pp_sha256_new();
	e->run_lock = -1;
	/* A blob being fetched holds two descriptors (its partial file and
	 * journal), a connection one: open no more blobs than the limit
	 * leaves room for, and never more than there are connections. */
	struct rlimit rl;
	rlim_t limit = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;
	rlim_t spare = (rlim_t)FD_RESERVE + (rlim_t)most;
	e->max_open = limit > spare + 2 ? (size_t)((limit - spare) / 2) : 1;
	if (e->max_open > (size_t)e->lanes.max)
		e->max_open = (size_t)e->lanes.max;
	pp_debug("engine: at most %zu blobs open at once (open-file limit %llu)", e->max_open,
		 (unsigned long long)limit);
	*out = e;
	return 0;
}

int64_t pp_engine_fetched(const struct pp_engine *e)
{
	return e->fetched;
}

bool pp_engine_blob_progress(const struct pp_engine *e, const char *digest, int64_t *have,
			     int64_t *fetched)
{
	for (size_t i = 0; i < e->n_blobs; i++) {
		const struct blob *b = e->blobs[i];
		if (strcmp(b->digest, digest) != 0)
			continue;
		int64_t h = b->state == BLOB_DONE ? b->size : b->fetched - b->redone + b->resumed;
		*have = h > b->size ? b->size : h;
		*fetched = b->fetched;
		return true;
	}
	return false;
}

int64_t engine_pick_chunk_size(const struct pp_options *opts, int64_t size)
{
	int64_t floor = (size + PP_JOURNAL_MAX_CHUNKS - 1) / PP_JOURNAL_MAX_CHUNKS;
	if (opts->chunk_size > 0)
		return opts->chunk_size > floor ? opts->chunk_size : floor;
	/* An automatic count starts at 8 and may grow: chunks are cut for 16
	 * lanes then, as for the fixed default before it (spans join them
	 * when the round trip asks for longer requests). */
	int lanes = opts->auto_connections ? 16 : opts->connections;
	int64_t c = size / ((int64_t)lanes * 4);
	c = (c + MIB - 1) / MIB * MIB;
	if (c < CHUNK_MIN)
		c = CHUNK_MIN;
	if (c > CHUNK_MAX)
		c = CHUNK_MAX;
	return c;
}

void engine_plan_chunks(struct pp_engine *e, struct blob *b, int64_t chunk_size)
{
	for (size_t i = 0; i < b->n_chunks; i++) {
		pp_sha256_free(b->chunks[i].sha);
		pp_sha256_free(b->chunks[i].resume_hash);
	}
	free(b->chunks);
	b->chunk_size = chunk_size > 0 ? chunk_size : engine_pick_chunk_size(e->opts, b->size);
	b->n_chunks = b->size ? (size_t)((b->size + b->chunk_size - 1) / b->chunk_size) : 0;
	b->chunks = pp_xcalloc(b->n_chunks ? b->n_chunks : 1, sizeof(*b->chunks));
	for (size_t i = 0; i < b->n_chunks; i++) {
		struct chunk *c = &b->chunks[i];
		c->off = (int64_t)i * b->chunk_size;
		c->len = c->off + b->chunk_size > b->size ? b->size - c->off : b->chunk_size;
	}
	b->first_pending = 0;
	prefix_restart(b);
	/* No chunk has an earlier digest to be compared with now. */
	b->repairing = false;
	b->changed = 0;
	b->check_from = 0;
}

int pp_engine_add(struct pp_engine *e, struct pp_registry *reg, const char *repo,
		  const char *digest, int64_t size, pp_blob_cb cb, void *ctx, struct pp_error *err)
{
	struct waiter *w = pp_xcalloc(1, sizeof(*w));
	w->cb = cb;
	w->ctx = ctx;
	for (size_t i = 0; i < e->n_blobs; i++) {
		struct blob *b = e->blobs[i];
		if (strcmp(b->digest, digest) == 0) {
			if (b->size != size) {
				free(w);
				return pp_error_set(err, PP_EPROTO,
						    "blob %s is listed with sizes %lld and %lld",
						    pp_short_digest(digest), (long long)b->size,
						    (long long)size);
			}
			w->next = b->waiters;
			b->waiters = w;
			engine_add_origin(b, reg, repo);
			return 0;
		}
	}
	struct blob *b = pp_xcalloc(1, sizeof(*b));
	snprintf(b->digest, sizeof(b->digest), "%s", digest);
	b->size = size;
	b->reg = reg;
	b->repo = pp_xstrdup(repo);
	b->url = pp_registry_url(reg, repo, "blobs", digest);
	b->fd = -1;
	b->jfd = -1;
	b->waiters = w;
	e->blobs = pp_xrealloc(e->blobs, (e->n_blobs + 1) * sizeof(*e->blobs));
	e->blobs[e->n_blobs++] = b;
	return 0;
}

int pp_engine_add_consumer(struct pp_engine *e, const char *digest,
			   const struct pp_prefix_consumer *c, struct pp_error *err)
{
	for (size_t i = 0; i < e->n_blobs; i++) {
		struct blob *b = e->blobs[i];
		if (strcmp(b->digest, digest) != 0)
			continue;
		if (b->state != BLOB_QUEUED)
			break;
		b->consumers =
			pp_xrealloc(b->consumers, (b->n_consumers + 1) * sizeof(*b->consumers));
		b->consumers[b->n_consumers++] = (struct consumer_slot){*c, 0};
		return 0;
	}
	c->ops->free(c->ctx);
	return pp_error_set(err, PP_ENOTFOUND, "blob %s is not queued", pp_short_digest(digest));
}

/* Tells the images that wait for a blob that it is over (err NULL: in the
 * store). */
static void notify(struct blob *b, const struct pp_error *err)
{
	double secs = pp_now() - b->started;
	for (struct waiter *w = b->waiters; w; w = w->next)
		w->cb(w->ctx, b->digest, b->size, b->fetched, secs, err);
}

void engine_cancel_blob_xfers(struct pp_engine *e, struct blob *b)
{
	for (int i = e->n_xfers - 1; i >= 0; i--) {
		struct xfer *x = e->xfers[i];
		if (x->b != b)
			continue;
		chunk_set_state(b, x->chunk, CHUNK_PENDING);
		xfer_free(e, x);
		i = e->n_xfers; /* the array was compacted: rescan */
	}
}

/* Checkpoints what a transfer brought since its chunk's last checkpoint,
 * so a stop or a failure keeps it. */
static void keep_received(struct pp_engine *e, struct xfer *x)
{
	struct chunk *c = &x->b->chunks[x->chunk];
	if (x->b->jfd >= 0 && c->sha && c->received > c->checkpoint && c->received < c->len)
		partial_checkpoint(e, x->b, x->chunk);
}

static void end_blob(struct pp_engine *e, struct blob *b, const struct pp_error *err, bool discard)
{
	for (int i = 0; i < e->n_xfers; i++)
		if (e->xfers[i]->b == b)
			keep_received(e, e->xfers[i]);
	engine_cancel_blob_xfers(e, b);
	prefix_finish(e, b, false);
	/* A file with no verified byte in it only holds disk space (it was
	 * preallocated at the blob's size): nothing to keep. */
	int64_t kept = 0;
	for (size_t i = 0; i < b->n_chunks; i++)
		kept += b->chunks[i].received;
	if (kept == 0)
		discard = true;
	if (!discard) {
		/* Flushed, so what is kept survives a power loss too. */
		if (b->fd >= 0)
			fdatasync(b->fd);
		if (b->jfd >= 0)
			fdatasync(b->jfd);
	}
	partial_close(e, b, discard);
	b->err = *err;
	pp_debug("%s", err->msg);
	blob_set_state(b, BLOB_FAILED);
}

void engine_fail_blob(struct pp_engine *e, struct blob *b, const struct pp_error *err)
{
	end_blob(e, b, err, false);
}

void engine_discard_blob(struct pp_engine *e, struct blob *b, const struct pp_error *err)
{
	end_blob(e, b, err, true);
}

bool engine_gave_up(struct pp_engine *e, struct blob *b)
{
	int64_t kept = 0;
	for (size_t i = 0; i < b->n_chunks; i++)
		kept += b->chunks[i].received;
	double now = pp_now();
	if (kept > b->kept_max) {
		b->kept_max = kept;
		b->progress_at = now;
	}
	double limit = e->opts->give_up_seconds > 0 ? e->opts->give_up_seconds
						    : PP_DEFAULT_GIVE_UP_SECONDS;
	return now - b->progress_at >= limit;
}

/* Cancels requests that have received nothing for --stall-timeout (curl's
 * low-speed check averages over a window, so a burst then silence would
 * outlive it); their chunks go back to the queue and resume where they
 * stopped. */
static void cancel_stalled(struct pp_engine *e)
{
	double now = pp_now();
	for (;;) {
		struct xfer *x = NULL;
		for (int i = 0; i < e->n_xfers && !x; i++)
			if (now - e->xfers[i]->last_byte > e->opts->stall_seconds)
				x = e->xfers[i];
		if (!x)
			return;
		xfer_stalled(e, x);
	}
}

static bool blob_open(const struct blob *b)
{
	return b->state == BLOB_QUEUED || b->state == BLOB_RUNNING;
}

/* How many blobs are done with (committed or failed). */
static size_t blobs_closed(const struct pp_engine *e)
{
	size_t n = 0;
	for (size_t i = 0; i < e->n_blobs; i++)
		n += !blob_open(e->blobs[i]);
	return n;
}

/* The next chunk to fetch: blobs in the order they were added (config,
 * then layers bottom-up), so lower layers complete first. */
static struct blob *next_chunk(struct pp_engine *e, size_t *ci, double now, double *wake)
{
	for (size_t i = 0; i < e->n_blobs; i++) {
		struct blob *b = e->blobs[i];
		if (b->state != BLOB_RUNNING)
			continue;
		if ((b->single_stream && b->active > 0) || b->check)
			continue;
		/* sources.c: a source of the blob (probes, --per-host) takes one now */
		if (!sources_ready(e, b, now, wake))
			continue;
		while (b->first_pending < b->n_chunks &&
		       b->chunks[b->first_pending].state != CHUNK_PENDING)
			b->first_pending++;
		for (size_t k = b->first_pending; k < b->n_chunks; k++) {
			struct chunk *c = &b->chunks[k];
			/* A chunk past the bad one would be fetched for nothing: few
			 * ahead of the hash, and none past a replaced chunk until the
			 * file has been tried with it. */
			if (b->repairing && (k >= b->hash_chunk + REPAIR_AHEAD ||
					     (b->check_from > 0 && k >= b->check_from)))
				break;
			if (c->state != CHUNK_PENDING)
				continue;
			if (c->not_before > now) {
				if (*wake == 0 || c->not_before < *wake)
					*wake = c->not_before;
				continue;
			}
			/* A repaired chunk waits for another source than the
			 * one whose bytes failed, when there is one. */
			if (b->repairing && !sources_ready_for(e, b, k, now, wake))
				continue;
			*ci = k;
			return b;
		}
	}
	return NULL;
}

static void start_transfers(struct pp_engine *e, double *wake)
{
	double now = pp_now();
	struct lanes_state *s = &e->lanes;
	if (s->held && now - s->held_at > LANES_HOLD)
		s->held = 0;
	while (e->n_xfers - s->racers + s->held < s->limit) {
		size_t ci;
		struct blob *b = next_chunk(e, &ci, now, wake);
		if (!b)
			return;
		struct pp_error err = {0};
		if (xfer_start(e, b, ci, lanes_span_end(e, b, ci, now), &err) < 0) {
			pp_error_wrap(&err, "blob %s", pp_short_digest(b->digest));
			engine_fail_blob(e, b, &err);
		}
	}
}

/* Opens a blob that is not running yet, when fewer than max_open are.
 * One that another prepull run holds is looked at again every BUSY_RETRY
 * seconds: it is done when that run has committed it, or ours once that
 * run lets go. */
static void activate(struct pp_engine *e, struct blob *b, double now, size_t *n_open)
{
	if (b->state != BLOB_QUEUED || now < b->next_try || *n_open >= e->max_open)
		return;
	struct pp_error err = {0};
	if (b->held_by) {
		bool have = false;
		if (pp_store_has_blob(e->store, b->digest, b->size, &have, &err) == 0 && have) {
			pp_info("blob %s: committed by the other prepull run",
				pp_short_digest(b->digest));
			blob_set_state(b, BLOB_DONE);
			return;
		}
	}
	pid_t before = b->held_by;
	enum partial_open_result r;
	if (partial_open(e, b, &r, &err) < 0) {
		engine_fail_blob(e, b, &err);
	} else if (r == PARTIAL_OPENED) {
		(*n_open)++;
	} else if (r == PARTIAL_MOVED) {
		/* The file moved on under us: look at the store, then again. */
		if (++b->moved > MOVED_MAX) {
			pp_error_set(&err, PP_EIO, "%s keeps being replaced by another process",
				     b->partial);
			engine_fail_blob(e, b, &err);
			return;
		}
		b->held_by = b->held_by ? b->held_by : -1;
		b->next_try = now + 0.1;
	} else if (r == PARTIAL_BUSY) {
		if (!before)
			pp_warn("blob %s is being fetched by another prepull run (pid %ld); "
				"waiting "
				"for it",
				pp_short_digest(b->digest), (long)b->held_by);
		b->held_by = b->held_by ? b->held_by : -1;
		b->next_try = now + BUSY_RETRY;
	}
}

/* Reads back what can be hashed, within a budget per turn; returns true
 * when work is left for the next turn. */
static bool hash_backlog(struct pp_engine *e)
{
	int64_t budget = HASH_BUDGET;
	bool more = false;
	for (size_t i = 0; i < e->n_blobs; i++) {
		struct blob *b = e->blobs[i];
		if (b->state == BLOB_RUNNING && verify_blob(e, b, &budget))
			more = true;
	}
	return more;
}

static void stop_all(struct pp_engine *e)
{
	while (e->n_xfers > 0) {
		struct xfer *x = e->xfers[0];
		keep_received(e, x);
		chunk_set_state(x->b, x->chunk, CHUNK_PENDING);
		xfer_free(e, x);
	}
	/* Partial files and journals stay for the next run; flushed, so a
	 * power loss after a clean stop loses nothing. */
	for (size_t i = 0; i < e->n_blobs; i++) {
		struct blob *b = e->blobs[i];
		if (b->fd >= 0)
			fdatasync(b->fd);
		if (b->jfd >= 0)
			fdatasync(b->jfd);
		prefix_finish(e, b, false);
		partial_close(e, b, false);
	}
}

/* Before the first byte: this run's claim on the staging dir (so `prepull
 * prune` leaves the partial files of blobs it has queued alone), and a
 * full disk found up front. */
static void before_run(struct pp_engine *e)
{
	const char *dir = e->store ? e->store->stage_dir : NULL;
	if (!dir)
		return;
	if (e->run_lock < 0) {
		bool busy = false;
		e->run_lock = pp_partial_dir_lock(dir, false, &busy);
		if (e->run_lock < 0 && errno != EINTR)
			pp_warn("%s: cannot take the run lock: %s", dir, strerror(errno));
	}
	partial_check_space(e);
}

static int run_loop(struct pp_engine *e, struct pp_error *err)
{
	before_run(e);
	lanes_start(e);
	for (;;) {
		if (pp_stop_requested) {
			stop_all(e);
			return pp_error_set(err, PP_EINTR, "interrupted; run again to resume");
		}
		if (pp_deadline_at > 0 && pp_now() >= pp_deadline_at) {
			stop_all(e);
			return pp_error_set(err, PP_EDEADLINE,
					    "deadline reached; progress kept for the next run");
		}
		double now = pp_now(), wake = 0;
		bool open = false;
		size_t n_open = 0, n_closed = blobs_closed(e);
		for (size_t i = 0; i < e->n_blobs; i++)
			n_open += e->blobs[i]->state == BLOB_RUNNING;
		for (size_t i = 0; i < e->n_blobs; i++) {
			struct blob *b = e->blobs[i];
			activate(e, b, now, &n_open);
			if (b->state == BLOB_DONE && !b->lag_noted) {
				b->lag_noted = true;
				lanes_blob_done(e, b);
			}
			if (b->state == BLOB_QUEUED && (wake == 0 || b->next_try < wake))
				wake = b->next_try;
			open = open || blob_open(b);
		}
		bool more_hashing = hash_backlog(e);
		start_transfers(e, &wake);
		if (!open)
			break;
		int running = 0;
		CURLMcode mc = curl_multi_perform(e->multi, &running);
		if (mc != CURLM_OK)
			return pp_error_set(err, PP_EGENERIC, "curl_multi_perform: %s",
					    curl_multi_strerror(mc));
		CURLMsg *msg;
		int left;
		bool finished = false;
		while ((msg = curl_multi_info_read(e->multi, &left))) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			struct xfer *x = NULL;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
			xfer_finish(e, x, msg->data.result);
			finished = true;
			e->lanes.held = 0; /* its connection is back in the pool */
		}
		cancel_stalled(e);
		lanes_tick(e);
		if (e->progress)
			pp_progress_tick(e->progress, e->fetched - e->redone + e->resumed);
		/* A blob committed (or failed) in this pass: the image it completes
		 * is written, or the next blob opened, without waiting. */
		int timeout_ms = 200;
		if (more_hashing || finished || blobs_closed(e) != n_closed) {
			/* Start the next chunks (or hash, or finish) without waiting. */
			timeout_ms = 0;
		} else if (e->n_xfers == 0 && wake > 0) {
			double d = wake - pp_now();
			timeout_ms = d <= 0 ? 0 : d >= 1 ? 1000 : (int)(d * 1000) + 1;
		}
		curl_multi_poll(e->multi, NULL, 0, timeout_ms, NULL);
	}
	lanes_report(e);
	return 0;
}

static double thread_cpu_seconds(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) < 0)
		return 0;
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The loop, with its thread's CPU time counted against the hash workers'. */
int pp_engine_run(struct pp_engine *e, struct pp_error *err)
{
	double cpu = thread_cpu_seconds();
	int r = run_loop(e, err);
	e->loop_cpu += thread_cpu_seconds() - cpu;
	verify_report_cpu(e);
	return r;
}

void pp_engine_free(struct pp_engine *e)
{
	if (!e)
		return;
	stop_all(e);
	for (size_t i = 0; i < e->n_blobs; i++) {
		struct blob *b = e->blobs[i];
		for (size_t k = 0; k < b->n_chunks; k++)
			pp_sha256_free(b->chunks[k].sha);
		free(b->chunks);
		pp_sha256_free(b->hash);
		pp_sha256_free(b->frontier);
		while (b->waiters) {
			struct waiter *w = b->waiters;
			b->waiters = w->next;
			free(w);
		}
		for (size_t k = 0; k < b->n_origins; k++)
			free(b->origins[k].repo);
		free(b->origins);
		free(b->srcs); /* sources.c */
		free(b->repo);
		free(b->url);
		free(b->cdn_url);
		free(b->partial);
		free(b->journal);
		free(b->consumers);
		free(b);
	}
	free(e->blobs);
	free(e->xfers);
	free(e->hosts);
	free(e->hashbuf);
	pp_sha256_free(e->scratch);
	if (e->run_lock >= 0)
		close(e->run_lock);
	hashpool_free(e->pool); /* before the multi handle its workers wake */
	flusher_free(e->flusher);
	lanes_free(e);
	curl_multi_cleanup(e->multi);
	free(e);
}
