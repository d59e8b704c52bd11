/* One range request: start it, take its bytes as they come (written at
 * their offset, hashed per chunk, fed to the in-order prefix when they are
 * at its frontier), judge the reply once it is over, and act on that one
 * outcome: done, retry, renew credentials, go back to the registry, or
 * fail the blob. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "engine_int.h"
#include "prepull/hosts.h"
#include "prepull/journal.h"
#include "prepull/log.h"
#include "prepull/options.h"
#include "prepull/registry.h"
#include "prepull/stop.h"

void engine_add_origin(struct blob *b, struct pp_registry *reg, const char *repo)
{
	if (b->reg == reg && strcmp(b->repo, repo) == 0)
		return;
	for (size_t i = 0; i < b->n_origins; i++)
		if (b->origins[i].reg == reg && strcmp(b->origins[i].repo, repo) == 0)
			return;
	b->origins = pp_xrealloc(b->origins, (b->n_origins + 1) * sizeof(*b->origins));
	b->origins[b->n_origins++] = (struct blob_origin){reg, pp_xstrdup(repo)};
}

struct pp_registry *blob_host(const struct blob *b, size_t src, const char **repo)
{
	for (size_t o = 0; o <= b->n_origins; o++) {
		struct pp_registry *reg = o == 0 ? b->reg : b->origins[o - 1].reg;
		*repo = o == 0 ? b->repo : b->origins[o - 1].repo;
		struct pp_registry *h;
		for (size_t i = 0; (h = pp_registry_source(reg, PP_CAP_PULL, i)); i++)
			if (src-- == 0)
				return h;
	}
	return NULL;
}

bool engine_blame_host(struct pp_engine *e, struct blob *b, const char *got)
{
	const char *repo;
	struct pp_registry *h = blob_host(b, b->src, &repo);
	struct pp_registry *next = blob_host(b, b->src + 1, &repo);
	if (!h || !next || !pp_registry_is_mirror(h))
		return false;
	pp_warn("blob %s: content hashes to %s; mirror %s served it, so it is dropped for this "
		"blob and the chunks are checked against %s",
		pp_short_digest(b->digest), pp_short_digest(got), pp_registry_domain(h),
		pp_registry_domain(next));
	char why[160];
	snprintf(why, sizeof(why), "the blob's content hashes to %s", pp_short_digest(got));
	sources_blamed(e, b, h, why); /* sources.c: --json */
	b->src++;
	free(b->cdn_url);
	b->cdn_url = NULL;
	return true;
}

/* Takes a transfer out of the loop; its memory stays until xfer_destroy. */
void xfer_detach(struct pp_engine *e, struct xfer *x)
{
	/* A racer goes with the transfer it races: what it brought is extra.
	 * Its race_of is cleared here, so its own detach does not count it
	 * out of the racers: that is done here (a count left at RACE_MAX
	 * would stop all racing for the rest of the run). */
	if (x->racer) {
		struct xfer *r = x->racer;
		x->racer = NULL;
		r->race_of = NULL;
		e->lanes.racers--;
		e->lanes.extra += r->got;
		xfer_free(e, r);
	}
	if (x->race_of) {
		x->race_of->racer = NULL;
		x->race_of = NULL;
		e->lanes.racers--;
	}
	/* The chunks a span reserved past the one it was at go back (a
	 * racer's last is its chunk: it reserves none). */
	for (size_t k = x->chunk + 1; k <= x->last; k++)
		if (x->b->chunks[k].state == CHUNK_ACTIVE)
			chunk_set_state(x->b, k, CHUNK_PENDING);
	x->last = x->chunk;
	lanes_note_end(e, x);
	curl_multi_remove_handle(e->multi, x->h);
	for (int i = 0; i < e->n_xfers; i++) {
		if (e->xfers[i] == x) {
			e->xfers[i] = e->xfers[--e->n_xfers];
			break;
		}
	}
	x->b->active--;
	sources_detached(e, x); /* sources.c: per-host count, the host's rate */
}

void xfer_destroy(struct xfer *x)
{
	curl_easy_cleanup(x->h);
	curl_slist_free_all(x->hdrs);
	free(x->authz);
	free(x->url);
	pp_http_response_reset(&x->resp);
	pp_buf_free(&x->resp.body);
	pp_buf_free(&x->errbody);
	free(x->race_buf);
	free(x);
}

