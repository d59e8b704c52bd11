/* The fetch engine's pieces, without a server: chunk planning, the state
 * functions, the classification of a finished transfer, the in-order
 * prefix (hash frontier and prefix consumers) and the chunk hashes, made
 * on the hash workers, over a real partial file committed into a real OCI
 * store. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine_int.h"
#include "prepull/journal.h"
#include "prepull/options.h"
#include "prepull/stop.h"
#include "prepull/store.h"

#define MiB (1024 * 1024)

static struct pp_options opts_with(int connections, int64_t chunk_size)
{
	struct pp_options o = {.connections = connections,
			       .per_host = connections,
			       .chunk_size = chunk_size,
			       .stall_seconds = 30};
	return o;
}

static void test_pick_chunk_size(void **state)
{
	(void)state;
	struct pp_options o = opts_with(16, 0);
	/* Adaptive: size / (4 x connections), whole MiB, within 1..16 MiB. */
	assert_int_equal(engine_pick_chunk_size(&o, 10 * MiB), 1 * MiB);
	assert_int_equal(engine_pick_chunk_size(&o, 256 * (int64_t)MiB), 4 * MiB);
	assert_int_equal(engine_pick_chunk_size(&o, 100 * (int64_t)MiB), 2 * MiB);
	assert_int_equal(engine_pick_chunk_size(&o, 64LL << 30), 4 * MiB);
	/* A --chunk-size is taken as it is ... */
	o = opts_with(16, 3 * MiB);
	assert_int_equal(engine_pick_chunk_size(&o, 64LL << 30), 3 * MiB);
	/* ... unless the journal could not hold that many chunks. */
	o = opts_with(16, 64 * 1024);
	int64_t size = 1LL << 40;
	int64_t c = engine_pick_chunk_size(&o, size);
	assert_true(c > 64 * 1024);
	assert_true((size + c - 1) / c <= PP_JOURNAL_MAX_CHUNKS);
}

/* A blob as the engine would hold it, without a registry. */
static struct blob *new_blob(struct pp_engine *e, int64_t size, int64_t chunk_size)
{
	struct blob *b = pp_xcalloc(1, sizeof(*b));
	snprintf(b->digest, sizeof(b->digest), "sha256:%064d", 0);
	b->size = size;
	b->fd = b->jfd = -1;
	engine_plan_chunks(e, b, chunk_size);
	return b;
}

static void free_blob(struct pp_engine *e, struct blob *b)
{
	partial_close(e, b, false);
	pp_sha256_free(b->hash);
	pp_sha256_free(b->frontier);
	free(b->chunks);
	free(b->partial);
	free(b->journal);
	free(b->consumers);
	free(b);
}

static void test_plan_chunks(void **state)
{
	(void)state;
	struct pp_options o = opts_with(4, 0);
	struct pp_engine *e = NULL;
	struct pp_error err = {0};
	assert_int_equal(pp_engine_new(&e, &o, NULL, NULL, &err), 0);
	struct blob *b = new_blob(e, 10 * MiB + 5, 3 * MiB);
	assert_int_equal(b->n_chunks, 4);
	int64_t next = 0;
	for (size_t i = 0; i < b->n_chunks; i++) {
		assert_int_equal(b->chunks[i].off, next);
		assert_int_equal(b->chunks[i].state, CHUNK_PENDING);
		next += b->chunks[i].len;
	}
	assert_int_equal(next, b->size); /* no gap, no overlap, nothing past the end */
	assert_int_equal(b->chunks[3].len, 1 * MiB + 5);
	struct blob *empty = new_blob(e, 0, 0);
	assert_int_equal(empty->n_chunks, 0);
	free_blob(e, empty);
	free_blob(e, b);
	pp_engine_free(e);
}

static int notified, notified_failed;
static void count_cb(void *ctx, const char *digest, int64_t size, int64_t fetched, double seconds,
		     const struct pp_error *err)
{
	(void)ctx, (void)digest, (void)size, (void)fetched, (void)seconds;
	if (err)
		notified_failed++;
	else
		notified++;
}

