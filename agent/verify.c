/* The in-order prefix of a blob: the whole-blob sha256 (the only digest
 * the registry vouches for) follows the contiguous run of done chunks,
 * read back from the partial file by a hash worker; the prefix consumers
 * follow the landed bytes, fed from a transfer's buffer at the frontier or
 * read back from the partial file when behind.  A chunk's own sha256 is a
 * worker's too: it follows the chunk's bytes a slice behind and is final
 * shortly after the chunk is.  When the last byte is hashed the blob is
 * committed, or repaired chunk by chunk when its digest does not match. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "engine_int.h"
#include "flusher.h"
#include "hashpool.h"
#include "prepull/journal.h"
#include "prepull/log.h"

static void wake_loop(void *ctx)
{
	curl_multi_wakeup(ctx);
}

/* The hash workers, started with the first job. */
static struct hashpool *pool(struct pp_engine *e)
{
	if (!e->pool)
		e->pool = hashpool_new(hashpool_default_threads(), wake_loop, e->multi);
	return e->pool;
}

/* Consumers fed past `pos` start over: the bytes from there come again,
 * and a consumer can only take them again from the start. */
static void consumers_back_to(struct blob *b, int64_t pos)
{
	for (size_t i = 0; i < b->n_consumers; i++) {
		struct consumer_slot *s = &b->consumers[i];
		if (s->pos <= pos)
			continue;
		pp_debug("blob %s: %s starts over (the prefix went back to %lld)",
			 pp_short_digest(b->digest), s->c.ops->name, (long long)pos);
		s->c.ops->restart(s->c.ctx);
		s->pos = 0;
	}
}

void prefix_restart(struct blob *b)
{
	b->hashed = 0;
	b->hash_chunk = 0;
	b->digests_pending = 0;
	pp_sha256_free(b->hash); /* waits for a worker that has it */
	pp_sha256_free(b->frontier);
	b->hash = pp_sha256_new();
	b->frontier = NULL;
	consumers_back_to(b, 0);
}

void prefix_rewind(struct blob *b, size_t ci)
{
	consumers_back_to(b, b->chunks[ci].off);
}

void prefix_quiesce(struct blob *b)
{
	if (b->hash)
		pp_sha256_wait(b->hash);
	if (b->check)
		pp_sha256_wait(b->check);
	for (size_t i = 0; i < b->n_chunks; i++)
		if (b->chunks[i].sha)
			pp_sha256_wait(b->chunks[i].sha);
}

/* The end of the bytes on disk in order from byte 0: done chunks, then
 * what the first chunk not done has received. */
static int64_t landed(const struct blob *b)
{
	size_t i = b->hash_chunk;
	while (i < b->n_chunks && b->chunks[i].state == CHUNK_DONE)
		i++;
	return i < b->n_chunks ? b->chunks[i].off + b->chunks[i].received : b->size;
}

/* Offers a consumer the bytes at its position; it takes some or all.
 * Returns the bytes taken, or -1 with err set (the blob fails). */
static int64_t offer(struct blob *b, struct consumer_slot *s, const void *data, size_t len,
		     struct pp_error *err)
{
	int64_t taken = s->c.ops->feed(s->c.ctx, s->pos, data, len, err);
	if (taken < 0) {
		pp_error_wrap(err, "blob %s: %s", pp_short_digest(b->digest), s->c.ops->name);
		return -1;
	}
	s->pos += taken;
	return taken;
}

int prefix_feed(struct blob *b, int64_t pos, const void *data, size_t len, struct pp_error *err)
{
	for (size_t i = 0; i < b->n_consumers; i++) {
		struct consumer_slot *s = &b->consumers[i];
		/* One that is behind catches up from the file; one that takes
		 * less falls behind. */
		if (s->pos == pos && offer(b, s, data, len, err) < 0)
			return -1;
	}
	return 0;
}

/* Offers consumers that are behind the landed bytes (they started over,
 * took less than they were offered, or bytes landed in order all at once
 * when a chunk before them finished) what they miss, read back from the
 * file, within the budget.  Returns 1 when it stopped for the budget. */