void xfer_free(struct pp_engine *e, struct xfer *x)
{
	xfer_detach(e, x);
	xfer_destroy(x);
}

static bool reply_ok(struct xfer *x)
{
	struct blob *b = x->b;
	long status = x->resp.status;
	int64_t start = x->want_start, end = x->want_end;
	if (status == 206) {
		int64_t s, en, total;
		struct pp_error err = {0};
		if (!x->ranged ||
		    pp_parse_content_range(x->resp.content_range, &s, &en, &total, &err) < 0) {
			snprintf(x->bad_reply, sizeof(x->bad_reply), "206 with %.200s",
				 x->ranged ? err.msg : "no Range asked for");
			return false;
		}
		if (total >= 0 && total != b->size) {
			x->wrong_size = total;
			return false;
		}
		if (s != start || en != end) {
			snprintf(x->bad_reply, sizeof(x->bad_reply),
				 "asked for bytes %lld-%lld/%lld, got Content-Range %.80s",
				 (long long)start, (long long)end, (long long)b->size,
				 x->resp.content_range);
			return false;
		}
		sources_ranged(x); /* sources.c: the host has it: fan out */
		return true;
	}
	if (status == 200) {
		curl_off_t cl = -1;
		curl_easy_getinfo(x->h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
		if (cl >= 0 && cl != b->size) {
			x->wrong_size = cl;
			return false;
		}
		if (x->ranged && !(start == 0 && end == b->size - 1)) {
			x->range_ignored = true;
			return false;
		}
		return true;
	}
	x->error_status = true;
	return true;
}

static size_t write_cb(char *data, size_t size, size_t n, void *userdata)
{
	struct xfer *x = userdata;
	struct blob *b = x->b;
	struct chunk *c = &b->chunks[x->chunk];
	size_t len = size * n;
	if (!x->checked) {
		x->checked = true;
		if (!reply_ok(x))
			return 0;
	}
	if (x->error_status) {
		if (x->errbody.len < ERROR_BODY_MAX)
			pp_buf_append(&x->errbody, data, len);
		return len;
	}
	int64_t pos = c->off + c->received;
	if ((int64_t)len > c->len - c->received) {
		snprintf(x->bad_reply, sizeof(x->bad_reply), "server sent more than %lld bytes",
			 (long long)c->len);
		return 0;
	}
	for (size_t done = 0; done < len;) {
		ssize_t w = pwrite(b->fd, data + done, len - done, pos + (int64_t)done);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			x->io_errno = errno;
			return 0;
		}
		done += (size_t)w;
	}
	if (b->n_consumers && prefix_feed(b, pos, data, len, &x->consumer_err) < 0) {
		x->consumer_failed = true;
		return 0;
	}
	c->received += (int64_t)len;
	x->got += (int64_t)len;
	x->last_byte = pp_now();
	b->fetched += (int64_t)len;
	x->e->fetched += (int64_t)len;
	/* Hashed (and checkpointed) by a hash worker, from the file. */
	chunk_hash_more(x->e, b, x->chunk);
	return len;
}

/* A request for bytes [start, end] of chunk ci, in the loop; the chunk's
 * state is the caller's. */