static void test_state_functions(void **state)
{
	(void)state;
	struct pp_options o = opts_with(4, 0);
	struct pp_engine *e = NULL;
	struct pp_error err = {0};
	assert_int_equal(pp_engine_new(&e, &o, NULL, NULL, &err), 0);
	struct blob *b = new_blob(e, 5 * MiB, 1 * MiB);
	/* first_pending follows the chunks: past what is taken, back to a
	 * chunk that comes back. */
	chunk_set_state(b, 0, CHUNK_ACTIVE);
	chunk_set_state(b, 1, CHUNK_ACTIVE);
	b->first_pending = 2; /* as the scheduler's scan leaves it */
	chunk_set_state(b, 1, CHUNK_PENDING);
	assert_int_equal(b->first_pending, 1);
	chunk_set_state(b, 0, CHUNK_DONE);
	assert_int_equal(b->first_pending, 1);
	chunk_set_state(b, 0, CHUNK_PENDING);
	assert_int_equal(b->first_pending, 0);

	/* A blob tells its waiters once, when it is over. */
	struct waiter w2 = {count_cb, NULL, NULL}, w1 = {count_cb, NULL, &w2};
	b->waiters = &w1;
	notified = notified_failed = 0;
	blob_set_state(b, BLOB_RUNNING);
	assert_int_equal(notified + notified_failed, 0);
	assert_true(b->started > 0);
	blob_set_state(b, BLOB_DONE);
	assert_int_equal(notified, 2);
	blob_set_state(b, BLOB_DONE); /* no transition, no second word */
	assert_int_equal(notified, 2);
	b->state = BLOB_RUNNING;
	pp_error_set(&b->err, PP_ENET, "gone");
	blob_set_state(b, BLOB_FAILED);
	assert_int_equal(notified_failed, 2);
	b->waiters = NULL;
	free_blob(e, b);
	pp_engine_free(e);
}

/* A transfer as the write callback and curl would leave it. */
static struct xfer reply(struct blob *b, long status)
{
	struct xfer x = {.b = b, .wrong_size = -1};
	x.resp.status = status;
	x.resp.retry_after = -1;
	return x;
}