static int consumers_catch_up(struct pp_engine *e, struct blob *b, int64_t *budget,
			      struct pp_error *err)
{
	int64_t land = b->n_consumers ? landed(b) : 0;
	for (size_t i = 0; i < b->n_consumers; i++) {
		struct consumer_slot *s = &b->consumers[i];
		while (s->pos < land) {
			if (*budget <= 0)
				return 1;
			int64_t end = land;
			if (s->c.ops->wants) {
				int64_t want = s->c.ops->wants(s->c.ctx);
				if (want <= 0)
					break;
				if (end - s->pos > want)
					end = s->pos + want;
			}
			ssize_t n = partial_read(e, b, s->pos, end, err);
			if (n < 0)
				return -1;
			int64_t taken = offer(b, s, e->hashbuf, (size_t)n, err);
			if (taken < 0)
				return -1;
			*budget -= n;
			if (taken < n)
				break; /* full for now: the next turn offers again */
		}
	}
	return 0;
}

/* A blob that stops or fails keeps the digests of its done chunks in the
 * journal, so the next run need not fetch them again: what the workers
 * have not hashed yet is hashed here. */
static void keep_digests(struct pp_engine *e, struct blob *b)
{
	for (size_t i = 0; i < b->n_chunks && b->digests_pending > 0; i++) {
		struct chunk *c = &b->chunks[i];
		struct pp_error err = {0};
		if (!c->digest_pending || !c->sha)
			continue;
		chunk_hash_settle(e, b, i);
		c->digest_pending = false;
		b->digests_pending--;
		if (pp_sha256_error(c->sha) || pp_sha256_fed(c->sha) != c->len)
			continue; /* unread: the chunk comes again */
		pp_sha256_final(c->sha, c->digest);
		if (pp_journal_append_done(b->jfd, b->journal, i, c->digest, &err) < 0) {
			pp_warn("blob %s: %s", pp_short_digest(b->digest), err.msg);
			return;
		}
	}
}

void prefix_finish(struct pp_engine *e, struct blob *b, bool verified)
{
	if (!verified && b->jfd >= 0 && b->fd >= 0)
		keep_digests(e, b);
	for (size_t i = 0; i < b->n_consumers; i++) {
		struct consumer_slot *s = &b->consumers[i];
		struct pp_error err = {0};
		if (s->c.ops->finish(s->c.ctx, verified, &err) < 0 && verified &&
		    b->state == BLOB_RUNNING) {
			/* The blob is in the store; what was made of it is not. */
			pp_error_wrap(&err, "blob %s: %s", pp_short_digest(b->digest),
				      s->c.ops->name);
			b->err = err;
			blob_set_state(b, BLOB_FAILED);
		}
		s->c.ops->free(s->c.ctx);
	}
	free(b->consumers);
	b->consumers = NULL;
	b->n_consumers = 0;
}

/* A read error a worker left in a hash: the blob fails. */
static int hash_error(const struct blob *b, const struct pp_sha256 *h, struct pp_error *err)
{
	int error = h ? pp_sha256_error(h) : 0;
	if (!error)
		return 0;
	errno = error;
	return pp_error_errno(err, "read %s", b->partial);
}

/* Hands the next done chunk to a worker for the whole-blob hash, once the
 * last one is through.  A chunk done in an earlier run is hashed on its
 * own too, and if its bytes no longer match the journal it is fetched
 * again.  The hash enters no chunk before it is done, so nothing it has
 * taken is written again unless it starts over. */
static int advance_hash(struct pp_engine *e, struct blob *b, struct pp_error *err)
{
	if (pp_sha256_busy(b->hash))
		return 0; /* the worker wakes the loop when it is through */
	if (hash_error(b, b->hash, err) < 0)
		return -1;
	b->hashed = pp_sha256_fed(b->hash);
	while (b->hash_chunk < b->n_chunks) {
		struct chunk *c = &b->chunks[b->hash_chunk];
		if (c->state != CHUNK_DONE)
			break; /* never past a chunk whose transfer has not finished */
		if (b->repairing && c->digest_pending)
			break; /* whether it came back different decides what is fetched next */
		int64_t end = c->off + c->len;
		if (c->verify && !c->sha) {
			/* The blob hash must not take bytes that may turn out bad. */
			c->sha = pp_sha256_new();
			c->resume_hash = pp_sha256_new();
			pp_sha256_copy(c->resume_hash, b->hash);
		}
		if (b->hashed < end) {
			/* Done chunks after it go in the same job, so the blob hash
			 * takes what it can before the chunk hashes (which only a
			 * repair waits for) get the worker. */
			for (size_t k = b->hash_chunk + 1;
			     !c->verify && k < b->n_chunks && end - b->hashed < HASH_JOB_MAX; k++) {
				const struct chunk *n = &b->chunks[k];
				if (n->state != CHUNK_DONE || n->verify ||
				    (b->repairing && n->digest_pending))
					break;
				end = n->off + n->len;
			}
			hashpool_post(pool(e), b->fd, b->hashed, end, b->hash,
				      c->verify ? c->sha : NULL, true);
			return 0;
		}
		if (c->verify) {
			char got[PP_DIGEST_STR_LEN + 1];
			if (hash_error(b, c->sha, err) < 0)
				return -1;
			pp_sha256_final(c->sha, got);
			pp_sha256_free(c->sha);
			c->sha = NULL;
			c->verify = false;
			if (strcmp(got, c->digest) != 0) {
				pp_warn("blob %s: chunk %zu on disk does not match its journal; "
					"fetching it again",
					pp_short_digest(b->digest), b->hash_chunk);
				pp_sha256_copy(b->hash, c->resume_hash);
				b->hashed = c->off;
				consumers_back_to(b, b->hashed);
				b->resumed -= c->len;
				e->resumed -= c->len;
				chunk_set_state(b, b->hash_chunk, CHUNK_PENDING);
				c->received = 0;
			}
			pp_sha256_free(c->resume_hash);
			c->resume_hash = NULL;
			if (c->state != CHUNK_DONE)
				break;
		}
		b->hash_chunk++;
	}
	return 0;
}

