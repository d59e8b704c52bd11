/* Several sources for one blob.  A blob may come from its registry's pull
 * mirrors and from the registry itself (the hosts of blob_host(), from
 * b->src to the end of that origin, the registry last).  Every one of
 * them still in play for the blob gets requests at once:
 *
 *   - a source that has not answered a range of this blob with a 206 yet
 *     gets one request at a time (its probe): a pull-through cache that
 *     lacks the blob copies it whole from upstream for every request, so
 *     it must not get a fan of ranges before it has the blob;
 *   - past that, each free connection goes to the mirror where one more
 *     connection costs least for what it brings: (connections open to the
 *     host + 1) / its bytes per second per connection, measured over its
 *     recent transfers (an unmeasured one counts as the best measured), so
 *     connections, and with them bytes, follow each mirror's throughput;
 *   - the registry takes the connections the mirrors leave: when each is at
 *     --per-host, left alone (it ignored Range) or dropped, but not while
 *     one is probing.  A mirror is there to spare the registry: with the
 *     registry taking a share by throughput, 8 agents behind an nginx cache
 *     made the registry send 7.0 times the image (scripts/fleet-sim.sh),
 *     1.0 times without;
 *   - --per-host counts the connections of the host a request goes to;
 *   - a mirror that ignores Range for a blob is left alone for that blob
 *     for a backoff (0.25 s doubling to 8 s, jittered) while the others
 *     carry it, then probed again: its whole-blob answer is cut off;
 *   - each done chunk remembers its source: a repair after a digest
 *     mismatch asks another source for it, and when the bytes differ the
 *     chunk's first source is blamed and dropped for the rest of the run. */
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "prepull/hosts.h"
#include "prepull/log.h"
#include "prepull/options.h"
#include "prepull/registry.h"

#define RATE_WEIGHT 0.3    /* of a new sample in a host's bytes/s */
#define RATE_MIN_SECS 0.05 /* shorter transfers say little about a rate */
#define IGNORED_BACKOFF0 0.25
#define IGNORED_BACKOFF_MAX 8.0

struct blob_src {
	bool ranged;       /* answered a range of this blob with a 206 */
	bool dropped;      /* failed this blob: not asked for it again */
	int active;        /* this blob's transfers to it */
	int ignored;       /* times it ignored Range for this blob */
	double not_before; /* left alone until then (it ignored Range) */
};

/* A host's connection count and rate (engine_host_slot() adds it). */
static struct host_count *host_of(struct pp_engine *e, const struct pp_registry *reg)
{
	engine_host_slot(e, reg);
	for (size_t i = 0;; i++)
		if (e->hosts[i].reg == reg)
			return &e->hosts[i];
}

static struct blob_src *src_at(struct blob *b, size_t j)
{
	if (j >= b->n_srcs) {
		b->srcs = pp_xrealloc(b->srcs, (j + 1) * sizeof(*b->srcs));
		memset(b->srcs + b->n_srcs, 0, (j + 1 - b->n_srcs) * sizeof(*b->srcs));
		b->n_srcs = j + 1;
	}
	return &b->srcs[j];
}

/* The sources in play run from b->src up to and including the first host
 * that is not a mirror (the registry ends its origin's list). */
#define FOR_EACH_SOURCE(b, j, h, repo)                                                   \
	for (size_t j = (b)->src, end_ = 0; !end_ && ((h) = blob_host((b), j, &(repo))); \
	     end_ = !pp_registry_is_mirror(h), j++)

static bool usable(struct pp_engine *e, struct blob *b, size_t j, struct pp_registry *h)
{
	return !src_at(b, j)->dropped && !host_of(e, h)->dropped;
}

static size_t in_play(struct pp_engine *e, struct blob *b)
{
	struct pp_registry *h;
	const char *repo;
	size_t n = 0;
	FOR_EACH_SOURCE(b, j, h, repo)
	n += usable(e, b, j, h);
	return n;
}

/* The source for the next request of b (for chunk ci, or any chunk when
 * ci is SIZE_MAX); -1 when none can take one now (*wake: when one may). */
static long choose(struct pp_engine *e, struct blob *b, size_t ci, double now, double *wake)
{
	struct pp_registry *h;
	const char *repo;
	size_t avoid = SIZE_MAX;
	if (ci != SIZE_MAX && b->repairing && b->chunks[ci].from > 0)
		avoid = b->chunks[ci].from - 1; /* compare with another source's bytes */
	size_t n = in_play(e, b);
	double best_rate = 0;
	FOR_EACH_SOURCE(b, j, h, repo)
	if (usable(e, b, j, h) && host_of(e, h)->rate > best_rate)
		best_rate = host_of(e, h)->rate;
	if (best_rate <= 0)
		best_rate = 1;
	for (int pass = 0; pass < 2; pass++) {
		long best = -1;
		double best_cost = 0;
		bool mirror_probing = false;
		FOR_EACH_SOURCE(b, j, h, repo)
		{
			struct blob_src *s = src_at(b, j);
			struct host_count *hc = host_of(e, h);
			if (!usable(e, b, j, h) || (pass == 0 && j == avoid && n > 1))
				continue;
			if (s->not_before > now) {
				if (*wake == 0 || s->not_before < *wake)
					*wake = s->not_before;
				continue;
			}
			if (hc->n >= e->opts->per_host)
				continue;
			/* One probe at a time: always at a mirror, and at the
			 * registry too while others share the blob. */
			if (!s->ranged && s->active > 0 && (pp_registry_is_mirror(h) || n > 1)) {
				mirror_probing |= pp_registry_is_mirror(h);
				continue;
			}
			/* The registry (last) only where the mirrors leave room. */
			if (!pp_registry_is_mirror(h) && (best >= 0 || mirror_probing))
				continue;
			double cost = (hc->n + 1) / (hc->rate > 0 ? hc->rate : best_rate);
			if (best < 0 || cost < best_cost) {
				best = (long)j;
				best_cost = cost;
			}
		}
		if (best >= 0 || avoid == SIZE_MAX)
			return best;
	}
	return -1;
}