static void test_classify(void **state)
{
	(void)state;
	struct blob b = {.size = 1000};
	struct xfer x = reply(&b, 206);
	assert_int_equal(xfer_classify(&x, CURLE_OK, true), XO_DONE);
	assert_int_equal(xfer_classify(&x, CURLE_OK, false), XO_RETRY); /* short body */
	assert_int_equal(xfer_classify(&x, CURLE_RECV_ERROR, true), XO_RETRY);
	x = reply(&b, 200);
	assert_int_equal(xfer_classify(&x, CURLE_OK, true), XO_DONE);
	x.range_ignored = true;
	assert_int_equal(xfer_classify(&x, CURLE_WRITE_ERROR, false), XO_RANGE_IGNORED);
	x = reply(&b, 206);
	x.io_errno = 28;
	assert_int_equal(xfer_classify(&x, CURLE_WRITE_ERROR, false), XO_LOCAL_IO);
	x = reply(&b, 206);
	x.wrong_size = 999;
	assert_int_equal(xfer_classify(&x, CURLE_WRITE_ERROR, false), XO_WRONG_SIZE);
	x = reply(&b, 416);
	x.resp.content_range = "bytes */500";
	assert_int_equal(xfer_classify(&x, CURLE_OK, false), XO_WRONG_SIZE);
	x.resp.content_range = "bytes */1000"; /* the size we know: just retry */
	assert_int_equal(xfer_classify(&x, CURLE_OK, false), XO_RETRY);
	x = reply(&b, 0);
	assert_int_equal(xfer_classify(&x, CURLE_PEER_FAILED_VERIFICATION, false), XO_TLS);
	assert_int_equal(xfer_classify(&x, CURLE_COULDNT_CONNECT, false), XO_RETRY);
	x = reply(&b, 403);
	x.error_status = true;
	assert_int_equal(xfer_classify(&x, CURLE_OK, false), XO_REFUSED);
	x.via_cdn = true;
	assert_int_equal(xfer_classify(&x, CURLE_OK, false), XO_REDIRECT_EXPIRED);
	x = reply(&b, 400);
	x.error_status = true;
	x.redirects = 1;
	assert_int_equal(xfer_classify(&x, CURLE_OK, false), XO_REDIRECT_EXPIRED);
	x = reply(&b, 401);
	x.error_status = true;
	assert_int_equal(xfer_classify(&x, CURLE_OK, false), XO_UNAUTHORIZED);
	long transient[] = {408, 429, 500, 502, 503};
	for (size_t i = 0; i < sizeof(transient) / sizeof(*transient); i++) {
		x = reply(&b, transient[i]);
		x.error_status = true;
		assert_int_equal(xfer_classify(&x, CURLE_OK, false), XO_RETRY);
	}
	x = reply(&b, 404);
	x.error_status = true;
	assert_int_equal(xfer_classify(&x, CURLE_OK, false), XO_REFUSED);
	x = reply(&b, 206);
	x.stalled = true; /* cancelled by the loop after silence */
	assert_int_equal(xfer_classify(&x, CURLE_OPERATION_TIMEDOUT, false), XO_RETRY);
	/* A request the stop aborted: done when every byte had come, else its
	 * bytes are kept without counting an attempt. */
	pp_stop_requested = 1;
	x = reply(&b, 206);
	assert_int_equal(xfer_classify(&x, CURLE_ABORTED_BY_CALLBACK, true), XO_DONE);
	assert_int_equal(xfer_classify(&x, CURLE_ABORTED_BY_CALLBACK, false), XO_STOPPED);
	pp_stop_requested = 0;
	assert_int_equal(xfer_classify(&x, CURLE_ABORTED_BY_CALLBACK, false), XO_RETRY);
	for (int o = XO_DONE; o <= XO_STOPPED; o++)
		assert_non_null(xfer_outcome_name((enum xfer_outcome)o));
}

/* A prefix consumer that records what it was fed. */
struct recorder {
	unsigned char *got;
	int64_t len;
	size_t take; /* at most this much per offer */
	int restarts;
	int finished;
	bool verified;
};
static int64_t rec_feed(void *ctx, int64_t off, const void *data, size_t len, struct pp_error *err)
{
	struct recorder *r = ctx;
	(void)err;
	assert_int_equal(off, r->len); /* always in order, never a gap */
	if (len > r->take)
		len = r->take; /* a consumer that is full takes part */
	memcpy(r->got + off, data, len);
	r->len += (int64_t)len;
	return (int64_t)len;
}
static void rec_restart(void *ctx)
{
	struct recorder *r = ctx;
	r->len = 0;
	r->restarts++;
}
static int rec_finish(void *ctx, bool verified, struct pp_error *err)
{
	struct recorder *r = ctx;
	(void)err;
	r->finished++;
	r->verified = verified;
	return 0;
}
static void rec_free(void *ctx)
{
	(void)ctx;
}
static const struct pp_prefix_consumer_ops rec_ops = {
	.name = "recorder",
	.feed = rec_feed,
	.restart = rec_restart,
	.finish = rec_finish,
	.free = rec_free,
};

/* Lands chunk ci as a transfer would: its bytes on disk, its state DONE. */
static void land(struct blob *b, size_t ci, const unsigned char *data)
{
	const struct chunk *c = &b->chunks[ci];
	assert_int_equal(pwrite(b->fd, data + c->off, (size_t)c->len, c->off), c->len);
	b->chunks[ci].received = c->len;
	chunk_set_state(b, ci, CHUNK_DONE);
}

/* Loop turns until the hash workers have nothing left for the blob. */
static void turns(struct pp_engine *e, struct blob *b)
{
	for (int i = 0; i < 64 && b->state == BLOB_RUNNING; i++) {
		int64_t budget = HASH_BUDGET;
		verify_blob(e, b, &budget);
		prefix_quiesce(b);
	}
}

