/* The in-order prefix of a blob: the whole-blob sha256 (the only digest
 * the registry vouches for) and the prefix consumers follow it as the
 * contiguous run of landed chunks grows, fed from a transfer's buffer at
 * the frontier or read back from the partial file when behind.  When the
 * last byte is hashed the blob is committed, or repaired chunk by chunk
 * when its digest does not match. */
#include <string.h>
#include <unistd.h>

#include "engine_int.h"
#include "prepull/log.h"

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
	pp_sha256_free(b->hash);
	pp_sha256_free(b->frontier);
	b->hash = pp_sha256_new();
	b->frontier = pp_sha256_new();
	consumers_back_to(b, 0);
}

void prefix_rewind(struct blob *b)
{
	pp_sha256_copy(b->hash, b->frontier);
	b->hashed = b->chunks[b->hash_chunk].off;
	consumers_back_to(b, b->hashed);
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

int prefix_feed(struct blob *b, const void *data, size_t len, struct pp_error *err)
{
	pp_sha256_update(b->hash, data, len);
	for (size_t i = 0; i < b->n_consumers; i++) {
		struct consumer_slot *s = &b->consumers[i];
		/* One that is behind catches up from the file; one that takes
		 * less falls behind. */
		if (s->pos == b->hashed && offer(b, s, data, len, err) < 0)
			return -1;
	}
	b->hashed += (int64_t)len;
	return 0;
}

/* Offers consumers that are behind the hash (they started over, or took
 * less than they were offered) what they miss, read back from the file,
 * within the budget.  Returns 1 when it stopped for the budget. */
static int consumers_catch_up(struct pp_engine *e, struct blob *b, int64_t *budget,
			      struct pp_error *err)
{
	for (size_t i = 0; i < b->n_consumers; i++) {
		struct consumer_slot *s = &b->consumers[i];
		while (s->pos < b->hashed) {
			if (*budget <= 0)
				return 1;
			int64_t end = b->hashed;
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

void prefix_finish(struct pp_engine *e, struct blob *b, bool verified)
{
	(void)e;
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

/* Extends the whole-blob hash over bytes already on disk: done chunks and
 * the received prefix of the chunk at the frontier; the transfer at the
 * frontier then feeds the hash directly as its bytes arrive.  A chunk done
 * in an earlier run is hashed on its own too, and if its bytes no longer
 * match the journal it is fetched again.  At most *budget bytes are read;
 * returns 1 when it stopped for the budget. */
static int advance_hash(struct pp_engine *e, struct blob *b, int64_t *budget, struct pp_error *err)
{
	while (b->hash_chunk < b->n_chunks) {
		struct chunk *c = &b->chunks[b->hash_chunk];
		int64_t end = c->off + (c->state == CHUNK_DONE ? c->len : c->received);
		if (c->verify && !c->sha) {
			/* The blob hash must not take bytes that may turn out bad. */
			c->sha = pp_sha256_new();
			c->resume_hash = pp_sha256_new();
			pp_sha256_copy(c->resume_hash, b->hash);
		}
		while (b->hashed < end) {
			if (*budget <= 0)
				return 1;
			ssize_t n = partial_read(e, b, b->hashed, end, err);
			if (n < 0)
				return -1;
			if (c->verify)
				pp_sha256_update(c->sha, e->hashbuf, (size_t)n);
			if (prefix_feed(b, e->hashbuf, (size_t)n, err) < 0)
				return -1;
			*budget -= n;
		}
		if (c->state != CHUNK_DONE)
			break; /* never past a chunk whose transfer has not finished */
		if (c->verify) {
			char got[PP_DIGEST_STR_LEN + 1];
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
		pp_sha256_copy(b->frontier, b->hash);
	}
	return 0;
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
	if (sources_single(e, b) && engine_blame_host(b, got)) {
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
	if (strcmp(got, b->digest) != 0)
		repair_blob(e, b, got);
	else
		partial_commit(e, b);
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

/* Hashes the file into `check`, within the budget.  Returns 1 when it
 * stopped for the budget, 0 when the check is over (the blob is committed
 * or the repair pass goes on), -1 on a read error. */
static int advance_check(struct pp_engine *e, struct blob *b, int64_t *budget, struct pp_error *err)
{
	while (b->check_pos < b->size) {
		if (*budget <= 0)
			return 1;
		ssize_t n = partial_read(e, b, b->check_pos, b->size, err);
		if (n < 0)
			return -1;
		pp_sha256_update(b->check, e->hashbuf, (size_t)n);
		b->check_pos += n;
		*budget -= n;
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

/* Moves a blob's hash along and commits the blob when it is complete.
 * Returns 1 when the budget ran out with work left. */
bool verify_blob(struct pp_engine *e, struct blob *b, int64_t *budget)
{
	struct pp_error err = {0};
	int r = consumers_catch_up(e, b, budget, &err);
	if (r == 0)
		r = b->check ? advance_check(e, b, budget, &err) : advance_hash(e, b, budget, &err);
	if (r < 0)
		engine_fail_blob(e, b, &err);
	else if (r == 0 && b->state == BLOB_RUNNING && !b->check) {
		if (b->hash_chunk == b->n_chunks)
			finish_blob(e, b);
		else if (b->check_from > 0 && b->hash_chunk >= b->check_from && b->active == 0)
			start_check(b);
	}
	return r > 0 || b->check != NULL;
}
