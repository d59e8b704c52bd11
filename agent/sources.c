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
 *   - a mirror that answers a range of a blob with the whole blob (a 200)
 *     is most likely a pull-through cache filling it from the registry:
 *     it copies the whole blob upstream once, and, for every request that
 *     comes meanwhile, once more.  Its whole-blob answer is cut off, and
 *     then, by --cache-fill:
 *       wait (the default): the blob waits for that mirror.  The registry
 *       takes none of it (other blobs flow); the mirror is asked again
 *       with one request after a backoff (0.5 s doubling to 8 s,
 *       jittered: 8 agents probing a cache every 0.5 s left it too little
 *       of the uplink to fill, scripts/fleet-sim.sh), and its first 206
 *       fans the blob out to it.  A fleet behind the cache costs the
 *       registry about one copy of the blob instead of one per agent and
 *       one more.  Bounded: after max(30 s, size / 50 MB/s) without a 206
 *       the mirror is dropped for the blob (and not waited for again this
 *       run: it may ignore Range for good), and the next source takes it;
 *       bypass: the mirror is left alone for that blob for a backoff
 *       (0.25 s doubling to 8 s, jittered) while the others carry it;
 *   - a source dropped for a blob or for the run is named (-v, --json);
 *   - each done chunk remembers its source: a repair after a digest
 *     mismatch asks another source for it (the chunk waits for one while
 *     another is in play), and when the bytes differ the chunk's first
 *     source is blamed and dropped for the rest of the run. */
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "prepull/hosts.h"
#include "prepull/log.h"
#include "prepull/options.h"
#include "prepull/progress.h"
#include "prepull/registry.h"

#define RATE_WEIGHT 0.3    /* of a new sample in a host's bytes/s */
#define RATE_MIN_SECS 0.05 /* shorter transfers say little about a rate */
#define IGNORED_BACKOFF0 0.25
#define IGNORED_BACKOFF_MAX 8.0
#define FILL_BACKOFF0 0.5      /* --cache-fill wait: the first wait for a filling mirror */
#define FILL_BACKOFF_MAX 8.0   /* ... doubling up to this */
#define FILL_WAIT_MIN 30.0     /* seconds a blob waits for a filling mirror at least */
#define FILL_RATE (50.0 * 1e6) /* ... or its size at this many bytes/s, when longer */

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

/* A source is out for a blob or (run) for the rest of the run: --json. */
static void note_dropped(struct pp_engine *e, struct blob *b, const struct pp_registry *h, bool run,
			 const char *why)
{
	if (e->progress)
		pp_progress_source_dropped(e->progress, pp_registry_domain(h),
					   pp_registry_is_mirror(h), b->digest,
					   run ? "run" : "blob", why);
}

/* --cache-fill wait: a mirror filling the blob holds the registry back. */
static bool filling(struct pp_engine *e, struct blob *b, size_t j, struct pp_registry *h)
{
	const struct blob_src *s = src_at(b, j);
	return pp_registry_is_mirror(h) && s->fill_since > 0 && !s->ranged && usable(e, b, j, h) &&
	       !host_of(e, h)->fill_gave_up;
}

/* Connections to a host that count against --per-host: a racer has room
 * of its own beyond it (CURLMOPT_MAX_HOST_CONNECTIONS), so one racing on
 * a mirror does not make the mirror look full and hand a lane to the
 * registry. */
static int lanes_on(const struct pp_engine *e, const struct host_count *hc)
{
	int n = hc->n;
	if (e->lanes.racers == 0)
		return n; /* the usual case: no scan on every pick */
	for (int i = 0; i < e->n_xfers; i++)
		if (e->xfers[i]->race_of && e->xfers[i]->reg == hc->reg)
			n--;
	return n;
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
 * ci is SIZE_MAX); -1 when none can take one now (*wake: when one may).
 * A repaired chunk goes to another source than the one that sent it
 * first, when one can take it; `strict`: and not back to that one while
 * another is in play, so the repair compares two sources' bytes. */
static long choose(struct pp_engine *e, struct blob *b, size_t ci, double now, double *wake,
		   bool strict)
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
			/* Counts while the mirror waits out its backoff too. */
			mirror_probing |= filling(e, b, j, h);
			if (!usable(e, b, j, h) || (pass == 0 && j == avoid && n > 1))
				continue;
			/* One probe at a time: always at a mirror, and at the
			 * registry too while others share the blob.  Before
			 * the checks below: a mirror probing the blob holds the
			 * registry back whether or not it has room now. */
			if (!s->ranged && s->active > 0 && (pp_registry_is_mirror(h) || n > 1)) {
				mirror_probing |= pp_registry_is_mirror(h);
				continue;
			}
			if (s->not_before > now) {
				if (*wake == 0 || s->not_before < *wake)
					*wake = s->not_before;
				continue;
			}
			if (lanes_on(e, hc) >= e->opts->per_host)
				continue;
			/* The registry (last) only where the mirrors leave room. */
			if (!pp_registry_is_mirror(h) && (best >= 0 || mirror_probing))
				continue;
			double cost = (hc->n + 1) / (hc->rate > 0 ? hc->rate : best_rate);
			if (best < 0 || cost < best_cost) {
				best = (long)j;
				best_cost = cost;
			}
		}
		if (best >= 0 || avoid == SIZE_MAX || (strict && n > 1))
			return best;
	}
	return -1;
}