static void test_prefix(void **state)
{
	(void)state;
	char dir[] = "/tmp/prepull-test-engine-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char *state_dir = pp_xasprintf("%s/state", dir);
	char *oci = pp_xasprintf("%s/oci", dir);
	struct pp_options o = opts_with(4, 0);
	o.state_dir = state_dir;
	struct pp_error err = {0};
	struct pp_store *store = NULL;
	char *spec = pp_xasprintf("oci:%s", oci);
	assert_int_equal(pp_store_open(&store, spec, &o, &err), 0);
	free(spec);
	struct pp_engine *e = NULL;
	assert_int_equal(pp_engine_new(&e, &o, store, NULL, &err), 0);

	/* 4 chunks of 64 KiB + 100 bytes of random data, its digest known. */
	const int64_t cs = 64 * 1024, size = 3 * cs + 100;
	unsigned char *data = pp_xmalloc((size_t)size);
	for (int64_t i = 0; i < size; i++)
		data[i] = (unsigned char)rand();
	struct pp_sha256 *h = pp_sha256_new();
	pp_sha256_update(h, data, (size_t)size);
	struct blob *b = new_blob(e, size, cs);
	pp_sha256_final(h, b->digest);
	pp_sha256_free(h);
	b->partial = pp_xasprintf("%s/blob.partial", dir);
	b->journal = pp_xasprintf("%s/blob.journal", dir);
	b->fd = open(b->partial, O_RDWR | O_CREAT, 0600);
	assert_true(b->fd >= 0);
	assert_int_equal(ftruncate(b->fd, size), 0);
	b->state = BLOB_RUNNING;
	struct recorder rec = {.got = pp_xcalloc(1, (size_t)size), .take = SIZE_MAX};
	b->consumers = pp_xcalloc(1, sizeof(*b->consumers));
	b->consumers[0] = (struct consumer_slot){{&rec_ops, &rec}, 0};
	b->n_consumers = 1;

	int64_t budget = HASH_BUDGET;
	/* Chunk 2 first: the prefix cannot pass the gap at 0. */
	land(b, 2, data);
	turns(e, b);
	assert_int_equal(b->hashed, 0);
	assert_int_equal(rec.len, 0);
	/* Chunk 0: the hash (on a worker) covers it, and stops at chunk 1. */
	land(b, 0, data);
	turns(e, b);
	assert_int_equal(b->hashed, cs);
	assert_int_equal(b->hash_chunk, 1);
	assert_int_equal(rec.len, cs);
	/* A transfer at the frontier feeds the consumer as its bytes come;
	 * the hash waits for the chunk to be done ... */
	assert_int_equal(pwrite(b->fd, data + cs, 1000, cs), 1000);
	assert_int_equal(prefix_feed(b, cs, data + cs, 1000, &err), 0);
	b->chunks[1].received = 1000;
	turns(e, b);
	assert_int_equal(b->hashed, cs);
	assert_int_equal(rec.len, cs + 1000);
	/* ... and when it fails after all, the consumer, which cannot go
	 * back, starts over and catches up from the file. */
	prefix_rewind(b, 1);
	b->chunks[1].received = 0;
	assert_int_equal(b->hashed, cs);
	assert_int_equal(rec.restarts, 1);
	assert_int_equal(rec.len, 0);
	rec.take = 1000; /* full: it takes a little per turn, and nothing is lost */
	budget = HASH_BUDGET;
	verify_blob(e, b, &budget);
	assert_int_equal(rec.len, 1000);
	budget = HASH_BUDGET;
	verify_blob(e, b, &budget);
	assert_int_equal(rec.len, 2000);
	rec.take = SIZE_MAX;
	budget = HASH_BUDGET;
	verify_blob(e, b, &budget);
	assert_int_equal(rec.len, cs);
	/* The rest lands: the blob is verified, committed, the consumer told. */
	land(b, 1, data);
	land(b, 3, data);
	turns(e, b);
	assert_int_equal(b->state, BLOB_DONE);
	assert_int_equal(rec.len, size);
	assert_memory_equal(rec.got, data, (size_t)size);
	assert_int_equal(rec.finished, 1);
	assert_true(rec.verified);
	bool have = false;
	assert_int_equal(pp_store_has_blob(store, b->digest, size, &have, &err), 0);
	assert_true(have);
	assert_int_equal(b->n_consumers, 0);

	free(rec.got);
	free(data);
	free_blob(e, b);
	pp_engine_free(e);
	pp_store_free(store);
	char *rm = pp_xasprintf("rm -rf %s", dir);
	assert_int_equal(system(rm), 0);
	free(rm);
	free(state_dir);
	free(oci);
}

