/* Racing the chunk at the hash frontier (lanes.c decides when): a second
 * request for the remaining range of a slow transfer's chunk, on another
 * connection.  The racer keeps its bytes in memory, so a file range never
 * has two writers; the first of the two to finish wins and the other is
 * cancelled. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine_int.h"
#include "prepull/http.h"
#include "prepull/log.h"

/* A racer keeps its bytes in memory: the chunk's own transfer may still be
 * writing the same range, and two writers never share a file range.  They
 * reach the file only once that transfer is gone (race_won). */
static size_t race_write_cb(char *data, size_t size, size_t n, void *userdata)
{
	struct xfer *r = userdata;
	size_t len = size * n;
	int64_t want = r->race_end - r->race_pos + 1;
	if (!r->checked) {
		int64_t s, en, total;
		struct pp_error err = {0};
		r->checked = true;
		r->race_bad =
			r->resp.status != 206 ||
			pp_parse_content_range(r->resp.content_range, &s, &en, &total, &err) < 0 ||
			s != r->race_pos || en != r->race_end ||
			(total >= 0 && total != r->b->size);
		if (r->race_bad)
			return 0;
		r->race_buf = malloc((size_t)want);
		if (!r->race_buf)
			return 0;
	}
	if ((int64_t)len > want - r->race_got)
		return 0;
	memcpy(r->race_buf + r->race_got, data, len);
	r->race_got += (int64_t)len;
	r->got += (int64_t)len;
	r->last_byte = pp_now();
	return len;
}

int xfer_race(struct pp_engine *e, struct xfer *x, struct pp_error *err)
{
	struct blob *b = x->b;
	struct chunk *c = &b->chunks[x->chunk];
	int64_t start = c->off + c->received, end = c->off + c->len - 1;
	struct xfer *r = xfer_new(e, b, x->chunk, start, end, err);
	if (!r)
		return -1;
	r->race_of = x;
	r->race_pos = start;
	r->race_end = end;
	x->racer = r;
	e->lanes.racers++;
	curl_easy_setopt(r->h, CURLOPT_WRITEFUNCTION, race_write_cb);
	curl_easy_setopt(r->h, CURLOPT_WRITEDATA, r);
	/* Not CURLOPT_FRESH_CONNECT: the slow connection is busy, so the racer
	 * lands elsewhere anyway, and an idle connection in the pool has
	 * proven itself (slow ones never go back there: lanes.c forbids their
	 * reuse), while a new one is a new draw of the edges.  With half the
	 * lanes slow (test_lanes_slow) fresh racers were slow as often. */
	curl_easy_setopt(x->h, CURLOPT_FORBID_REUSE, 1L);
	curl_multi_add_handle(e->multi, r->h);
	pp_debug("blob %s: chunk %zu: racing bytes %lld-%lld on another connection",
		 pp_short_digest(b->digest), x->chunk, (long long)start, (long long)end);
	return 0;
}

/* A racer brought its whole range before the transfer it raced: that one
 * is stopped (what it wrote stays), and the racer's bytes from where it
 * stopped go to the file, the chunk hash and the prefix, as write_cb
 * would have put them.  The racer's bytes the file had already are the
 * race's extra cost. */
static void race_won(struct pp_engine *e, struct xfer *r)
{
	struct blob *b = r->b;
	struct chunk *c = &b->chunks[r->chunk];
	struct xfer *x = r->race_of;
	x->racer = NULL;
	r->race_of = NULL;
	e->lanes.racers--;
	e->lanes.races_won++;
	xfer_free(e, x);
	xfer_detach(e, r);
	int64_t pos = c->off + c->received;
	int64_t skip = pos - r->race_pos, len = r->race_end + 1 - pos;
	e->lanes.extra += skip;
	pp_debug("blob %s: chunk %zu: the racer won; %lld of its bytes were on disk already",
		 pp_short_digest(b->digest), r->chunk, (long long)skip);
	const unsigned char *data = r->race_buf + skip;
	for (int64_t done = 0; done < len;) {
		ssize_t w = pwrite(b->fd, data + done, (size_t)(len - done), pos + done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			struct pp_error err = {0};
			pp_error_errno(&err, "write %s", b->partial);
			engine_fail_blob(e, b, &err);
			return;
		}
		done += w;
	}
	if (b->n_consumers) {
		struct pp_error err = {0};
		if (prefix_feed(b, pos, data, (size_t)len, &err) < 0) {
			engine_fail_blob(e, b, &err);
			return;
		}
	}
	c->received += len;
	b->fetched += len;
	e->fetched += len;
	chunk_hash_more(e, b, r->chunk); /* the workers hash them from the file */
	chunk_done(e, r);
}

/* When the transfer r races finished the chunk itself and went on to the
 * next chunk of its span, the race is lost: r is dropped (what it brought
 * is extra) and true returned.  Taking r for the winner would stop the
 * raced transfer in the middle of a chunk it holds ACTIVE, and nothing
 * would fetch the rest of that chunk: a benchmark run at 50 ms waited
 * forever on one. */
bool xfer_race_moot(struct pp_engine *e, struct xfer *r)
{
	if (!r->race_of || r->race_of->chunk == r->chunk)
		return false;
	pp_debug("blob %s: chunk %zu: the first request finished it first; dropping the racer",
		 pp_short_digest(r->b->digest), r->chunk);
	curl_easy_setopt(r->h, CURLOPT_FORBID_REUSE, 1L);
	e->lanes.extra += r->got;
	xfer_free(e, r);
	return true;
}

/* A racer is over: it won, or it is dropped and the transfer it raced
 * goes on alone. */
void xfer_race_finish(struct pp_engine *e, struct xfer *r, CURLcode rc)
{
	if (xfer_race_moot(e, r))
		return;
	bool won = rc == CURLE_OK && !r->race_bad && !r->stalled && r->race_buf &&
		   r->race_got == r->race_end - r->race_pos + 1;
	if (won) {
		race_won(e, r);
		xfer_destroy(r);
		return;
	}
	pp_debug("blob %s: chunk %zu: the racer failed (curl %d, HTTP %ld); the first request "
		 "goes on",
		 pp_short_digest(r->b->digest), r->chunk, (int)rc, r->resp.status);
	e->lanes.extra += r->got;
	xfer_free(e, r);
}