bool sources_ready(struct pp_engine *e, struct blob *b, double now, double *wake)
{
	return choose(e, b, SIZE_MAX, now, wake) >= 0;
}

void sources_pick(struct pp_engine *e, struct blob *b, size_t ci, struct xfer *x)
{
	double wake = 0;
	long j = choose(e, b, ci, pp_now(), &wake);
	/* The scheduler asked sources_ready() first; the fallback only keeps
	 * a request possible should it not have. */
	x->src = j >= 0 ? (size_t)j : b->src;
	x->reg = blob_host(b, x->src, &x->repo);
}

void sources_started(struct pp_engine *e, struct xfer *x)
{
	host_of(e, x->reg)->n++;
	src_at(x->b, x->src)->active++;
}

void sources_detached(struct pp_engine *e, struct xfer *x)
{
	struct host_count *hc = host_of(e, x->reg);
	hc->n--;
	src_at(x->b, x->src)->active--;
	double secs = pp_now() - x->started;
	if (x->got <= 0 || secs < RATE_MIN_SECS)
		return;
	double rate = (double)x->got / secs;
	hc->rate = hc->rate > 0 ? (1 - RATE_WEIGHT) * hc->rate + RATE_WEIGHT * rate : rate;
}

void sources_ranged(struct xfer *x)
{
	src_at(x->b, x->src)->ranged = true;
}

void sources_chunk_done(struct xfer *x)
{
	x->b->chunks[x->chunk].from_new = x->src + 1;
}

bool sources_drop(struct blob *b, size_t src)
{
	if (src < b->src || src_at(b, src)->dropped)
		return false;
	src_at(b, src)->dropped = true;
	while (b->src < b->n_srcs && b->srcs[b->src].dropped)
		b->src++;
	return true;
}

/* A repaired chunk came back different: names and drops the host to blame. */
static void blame(struct pp_engine *e, struct blob *b, size_t ci)
{
	const struct chunk *c = &b->chunks[ci];
	const char *repo;
	if (c->from == 0 || c->from_new == 0 || c->from == c->from_new)
		return; /* the same source twice, or one unknown: nothing to compare */
	struct pp_registry *bad = blob_host(b, c->from - 1, &repo);
	struct pp_registry *other = blob_host(b, c->from_new - 1, &repo);
	if (!bad || !other)
		return;
	/* The chunk's first source is the suspect: its bytes were in the file
	 * that failed.  But the digest is the registry's word: between it and
	 * a mirror, the mirror is blamed (should its new bytes be the bad ones,
	 * the file fails again and the next pass fetches them elsewhere). */
	if (!pp_registry_is_mirror(bad) && pp_registry_is_mirror(other)) {
		struct pp_registry *t = bad;
		bad = other;
		other = t;
	}
	if (host_of(e, bad)->dropped || in_play(e, b) < 2)
		return;
	host_of(e, bad)->dropped = true;
	pp_warn("blob %s: chunk %zu: %s and %s sent different bytes; %s %s served it, so it is "
		"dropped for this blob and the rest of the run",
		pp_short_digest(b->digest), ci, pp_registry_domain(other), pp_registry_domain(bad),
		pp_registry_is_mirror(bad) ? "mirror" : "registry", pp_registry_domain(bad));
}

void sources_chunk_final(struct pp_engine *e, struct blob *b, size_t ci, bool differs)
{
	struct chunk *c = &b->chunks[ci];
	if (differs)
		blame(e, b, ci);
	c->from = c->from_new;
}

bool sources_single(struct pp_engine *e, struct blob *b)
{
	return in_play(e, b) < 2;
}

bool sources_range_ignored(struct pp_engine *e, struct xfer *x)
{
	struct blob *b = x->b;
	struct chunk *c = &b->chunks[x->chunk];
	if (!pp_registry_is_mirror(x->reg) || in_play(e, b) < 2 || b->single_stream)
		return false;
	struct blob_src *s = src_at(b, x->src);
	double wait = IGNORED_BACKOFF0;
	for (int i = 0; i < s->ignored && wait < IGNORED_BACKOFF_MAX; i++)
		wait *= 2;
	if (wait > IGNORED_BACKOFF_MAX)
		wait = IGNORED_BACKOFF_MAX;
	wait = wait / 2 + wait / 2 * ((double)rand() / RAND_MAX);
	s->ignored++;
	s->ranged = false;
	s->not_before = pp_now() + wait;
	chunk_set_state(b, x->chunk, CHUNK_PENDING);
	c->not_before = 0;
	pp_info("blob %s: mirror %s ignored Range (it may be filling its cache); the other sources "
		"carry the blob, it is asked again in %.2f s",
		pp_short_digest(b->digest), pp_registry_domain(x->reg), wait);
	return true;
}

void sources_name_dropped(struct pp_engine *e, struct blob *b, char *buf, size_t n)
{
	struct pp_registry *h;
	const char *repo;
	size_t len = strlen(buf);
	for (size_t j = 0; (h = blob_host(b, j, &repo)) && len + 1 < n; j++) {
		if (!host_of(e, h)->dropped)
			continue;
		snprintf(buf + len, n - len, " (%s %s dropped: its bytes differed)",
			 pp_registry_is_mirror(h) ? "mirror" : "registry", pp_registry_domain(h));
		len = strlen(buf);
	}
}