/* lanes.c: the median, the slow test, the sliding-window rate, the
 * automatic count's steps. */
static void test_lanes(void **state)
{
	(void)state;
	double v[] = {5, 1, 9, 3};
	assert_true(lanes_median(v, 4) == 4);
	assert_true(lanes_median(v, 3) == 5);
	assert_true(lanes_median(v, 0) == 0);

	/* Under a third of the median, with enough peers; half at the tail. */
	assert_true(lanes_is_slow(1, 9, 3, false));
	assert_false(lanes_is_slow(4, 9, 3, false));
	assert_true(lanes_is_slow(4, 9, 3, true));
	assert_false(lanes_is_slow(1, 9, 2, false)); /* too few peers to judge */
	assert_false(lanes_is_slow(0, 0, 5, false));
	/* Acting must save half a second: 3 MB at 2 MB/s beside 16 MB/s saves
	 * 1.3 s; 0.5 MB saves 0.2 s. */
	assert_true(lanes_worth_acting(2e6, 16e6, 3000000));
	assert_false(lanes_worth_acting(2e6, 16e6, 500000));
	assert_false(lanes_worth_acting(0, 16e6, 3000000)); /* a stall: the stall timeout's */

	/* 1 MB/s for 3 s, sampled every 0.1 s: the window sees 1 MB/s; then
	 * nothing for 1 s: the window sees 0. */
	struct xfer x = {.started = 100};
	for (int i = 1; i <= 30; i++) {
		x.got = i * 100000;
		lanes_sample(&x, 100 + i * 0.1);
	}
	double r = lanes_window_rate(&x, 103);
	assert_true(r > 0.95e6 && r < 1.05e6);
	for (int i = 31; i <= 45; i++)
		lanes_sample(&x, 100 + i * 0.1);
	assert_true(lanes_window_rate(&x, 104.5) < 1);
	/* A young request is measured from its start. */
	struct xfer y = {.started = 10, .got = 500000};
	r = lanes_window_rate(&y, 10.5);
	assert_true(r > 0.99e6 && r < 1.01e6);

	/* Grows (4x, then 2x) while a step gains 10%, takes back the step
	 * that did not. */
	struct lanes_state s = {.limit = 4, .max = 64};
	assert_int_equal(lanes_step(&s, 8e6, -1), 16);
	assert_int_equal(lanes_step(&s, 16e6, -1), 32);
	assert_int_equal(lanes_step(&s, 24e6, -1), 64);
	assert_int_equal(lanes_step(&s, 25e6, -1), 32);
	assert_true(s.settled);
	assert_int_equal(lanes_step(&s, 100e6, -1), 32);
	/* The first step that gains nothing is taken back too. */
	struct lanes_state l = {.limit = 8, .max = 64};
	assert_int_equal(lanes_step(&l, 100e6, -1), 32);
	assert_int_equal(lanes_step(&l, 104e6, -1), 8);
	assert_true(l.settled);
	/* Never past the cap; -j never moves. */
	struct lanes_state c = {.limit = 40, .max = 50};
	assert_int_equal(lanes_step(&c, 1e6, -1), 50);
	assert_int_equal(lanes_step(&c, 2e6, -1), 50);
	assert_true(c.settled);
	struct lanes_state f = {.limit = 16, .max = 16, .fixed = true};
	assert_int_equal(lanes_step(&f, 1e6, -1), 16);
	/* A step that gained, with the CPUs full, is kept and is the last. */
	struct lanes_state u = {.limit = 8, .max = 64};
	assert_int_equal(lanes_step(&u, 100e6, 0.5), 32);
	assert_int_equal(lanes_step(&u, 190e6, 0.95), 32);
	assert_true(u.settled);
	assert_int_equal(lanes_step(&u, 400e6, 0.1), 32);
	/* The first count: 8 near, more for a far registry, at most half the cap. */
	assert_int_equal(lanes_start_count(8, 64, 0), 8);
	assert_int_equal(lanes_start_count(8, 64, 0.002), 8);
	assert_int_equal(lanes_start_count(8, 64, 0.025), 16);
	assert_int_equal(lanes_start_count(8, 64, 0.05), 32);
	assert_int_equal(lanes_start_count(8, 64, 0.1), 32);
	assert_int_equal(lanes_start_count(8, 64, 0.3), 32);
	assert_int_equal(lanes_start_count(8, 20, 0.1), 10);
	assert_int_equal(lanes_start_count(8, 8, 0.1), 8);
	assert_int_equal(lanes_start_count(2, 64, 0.1), 8);

	/* A request carries SPAN_RTTS round trips of data: 16 x 4 MB/s x
	 * 0.1 s = 6.4 MB, 7 chunks of 1 MiB; at most SPAN_MAX; never more
	 * than the pending chunks shared by the lanes; one without a
	 * measurement. */
	assert_int_equal(lanes_span(4e6, 0.1, MiB, 100, 4), 7);
	assert_int_equal(lanes_span(1e9, 0.1, MiB, 1000, 4), SPAN_MAX / MiB);
	assert_int_equal(lanes_span(4e6, 0.1, MiB, 12, 4), 3);
	assert_int_equal(lanes_span(4e6, 0.1, MiB, 3, 4), 1);
	assert_int_equal(lanes_span(0, 0.1, MiB, 100, 4), 1);
	assert_int_equal(lanes_span(4e6, 0, MiB, 100, 4), 1);
	assert_int_equal(lanes_span(16e6, 0.001, 16 * MiB, 100, 4), 1);
}