void chunk_hash_more(struct pp_engine *e, struct blob *b, size_t ci)
{
	struct chunk *c = &b->chunks[ci];
	if (!c->sha || pp_sha256_busy(c->sha))
		return;
	int64_t fed = pp_sha256_fed(c->sha);
	if (fed - c->checkpoint >= partial_checkpoint_every(b) && fed < c->len)
		partial_checkpoint_hashed(e, b, ci);
	/* A slice at a time, so a blob hash that is due gets the next worker. */
	int64_t to = c->received - fed > HASH_SLICE ? fed + HASH_SLICE : c->received;
	if (to - fed == HASH_SLICE || (c->received == c->len && fed < c->len))
		hashpool_post(pool(e), b->fd, c->off + fed, c->off + to, c->sha, NULL, false);
}

/* A done chunk's hash is through: its digest goes into the journal, and
 * in a repair pass is compared with the last fetch's.  Returns -1 when the
 * blob failed. */
static int chunk_final(struct pp_engine *e, struct blob *b, size_t ci)
{
	struct chunk *c = &b->chunks[ci];
	struct pp_error err = {0};
	char got[PP_DIGEST_STR_LEN + 1];
	if (hash_error(b, c->sha, &err) < 0) {
		engine_fail_blob(e, b, &err);
		return -1;
	}
	c->digest_pending = false;
	b->digests_pending--;
	pp_sha256_final(c->sha, got);
	pp_sha256_free(c->sha);
	c->sha = NULL;
	/* sources.c: which host sent it; when it came back different, whom to blame */
	sources_chunk_final(e, b, ci, b->repairing && strcmp(got, c->digest) != 0);
	if (b->repairing && strcmp(got, c->digest) != 0) {
		pp_info("blob %s: chunk %zu came back different; replaced it",
			pp_short_digest(b->digest), ci);
		b->changed++;
		if (ci + 1 > b->check_from)
			b->check_from = ci + 1;
	}
	memcpy(c->digest, got, sizeof(c->digest));
	if (pp_journal_append_done(b->jfd, b->journal, ci, c->digest, &err) < 0) {
		engine_fail_blob(e, b, &err);
		return -1;
	}
	return 0;
}

/* Moves a done chunk's hash along; finalises it once it is through. */
static int chunk_digest_step(struct pp_engine *e, struct blob *b, size_t ci)
{
	struct chunk *c = &b->chunks[ci];
	if (pp_sha256_busy(c->sha))
		return 0;
	if (pp_sha256_fed(c->sha) < c->len && !pp_sha256_error(c->sha)) {
		chunk_hash_more(e, b, ci);
		return 0;
	}
	return chunk_final(e, b, ci);
}

void chunk_hash_done_later(struct blob *b, size_t ci)
{
	struct chunk *c = &b->chunks[ci];
	if (!c->sha)
		c->sha = pp_sha256_new(); /* an empty blob's one chunk */
	c->digest_pending = true;
	b->digests_pending++;
	b->chunk_done_at = pp_now();
}

void chunk_hash_done(struct pp_engine *e, struct blob *b, size_t ci)
{
	chunk_hash_done_later(b, ci);
	chunk_digest_step(e, b, ci);
}

static int chunk_digests(struct pp_engine *e, struct blob *b)
{
	size_t left = b->digests_pending;
	for (size_t i = 0; i < b->n_chunks && left > 0; i++) {
		if (!b->chunks[i].digest_pending || !b->chunks[i].sha)
			continue;
		left--;
		if (chunk_digest_step(e, b, i) < 0)
			return -1;
	}
	return 0;
}