struct xfer *xfer_new(struct pp_engine *e, struct blob *b, size_t ci, int64_t start, int64_t end,
		      struct pp_error *err)
{
	struct xfer *x = pp_xcalloc(1, sizeof(*x));
	x->e = e;
	x->b = b;
	x->chunk = x->last = ci;
	x->want_start = start;
	x->want_end = end;
	x->resp.retry_after = -1;
	x->wrong_size = -1;
	x->h = curl_easy_init();
	if (!x->h) {
		free(x);
		pp_error_set(err, PP_EGENERIC, "curl_easy_init failed");
		return NULL;
	}
	if (b->cdn_url && pp_now() - b->cdn_since > CDN_URL_MAX_AGE) {
		free(b->cdn_url);
		b->cdn_url = NULL;
	}
	sources_pick(e, b, ci, x); /* sources.c: which host serves this chunk */
	x->via_cdn = b->cdn_url != NULL && b->cdn_src == x->src;
	x->url = pp_registry_url(x->reg, x->repo, "blobs", b->digest);
	if (!x->via_cdn) {
		char *authz = NULL;
		int r = pp_registry_auth_header(x->reg, x->repo, &authz, err);
		if (r < 0) {
			curl_easy_cleanup(x->h);
			free(x->url);
			free(x);
			return NULL;
		}
		if (authz)
			x->hdrs = curl_slist_append(x->hdrs, authz);
		x->authz = authz;
		x->hdrs = pp_registry_add_headers(x->reg, x->hdrs);
	}
	/* A closed range even for a single stream, so a resumed stream starts
	 * where it stopped; a 200 for the whole blob is accepted then. */
	char range[96];
	snprintf(range, sizeof(range), "Range: bytes=%lld-%lld", (long long)start, (long long)end);
	x->ranged = !(b->single_stream && start == 0);
	if (x->ranged)
		x->hdrs = curl_slist_append(x->hdrs, range);
	pp_registry_setup_handle(x->reg, x->h);
	/* One range per connection, so HTTP/2's multiplexing buys nothing here,
	 * and its framing costs CPU on both ends: a 1 GiB blob over TLS from
	 * nginx took 7.1 s with HTTP/2 and 5.6 s with HTTP/1.1 (-j 16, 2 cores). */
	curl_easy_setopt(x->h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(x->h, CURLOPT_URL, x->via_cdn ? b->cdn_url : x->url);
	curl_easy_setopt(x->h, CURLOPT_HTTPHEADER, x->hdrs);
	curl_easy_setopt(x->h, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(x->h, CURLOPT_HEADERFUNCTION, pp_http_header_cb);
	curl_easy_setopt(x->h, CURLOPT_HEADERDATA, &x->resp);
	curl_easy_setopt(x->h, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(x->h, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(x->h, CURLOPT_PRIVATE, x);
	curl_easy_setopt(x->h, CURLOPT_BUFFERSIZE, (long)RECV_BUFFER);
	x->last_byte = x->started = pp_now();
	b->active++;
	sources_started(e, x); /* sources.c: per-host count */
	e->xfers[e->n_xfers++] = x;
	return x;
}

/* A chunk of a span is over, mid-request: closed as chunk_done would, but
 * its digest (journal, repair) is settled by the loop (verify_blob), not
 * from inside curl's callback, where failing the blob would remove this
 * very handle.  The span goes on with the next chunk, which it holds
 * ACTIVE already. */
static void span_close(struct xfer *x)
{
	struct blob *b = x->b;
	struct chunk *c = &b->chunks[x->chunk];
	chunk_set_state(b, x->chunk, CHUNK_DONE);
	partial_chunk_written(x->e, b, x->chunk);
	chunk_hash_done_later(b, x->chunk);
	sources_chunk_done(x); /* sources.c: the chunk remembers its source */
	x->chunk++;
	c = &b->chunks[x->chunk];
	if (!c->sha)
		c->sha = pp_sha256_new();
}

/* A request over several chunks: its bytes are cut at chunk boundaries
 * and each piece goes through write_cb as if its chunk had a request of
 * its own (hash per chunk, checkpoints, the prefix). */
static size_t span_write_cb(char *data, size_t size, size_t n, void *userdata)
{
	struct xfer *x = userdata;
	size_t len = size * n;
	if (!x->checked) {
		x->checked = true;
		if (!reply_ok(x))
			return 0;
	}
	if (x->error_status)
		return write_cb(data, size, n, userdata);
	for (size_t done = 0; done < len;) {
		struct chunk *c = &x->b->chunks[x->chunk];
		size_t piece = len - done;
		if ((int64_t)piece > c->len - c->received)
			piece = (size_t)(c->len - c->received);
		if (piece == 0 || write_cb(data + done, 1, piece, userdata) != piece) {
			if (piece == 0)
				snprintf(x->bad_reply, sizeof(x->bad_reply),
					 "server sent more than the %lld bytes asked for",
					 (long long)(x->want_end - x->want_start + 1));
			return 0;
		}
		done += piece;
		if (c->received == c->len && x->chunk < x->last)
			span_close(x);
	}
	return len;
}

int xfer_start(struct pp_engine *e, struct blob *b, size_t ci, size_t last, struct pp_error *err)
{
	struct chunk *c = &b->chunks[ci];
	int64_t start = c->off + c->received;
	int64_t end = b->chunks[last].off + b->chunks[last].len - 1;
	struct xfer *x = xfer_new(e, b, ci, start, end, err);
	if (!x)
		return -1;
	if (!c->sha)
		c->sha = pp_sha256_new();
	x->last = last;
	if (last > ci)
		curl_easy_setopt(x->h, CURLOPT_WRITEFUNCTION, span_write_cb);
	curl_multi_add_handle(e->multi, x->h);
	for (size_t k = ci; k <= last; k++)
		chunk_set_state(b, k, CHUNK_ACTIVE);
	if (last > ci)
		pp_debug("blob %s: chunks %zu-%zu: GET%s bytes %lld-%lld",
			 pp_short_digest(b->digest), ci, last,
			 x->via_cdn ? " (redirect target)" : "", (long long)start, (long long)end);
	else
		pp_debug("blob %s: chunk %zu: GET%s bytes %lld-%lld", pp_short_digest(b->digest),
			 ci, x->via_cdn ? " (redirect target)" : "", (long long)start,
			 (long long)end);
	return 0;
}

/* Puts a chunk back in the queue after a failed request, or fails the blob
 * when it has gone --give-up-after without progress (what it has stays on
 * disk for the next run). */
static void retry_chunk(struct pp_engine *e, struct blob *b, size_t ci, double wait,
			const struct pp_error *why)
{
	struct chunk *c = &b->chunks[ci];
	chunk_set_state(b, ci, CHUNK_PENDING);
	if (c->received == c->len) {
		/* Every byte came but the request still failed: take none of it,
		 * and neither may the blob hash, which had them if the chunk was
		 * at its frontier.  Progress leaves them out: they come again. */
		int64_t lost =
			c->received < b->fetched - b->redone ? c->received : b->fetched - b->redone;
		b->redone += lost;
		e->redone += lost;
		c->received = c->checkpoint = 0;
		pp_sha256_free(c->sha);
		c->sha = NULL;
		prefix_rewind(b, ci);
	}
	c->attempts++;
	if (engine_gave_up(e, b)) {
		struct pp_error err = *why;
		pp_error_wrap(
			&err,
			"blob %s: chunk %zu: giving up after %.0f s without progress "
			"(--give-up-after), %d attempts%s; what it has is kept for the next run",
			pp_short_digest(b->digest), ci, pp_now() - b->progress_at, c->attempts,
			b->single_stream ? " (the server ignores Range: a broken stream starts "
					   "over)"
					 : "");
		engine_fail_blob(e, b, &err);
		return;
	}
	c->not_before = pp_now() + wait;
	pp_warn("blob %s: chunk %zu: %s; retry %d in %.1f s", pp_short_digest(b->digest), ci,
		why->msg, c->attempts, wait);
}

/* The wait after a 401 or an expired redirect: none the first time (new
 * credentials or a new redirect are the fix), backoff when it keeps
 * happening, so a server that refuses every renewal is not hammered until
 * the give-up time. */
static double again_soon(const struct blob *b, size_t ci)
{
	int attempts = b->chunks[ci].attempts;
	return attempts > 0 ? pp_backoff(attempts - 1) : 0;
}

/* Why a request failed, as an error for the log and the final message. */
static void describe_failure(const struct xfer *x, CURLcode rc, struct pp_error *err)
{
	const struct chunk *c = &x->b->chunks[x->chunk];
	if (x->stalled) {
		pp_error_set(err, PP_ENET, "no bytes for %.0f s: request cancelled",
			     x->e->opts->stall_seconds);
	} else if (x->bad_reply[0]) {
		pp_error_set(err, PP_EPROTO, "%s", x->bad_reply);
	} else if (rc != CURLE_OK && !x->error_status) {
		pp_curl_error(err, rc, x->errbuf, x->via_cdn ? "redirect target" : x->url);
	} else if (x->error_status) {
		struct pp_http_response tmp = x->resp;
		tmp.body = x->errbody;
		pp_http_status_error(err, &tmp);
	} else {
		pp_error_set(err, PP_EPROTO, "body ended after %lld of %lld bytes",
			     (long long)c->received, (long long)c->len);
	}
}

void chunk_done(struct pp_engine *e, struct xfer *x)
{
	struct blob *b = x->b;
	char *eff = NULL;
	chunk_set_state(b, x->chunk, CHUNK_DONE);
	sources_chunk_done(x); /* sources.c: the chunk remembers its source */
	curl_easy_getinfo(x->h, CURLINFO_EFFECTIVE_URL, &eff);
	if (!x->via_cdn && eff && strcmp(eff, x->url) != 0) {
		free(b->cdn_url);
		b->cdn_url = pp_xstrdup(eff);
		b->cdn_since = pp_now();
		b->cdn_src = x->src;
	}
	partial_chunk_written(e, b, x->chunk); /* partial.c: written back, flushed early */
	/* Its digest goes into the journal once the hash workers are through. */
	chunk_hash_done(e, b, x->chunk);
	if (b->state != BLOB_RUNNING)
		return;
	int64_t budget = HASH_BUDGET;
	verify_blob(e, b, &budget);
}

static const char *const outcome_names[] = {
	[XO_DONE] = "done",
	[XO_LOCAL_IO] = "local I/O error",
	[XO_WRONG_SIZE] = "wrong blob size",
	[XO_RANGE_IGNORED] = "range ignored",
	[XO_TLS] = "TLS error",
	[XO_REDIRECT_EXPIRED] = "redirect target refused",
	[XO_UNAUTHORIZED] = "unauthorized",
	[XO_REFUSED] = "refused",
	[XO_RETRY] = "retry",
	[XO_STOPPED] = "stopped",
};

const char *xfer_outcome_name(enum xfer_outcome o)
{
	return outcome_names[o];
}

/* The size a 416 names when the range was past the end of a shorter blob. */
static int64_t unsatisfiable_size(const struct xfer *x)
{
	long long total;
	if (x->resp.status == 416 && x->resp.content_range &&
	    sscanf(x->resp.content_range, "bytes */%lld", &total) == 1 && total != x->b->size)
		return total;
	return -1;
}

enum xfer_outcome xfer_classify(const struct xfer *x, CURLcode rc, bool complete)
{
	long status = x->resp.status;
	if (x->io_errno || x->consumer_failed)
		return XO_LOCAL_IO;
	bool stopped = rc == CURLE_ABORTED_BY_CALLBACK && pp_should_stop();
	/* A request the stop aborted after its last byte came is done. */
	if ((rc == CURLE_OK || stopped) && !x->error_status && !x->bad_reply[0] && !x->stalled &&
	    (status == 200 || status == 206) && complete)
		return XO_DONE;
	if (stopped)
		return XO_STOPPED; /* caught by the request before the loop saw it */
	if (x->wrong_size >= 0 || unsatisfiable_size(x) >= 0)
		return XO_WRONG_SIZE; /* the registry and the manifest disagree */
	if (x->range_ignored)
		return XO_RANGE_IGNORED;
	if (!x->stalled && !x->bad_reply[0] && rc != CURLE_OK && !x->error_status) {
		struct pp_error tmp = {0};
		if (pp_curl_error(&tmp, rc, NULL, "") == PP_ETLS)
			return XO_TLS;
	}
	if ((x->via_cdn || x->redirects > 0) && status >= 400 && status < 500 && status != 429)
		return XO_REDIRECT_EXPIRED; /* a signed URL expired */
	if (status == 401)
		return XO_UNAUTHORIZED;
	if (status >= 400 && status < 500 && status != 408 && status != 429 && status != 416)
		return XO_REFUSED;
	return XO_RETRY;
}

/* A mirror that failed a request (down, 404 or another refusal, 5xx,
 * 429, a stall, TLS, a wrong size, credentials it refuses) hands the blob
 * to the next host, its registry last: the chunk goes back to the queue at
 * once, and the blob does not fail.  A registry hands it to the next
 * registry whose images list the blob only for a `hard` failure (a
 * refusal, TLS, a wrong size), not for one worth retrying there.  A
 * transfer started before the blob moved on only requeues its chunk.
 * False when there is no next host. */
static bool fall_through(struct pp_engine *e, struct xfer *x, const struct pp_error *why, bool hard)
{
	struct blob *b = x->b;
	struct chunk *c = &b->chunks[x->chunk];
	const char *repo;
	struct pp_registry *next = blob_host(b, x->src + 1, &repo);
	if (!next || (!hard && !pp_registry_is_mirror(x->reg)))
		return false;
	if (sources_drop(e, b, x->src, why->msg)) { /* sources.c: not asked for this blob again */
		free(b->cdn_url);
		b->cdn_url = NULL;
		pp_info("blob %s: %s %s: %s; next: %s/%s", pp_short_digest(b->digest),
			pp_registry_is_mirror(x->reg) ? "mirror" : "registry",
			pp_registry_domain(x->reg), why->msg, pp_registry_domain(next), repo);
	}
	if (c->received == c->len) {
		retry_chunk(e, b, x->chunk, 0, why); /* its bytes cannot be trusted */
		return true;
	}
	chunk_set_state(b, x->chunk, CHUNK_PENDING);
	c->not_before = 0;
	return true;
}

/* Acts on a transfer that did not bring its whole chunk: retry, go back to
 * the registry, or give up on the blob. */
static void chunk_failed(struct pp_engine *e, struct xfer *x, enum xfer_outcome o, CURLcode rc)
{
	struct blob *b = x->b;
	size_t ci = x->chunk;
	long status = x->resp.status;
	struct pp_error err = {0};

	if (x->got > 0 && b->chunks[ci].received < b->chunks[ci].len)
		b->chunks[ci].attempts = 0; /* it moved and keeps that: count failures afresh */
	if (o == XO_WRONG_SIZE || o == XO_TLS || o == XO_REFUSED || o == XO_RETRY) {
		describe_failure(x, rc, &err);
		if (fall_through(e, x, &err, o != XO_RETRY))
			return;
		pp_error_clear(&err);
	}
	switch (o) {
	case XO_DONE:
		break;
	case XO_LOCAL_IO:
		if (x->consumer_failed) {
			err = x->consumer_err;
		} else {
			errno = x->io_errno;
			if (x->io_errno == ENOSPC)
				pp_error_set(&err, PP_EIO, "no space left writing %s", b->partial);
			else
				pp_error_errno(&err, "write %s", b->partial);
		}
		engine_fail_blob(e, b, &err);
		return;
	case XO_WRONG_SIZE: {
		int64_t size = x->wrong_size >= 0 ? x->wrong_size : unsatisfiable_size(x);
		pp_error_set(&err, PP_EPROTO,
			     "blob %s from %s: the server has %lld bytes, the manifest says %lld",
			     b->digest, x->url, (long long)size, (long long)b->size);
		engine_fail_blob(e, b, &err);
		return;
	}
	case XO_RANGE_IGNORED: {
		/* The server sends whole bodies: fetch this blob as one stream.
		 * One that is a stream already broke, and cannot be resumed
		 * there: it starts over, after a backoff, until the give-up
		 * rule says enough (bytes fetched again are not progress). */
		if (sources_range_ignored(e, x)) /* sources.c: the others carry it */
			return;
		bool again = b->single_stream;
		if (again && engine_gave_up(e, b)) {
			pp_error_set(
				&err, PP_ENET,
				"blob %s from %s: the server ignores Range and its stream broke "
				"%d times; no progress for %.0f s (--give-up-after)",
				b->digest, b->url, b->restarts + 1, pp_now() - b->progress_at);
			engine_fail_blob(e, b, &err);
			return;
		}
		engine_cancel_blob_xfers(e, b);
		b->single_stream = true;
		e->resumed -= b->resumed;
		b->resumed = 0;
		/* Everything comes again from byte 0: progress says so. */
		e->redone += b->fetched - b->redone;
		b->redone = b->fetched;
		engine_plan_chunks(e, b, b->size);
		if (partial_restart_journal(b, &err) < 0) {
			engine_fail_blob(e, b, &err);
			return;
		}
		if (!again) {
			pp_warn("blob %s: server ignored Range; fetching it as one stream",
				pp_short_digest(b->digest));
			return;
		}
		double wait = pp_backoff(b->restarts++);
		b->chunks[0].not_before = pp_now() + wait;
		pp_warn("blob %s: the stream broke and the server ignores Range; starting it over "
			"in %.1f s (restart %d)",
			pp_short_digest(b->digest), wait, b->restarts);
		return;
	}
	case XO_TLS:
		describe_failure(x, rc, &err);
		engine_fail_blob(e, b, &err);
		return;
	case XO_REDIRECT_EXPIRED:
		describe_failure(x, rc, &err);
		pp_info("blob %s: redirect target answered %ld; asking the registry again",
			pp_short_digest(b->digest), status);
		free(b->cdn_url);
		b->cdn_url = NULL;
		retry_chunk(e, b, ci, again_soon(b, ci), &err);
		return;
	case XO_UNAUTHORIZED: {
		describe_failure(x, rc, &err);
		struct pp_error aerr = {0};
		if (pp_registry_unauthorized(x->reg, x->repo, x->resp.www_authenticate, x->authz,
					     &aerr) < 0) {
			if (fall_through(e, x, &aerr, true))
				return;
			pp_error_wrap(&aerr, "blob %s", pp_short_digest(b->digest));
			engine_fail_blob(e, b, &aerr);
			return;
		}
		retry_chunk(e, b, ci, again_soon(b, ci), &err);
		return;
	}
	case XO_REFUSED:
		describe_failure(x, rc, &err);
		pp_error_wrap(&err, "blob %s from %s", b->digest, x->url);
		engine_fail_blob(e, b, &err);
		return;
	case XO_STOPPED: {
		/* Not a failure but our stop: keep what it brought, as stop_all
		 * does for the requests still open, and count no attempt. */
		struct chunk *c = &b->chunks[ci];
		if (b->jfd >= 0 && c->sha && c->received > c->checkpoint && c->received < c->len)
			partial_checkpoint(e, b, ci);
		chunk_set_state(b, ci, CHUNK_PENDING);
		pp_info("blob %s: chunk %zu: stopped by the %s mid-request; its %lld bytes are "
			"kept",
			pp_short_digest(b->digest), ci, pp_stop_requested ? "signal" : "deadline",
			(long long)c->received);
		return;
	}
	case XO_RETRY: {
		/* Retry-After is honoured as the least wait: a server saying 0
		 * for ever still gets the backoff, not a request loop. */
		double wait = pp_backoff(b->chunks[ci].attempts);
		if ((status == 429 || status == 503) && x->resp.retry_after > wait)
			wait = x->resp.retry_after;
		describe_failure(x, rc, &err);
		retry_chunk(e, b, ci, wait, &err);
		return;
	}
	}
}

/* Takes a finished transfer out of the loop first, so failing the blob
 * cannot free it under us; then one outcome decides what happens. */
static void finish(struct pp_engine *e, struct xfer *x, CURLcode rc)
{
	if (x->race_of) {
		xfer_race_finish(e, x, rc);
		return;
	}
	const struct chunk *c = &x->b->chunks[x->chunk];
	xfer_detach(e, x);
	curl_easy_getinfo(x->h, CURLINFO_REDIRECT_COUNT, &x->redirects);
	enum xfer_outcome o = xfer_classify(x, rc, c->received == c->len);
	pp_debug("blob %s: chunk %zu: %s (HTTP %ld, %lld bytes)", pp_short_digest(x->b->digest),
		 x->chunk, xfer_outcome_name(o), x->resp.status, (long long)x->got);
	if (o == XO_DONE)
		chunk_done(e, x);
	else
		chunk_failed(e, x, o, rc);
	xfer_destroy(x);
}

void xfer_finish(struct pp_engine *e, struct xfer *x, CURLcode rc)
{
	finish(e, x, rc);
}

/* curl's low-speed check averages over a window, so a burst then silence
 * would outlive it: the loop cancels such a request itself; its chunk goes
 * back to the queue and resumes where it stopped. */
void xfer_stalled(struct pp_engine *e, struct xfer *x)
{
	x->stalled = true;
	finish(e, x, CURLE_OPERATION_TIMEDOUT);
}