/* Receives chunk ci as a transfer would, `piece` bytes per write, each
 * handed on to the hash workers; waits for them between pieces when
 * `wait`, so a checkpoint is taken at a known point. */
static void receive(struct pp_engine *e, struct blob *b, size_t ci, const unsigned char *data,
		    int64_t piece, bool wait)
{
	struct chunk *c = &b->chunks[ci];
	c->sha = pp_sha256_new();
	chunk_set_state(b, ci, CHUNK_ACTIVE);
	while (c->received < c->len) {
		int64_t n = c->len - c->received < piece ? c->len - c->received : piece;
		int64_t pos = c->off + c->received;
		assert_int_equal(pwrite(b->fd, data + pos, (size_t)n, pos), n);
		c->received += n;
		chunk_hash_more(e, b, ci);
		if (wait)
			prefix_quiesce(b);
	}
	chunk_set_state(b, ci, CHUNK_DONE);
	chunk_hash_done(e, b, ci);
}

/* Chunk hashes made on the workers from the file are the sha256 of each
 * chunk's bytes, in the journal once final; checkpoints record a prefix
 * the hash had reached, with that prefix's digest; the blob commits. */
static void test_chunk_digests(void **state)
{
	(void)state;
	char dir[] = "/tmp/prepull-test-engine-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char *state_dir = pp_xasprintf("%s/state", dir);
	char *oci = pp_xasprintf("%s/oci", dir);
	struct pp_options o = opts_with(4, 0);
	o.state_dir = state_dir;
	struct pp_error err = {0};
	struct pp_store *store = NULL;
	char *spec = pp_xasprintf("oci:%s", oci);
	assert_int_equal(pp_store_open(&store, spec, &o, &err), 0);
	free(spec);
	struct pp_engine *e = NULL;
	assert_int_equal(pp_engine_new(&e, &o, store, NULL, &err), 0);

	const int64_t cs = 3 * MiB, size = 3 * cs - 4321; /* the last chunk shorter */
	unsigned char *data = pp_xmalloc((size_t)size);
	for (int64_t i = 0; i < size; i++)
		data[i] = (unsigned char)rand();
	struct blob *b = new_blob(e, size, cs);
	pp_sha256_digest(data, (size_t)size, b->digest);
	b->partial = pp_xasprintf("%s/blob.partial", dir);
	b->journal = pp_xasprintf("%s/blob.journal", dir);
	b->fd = open(b->partial, O_RDWR | O_CREAT, 0600);
	assert_true(b->fd >= 0);
	assert_int_equal(ftruncate(b->fd, size), 0);
	assert_int_equal(pp_journal_create(&b->jfd, b->journal, b->digest, size, cs, &err), 0);
	b->state = BLOB_RUNNING;

	/* Chunk 1 in pieces the workers take as they come, checkpointed at
	 * 1 MiB steps; chunk 0 in odd pieces without waiting; chunk 2
	 * ... stays out, so the blob cannot finish yet. */
	receive(e, b, 1, data, 256 * 1024, true);
	receive(e, b, 0, data, 100003, false);
	turns(e, b);
	assert_int_equal(b->digests_pending, 0);
	assert_int_equal(b->hashed, 2 * cs);
	struct pp_journal j = {0};
	assert_int_equal(pp_journal_load(&j, b->journal, &err), 0);
	for (size_t ci = 0; ci < 2; ci++) {
		char want[PP_DIGEST_STR_LEN + 1];
		pp_sha256_digest(data + ci * cs, (size_t)cs, want);
		assert_string_equal(b->chunks[ci].digest, want);
		assert_string_equal(j.chunks[ci].done, want);
	}
	assert_string_equal(j.chunks[2].done, "");
	pp_journal_free(&j);
	/* Chunk 1's checkpoints: the last one before it was done. */
	assert_true(b->chunks[1].checkpoint >= MiB && b->chunks[1].checkpoint < cs);
	char text[4096] = {0};
	int jfd = open(b->journal, O_RDONLY);
	assert_true(read(jfd, text, sizeof(text) - 1) > 0);
	close(jfd);
	char part[PP_DIGEST_STR_LEN + 1];
	pp_sha256_digest(data + cs, MiB, part);
	char *line = pp_xasprintf("part 1 %d %s", MiB, part);
	assert_non_null(strstr(text, line));
	free(line);

	/* A checkpoint at a stop hashes what arrived since, on this thread. */
	struct chunk *c = &b->chunks[2];
	c->sha = pp_sha256_new();
	chunk_set_state(b, 2, CHUNK_ACTIVE);
	assert_int_equal(pwrite(b->fd, data + c->off, 5000, c->off), 5000);
	c->received = 5000;
	partial_checkpoint(e, b, 2);
	assert_int_equal(c->checkpoint, 5000);
	/* The rest of it: the blob is verified and committed. */
	int64_t pos = c->off + c->received;
	assert_int_equal(pwrite(b->fd, data + pos, (size_t)(size - pos), pos), size - pos);
	c->received = c->len;
	chunk_set_state(b, 2, CHUNK_DONE);
	chunk_hash_done(e, b, 2);
	turns(e, b);
	assert_int_equal(b->state, BLOB_DONE);
	bool have = false;
	assert_int_equal(pp_store_has_blob(store, b->digest, size, &have, &err), 0);
	assert_true(have);

	free(data);
	free_blob(e, b);
	pp_engine_free(e);
	pp_store_free(store);
	char *rm = pp_xasprintf("rm -rf %s", dir);
	assert_int_equal(system(rm), 0);
	free(rm);
	free(state_dir);
	free(oci);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pick_chunk_size), cmocka_unit_test(test_plan_chunks),
		cmocka_unit_test(test_state_functions), cmocka_unit_test(test_classify),
		cmocka_unit_test(test_prefix),          cmocka_unit_test(test_lanes),
		cmocka_unit_test(test_chunk_digests),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