void chunk_hash_settle(struct pp_engine *e, struct blob *b, size_t ci)
{
	struct chunk *c = &b->chunks[ci];
	struct pp_error err = {0};
	if (!c->sha)
		return;
	pp_sha256_wait(c->sha);
	for (int64_t pos = c->off + pp_sha256_fed(c->sha); pos < c->off + c->received;) {
		ssize_t n = partial_read(e, b, pos, c->off + c->received, &err);
		if (n < 0) {
			pp_warn("blob %s: %s", pp_short_digest(b->digest), err.msg);
			return; /* the checkpoint takes what is hashed */
		}
		pp_sha256_update(c->sha, e->hashbuf, (size_t)n);
		pos += n;
	}
}

/* Where the blob's bytes came from, for an error: the registry URL, and
 * the host a redirect sent us to (never its signed query). */
static void name_source(const struct blob *b, char *buf, size_t n)
{
	char *host = NULL;
	CURLU *u = b->cdn_url ? curl_url() : NULL;
	if (u && curl_url_set(u, CURLUPART_URL, b->cdn_url, 0) == CURLUE_OK)
		curl_url_get(u, CURLUPART_HOST, &host, 0);
	if (host)
		snprintf(buf, n, "%s (redirected to %s)", b->url, host);
	else
		snprintf(buf, n, "%s", b->url);
	curl_free(host);
	curl_url_cleanup(u);
}

/* The whole-blob hash did not match.  Every chunk's sha256 is known, so a
 * repair pass fetches the chunks again in order, a few at a time, and
 * replaces each in place: one that comes back with a different sha256 was
 * (likely) the bad one, and the file is tried as it is as soon as the hash
 * has passed it.  Fails after REPAIR_PASSES, or at once when a whole pass
 * brought back exactly the same bytes. */
static void repair_blob(struct pp_engine *e, struct blob *b, const char *got)
{
	struct pp_error err = {0};
	char source[1024];
	name_source(b, source, sizeof(source));
	sources_name_dropped(e, b, source, sizeof(source)); /* sources.c: who was blamed */
	/* A mirror's bytes are only its word: the next host fetches the
	 * chunks again to compare, with repair passes of its own. */
	/* sources.c: with several sources in play the pass compares them. */
	if (sources_single(e, b) && engine_blame_host(e, b, got)) {
		b->repairing = false;
		b->repairs = 0;
	}
	if (b->repairing && b->changed == 0) {
		pp_error_set(&err, PP_EDIGEST,
			     "blob %s from %s: content hashes to %s; every chunk fetched again "
			     "came back the same, so the source serves these bytes",
			     b->digest, source, got);
		engine_discard_blob(e, b, &err); /* these bytes are provably not the blob */
		return;
	}
	if (b->repairs >= REPAIR_PASSES) {
		pp_error_set(&err, PP_EDIGEST,
			     "blob %s from %s: content hashes to %s after %d repair passes",
			     b->digest, source, got, b->repairs);
		engine_discard_blob(e, b, &err);
		return;
	}
	b->repairs++;
	b->repairing = true;
	b->changed = 0;
	b->check_from = 0;
	pp_warn("blob %s: content hashes to %s; fetching its chunks again to find the bad ones "
		"(pass %d of %d)",
		pp_short_digest(b->digest), pp_short_digest(got), b->repairs, REPAIR_PASSES);
	for (size_t i = 0; i < b->n_chunks; i++) {
		struct chunk *c = &b->chunks[i];
		/* `digest` stays: what the chunk's bytes hashed to last time. */
		chunk_set_state(b, i, CHUNK_PENDING);
		c->received = c->checkpoint = 0;
		c->attempts = 0;
		c->not_before = 0;
		c->verify = false;
		c->digest_pending = false;
		pp_sha256_free(c->sha);
		c->sha = NULL;
	}
	/* Progress shows the pass as the blob coming again from zero. */
	e->resumed -= b->resumed;
	b->resumed = 0;
	e->redone += b->fetched - b->redone;
	b->redone = b->fetched;
	b->first_pending = 0;
	prefix_restart(b);
	/* The pass starts from nothing kept: its chunks are progress again. */
	b->kept_max = 0;
	b->progress_at = pp_now();
	/* The redirect target may be what served the bad bytes: ask the
	 * registry again. */
	free(b->cdn_url);
	b->cdn_url = NULL;
}