bool sources_ready(struct pp_engine *e, struct blob *b, double now, double *wake)
{
	return choose(e, b, SIZE_MAX, now, wake, false) >= 0;
}

bool sources_ready_for(struct pp_engine *e, struct blob *b, size_t ci, double now, double *wake)
{
	return choose(e, b, ci, now, wake, true) >= 0;
}

void sources_pick(struct pp_engine *e, struct blob *b, size_t ci, struct xfer *x)
{
	double wake = 0;
	long j = choose(e, b, ci, pp_now(), &wake, false);
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
	struct blob_src *s = src_at(x->b, x->src);
	if (s->fill_since > 0)
		pp_info("blob %s: mirror %s has it now (after %.1f s): fetching it from there",
			pp_short_digest(x->b->digest), pp_registry_domain(x->reg),
			pp_now() - s->fill_since);
	s->ranged = true;
	s->fill_since = 0;
}

void sources_chunk_done(struct xfer *x)
{
	x->b->chunks[x->chunk].from_new = x->src + 1;
}

bool sources_drop(struct pp_engine *e, struct blob *b, size_t src, const char *why)
{
	const char *repo;
	if (src < b->src || src_at(b, src)->dropped)
		return false;
	src_at(b, src)->dropped = true;
	while (b->src < b->n_srcs && b->srcs[b->src].dropped)
		b->src++;
	struct pp_registry *h = blob_host(b, src, &repo);
	if (h)
		note_dropped(e, b, h, false, why);
	return true;
}

void sources_blamed(struct pp_engine *e, struct blob *b, const struct pp_registry *h,
		    const char *why)
{
	note_dropped(e, b, h, false, why);
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
	char why[160];
	snprintf(why, sizeof(why), "chunk %zu: its bytes differ from %s's", ci,
		 pp_registry_domain(other));
	note_dropped(e, b, bad, true, why);
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

/* A backoff of `base` doubling `n` times up to `max`, jittered down to half
 * (agents that started together do not probe together). */
static double backoff(double base, double max, int n)
{
	double wait = base;
	for (int i = 0; i < n && wait < max; i++)
		wait *= 2;
	if (wait > max)
		wait = max;
	return wait / 2 + wait / 2 * ((double)rand() / RAND_MAX);
}

/* --cache-fill wait: the blob waits for the filling mirror.  False when
 * it does not: the wait ran out now (the mirror is dropped for the blob),
 * or did for another blob (the mirror is taken as one that ignores Range:
 * the others carry the blob, as with bypass). */
static bool wait_for_fill(struct pp_engine *e, struct xfer *x, struct blob_src *s, double now)
{
	struct blob *b = x->b;
	struct host_count *hc = host_of(e, x->reg);
	double budget = (double)b->size / FILL_RATE;
	if (budget < FILL_WAIT_MIN)
		budget = FILL_WAIT_MIN;
	if (hc->fill_gave_up) {
		s->fill_since = 0;
		return false;
	}
	if (s->fill_since == 0)
		s->fill_since = now;
	if (now - s->fill_since < budget) {
		double wait = backoff(FILL_BACKOFF0, FILL_BACKOFF_MAX, s->ignored);
		s->not_before = now + wait;
		/* Said once by default, every time with -v. */
		pp_log(s->ignored++ == 0 ? PP_LOG_INFO : PP_LOG_DEBUG,
		       "mirror %s is filling blob %s (it answered a range with the whole blob); "
		       "asking again in %.2f s",
		       pp_registry_domain(x->reg), pp_short_digest(b->digest), wait);
		return true;
	}
	char why[160];
	snprintf(why, sizeof(why), "it answered no range of the blob in %.0f s of waiting",
		 now - s->fill_since);
	/* One that never serves a range would make every blob wait: once is
	 * enough for the run. */
	hc->fill_gave_up = true;
	s->fill_since = 0;
	pp_info("blob %s: mirror %s: %s (--cache-fill wait); the next source takes it",
		pp_short_digest(b->digest), pp_registry_domain(x->reg), why);
	sources_drop(e, b, x->src, why);
	return false;
}

bool sources_range_ignored(struct pp_engine *e, struct xfer *x)
{
	struct blob *b = x->b;
	struct chunk *c = &b->chunks[x->chunk];
	if (!pp_registry_is_mirror(x->reg) || in_play(e, b) < 2 || b->single_stream)
		return false;
	struct blob_src *s = src_at(b, x->src);
	double now = pp_now();
	s->ranged = false;
	chunk_set_state(b, x->chunk, CHUNK_PENDING);
	c->not_before = 0;
	if (!e->opts->cache_fill_bypass && wait_for_fill(e, x, s, now))
		return true;
	if (s->dropped)
		return true; /* the wait is over: the next source takes it */
	double wait = backoff(IGNORED_BACKOFF0, IGNORED_BACKOFF_MAX, s->ignored++);
	s->not_before = now + wait;
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