static void finish_blob(struct pp_engine *e, struct blob *b)
{
	char got[PP_DIGEST_STR_LEN + 1];
	pp_sha256_final(b->hash, got);
	if (b->chunk_done_at > 0)
		pp_debug("blob %s: hashed %.3f s after its last byte came",
			 pp_short_digest(b->digest), pp_now() - b->chunk_done_at);
	if (strcmp(got, b->digest) == 0) {
		/* Verified whole: the chunk digests still coming are not needed. */
		if (b->digests_pending > 0 && e->pool)
			hashpool_cancel(e->pool, b->fd);
		partial_commit(e, b);
		return;
	}
	/* A repair compares every chunk with its digest: all of them first. */
	for (size_t i = 0; i < b->n_chunks && b->digests_pending > 0; i++) {
		if (!b->chunks[i].digest_pending || !b->chunks[i].sha)
			continue;
		chunk_hash_settle(e, b, i);
		if (chunk_final(e, b, i) < 0)
			return; /* the blob failed */
	}
	repair_blob(e, b, got);
}

/* A repaired chunk came back different and the hash has passed it: with
 * none of the blob's transfers writing (none start past the replaced chunk
 * meanwhile), hash the rest of the file as it is now. */
static void start_check(struct blob *b)
{
	b->check = pp_sha256_new();
	pp_sha256_copy(b->check, b->hash);
	b->check_pos = b->hashed;
	b->check_from = 0;
	pp_debug("blob %s: trying the file with the replaced chunks, from byte %lld",
		 pp_short_digest(b->digest), (long long)b->check_pos);
}

/* Hands the rest of the file to a worker for `check`; once it is through,
 * commits the blob or lets the repair pass go on.  Returns -1 on a read
 * error. */
static int advance_check(struct pp_engine *e, struct blob *b, struct pp_error *err)
{
	if (pp_sha256_busy(b->check))
		return 0;
	if (hash_error(b, b->check, err) < 0)
		return -1;
	b->check_pos = pp_sha256_fed(b->check);
	if (b->check_pos < b->size) {
		hashpool_post(pool(e), b->fd, b->check_pos, b->size, b->check, NULL, true);
		return 0;
	}
	char got[PP_DIGEST_STR_LEN + 1];
	pp_sha256_final(b->check, got);
	pp_sha256_free(b->check);
	b->check = NULL;
	if (strcmp(got, b->digest) == 0) {
		pp_info("blob %s: repaired; %zu chunk(s) came back different",
			pp_short_digest(b->digest), b->changed);
		partial_commit(e, b);
	}
	return 0;
}

/* Moves a blob's hashes along and commits the blob when it is complete.
 * Returns true when the budget ran out with bytes left to read back. */
bool verify_blob(struct pp_engine *e, struct blob *b, int64_t *budget)
{
	struct pp_error err = {0};
	if (b->digests_pending > 0 && chunk_digests(e, b) < 0)
		return false; /* the blob failed */
	if (b->state != BLOB_RUNNING)
		return false;
	int r = consumers_catch_up(e, b, budget, &err);
	if (r == 0)
		r = b->check ? advance_check(e, b, &err) : advance_hash(e, b, &err);
	if (r < 0)
		engine_fail_blob(e, b, &err);
	else if (r == 0 && b->state == BLOB_RUNNING && !b->check && !pp_sha256_busy(b->hash)) {
		if (b->hash_chunk == b->n_chunks)
			finish_blob(e, b);
		else if (b->check_from > 0 && b->hash_chunk >= b->check_from && b->active == 0 &&
			 b->digests_pending == 0)
			start_check(b);
	}
	return r > 0;
}

void verify_report_cpu(struct pp_engine *e)
{
	double workers = e->pool ? hashpool_cpu_seconds(e->pool) : 0;
	double gb = (double)e->fetched / 1e9;
	int64_t hashed = e->pool ? hashpool_bytes(e->pool) : 0;
	pp_debug("cpu: loop thread %.2f s, hash workers %.2f s (%.2f GB hashed); "
		 "per GB fetched: loop %.3f s, workers %.3f s",
		 e->loop_cpu, workers, (double)hashed / 1e9, gb > 0 ? e->loop_cpu / gb : 0,
		 gb > 0 ? workers / gb : 0);
	int flushes;
	double flush_secs;
	flusher_stats(e->flusher, &flushes, &flush_secs);
	if (flushes > 0)
		pp_debug("flush: %d early flushes of partial files, %.2f s waiting on the disk "
			 "(on the flush thread)",
			 flushes, flush_secs);
}
