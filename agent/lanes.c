/* The connections ("lanes"): how fast each transfer goes, what to do
 * about one far slower than its peers, and how many connections the link
 * wants.
 *
 * A transfer's rate is its bytes over a sliding window (RATE_WINDOW).  One
 * under a third of its peers' median (the other transfers' window rates
 * and the last finished ones', or the finished ones' alone when that is
 * higher), after SLOW_MIN_AGE (the frontier chunk's after
 * SLOW_FRONTIER_AGE or 4 round trips), is slow: a connection that landed on a
 * busy edge, or a TCP flow stuck in loss recovery.
 *   - When it holds the hash frontier (the first chunk not done: what the
 *     blob hash and a streaming unpack wait on), a racer asks for its
 *     remaining range on another connection; the first to finish wins and
 *     the other is cancelled (race.c).
 *   - Otherwise it is retired: its bytes stay on disk, its chunk goes back
 *     to the queue, and the next free lane fetches the rest.
 * When no chunk is waiting and lanes stand idle (the end of the blobs), a
 * transfer at half the median is already slow: the idle lanes take its tail.
 *
 * Without -j the count starts at PP_DEFAULT_CONNECTIONS (8), or more for a
 * far registry (lanes_start_count: a TCP connection carries at most its
 * window per round trip, so the farther the registry, the more
 * connections the same link takes; and every step there costs more round
 * trips).  Each step (LANES_WARM to settle, LANES_STEP measured, at least
 * 3 and 6 round trips) multiplies the count, by LANES_FIRST_GROW the first
 * time and LANES_GROW after, while the total rate still rises by
 * LANES_GAIN; a step that gained less is taken back, and the count stays
 * (the link is full).  The first step is the big one: on a link whose
 * connections are each capped (most CDNs) 8 leave most of it unused, and
 * every step costs the pull its measuring time at the count before it; on
 * a full link that step is taken back as any other.
 *   A step during which the machine's CPUs were busy LANES_CPU_FULL of the
 * time is kept but is the last: the bytes already take all the CPU there
 * is to receive, write and hash them, and more connections would only
 * cost more of it (and leave more for the blob hash to catch up on after
 * the last byte).  That holds only when a fair share of the busy time
 * (LANES_CPU_OURS) is prepull's own (with the kernel's packet work,
 * cpu_busy_since): CPUs that other work keeps busy say nothing about what
 * more connections would cost us.
 *
 * A request covers SPAN_RTTS round trips of data (several chunks in a
 * row) so a far registry does not cost each lane a round trip per chunk:
 * lanes_span. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "engine_int.h"
#include "prepull/http.h"
#include "prepull/log.h"
#include "prepull/options.h"
#include "prepull/registry.h"

void lanes_init(struct pp_engine *e)
{
	struct lanes_state *s = &e->lanes;
	const struct pp_options *o = e->opts;
	s->fixed = !o->auto_connections;
	s->max = s->fixed ? o->connections : o->max_connections;
	if (s->max < 1)
		s->max = 1;
	s->limit = s->fixed ? o->connections : o->connections < s->max ? o->connections : s->max;
	s->peak = s->limit;
	s->step_bytes = -1;
}

void lanes_free(struct pp_engine *e)
{
	free(e->lanes.lane);
	e->lanes.lane = NULL;
	e->lanes.n_lane = 0;
}

double lanes_median(const double *v, size_t n)
{
	double a[128];
	if (n == 0)
		return 0;
	if (n > 128)
		n = 128;
	memcpy(a, v, n * sizeof(*a));
	for (size_t i = 1; i < n; i++) {
		double t = a[i];
		size_t j = i;
		for (; j > 0 && a[j - 1] > t; j--)
			a[j] = a[j - 1];
		a[j] = t;
	}
	return n % 2 ? a[n / 2] : (a[n / 2 - 1] + a[n / 2]) / 2;
}

void lanes_sample(struct xfer *x, double now)
{
	x->rate_t[x->rate_next] = now;
	x->rate_got[x->rate_next] = x->got;
	x->rate_next = (x->rate_next + 1) % RATE_SAMPLES;
	if (x->rate_n < RATE_SAMPLES)
		x->rate_n++;
}

double lanes_window_rate(const struct xfer *x, double now)
{
	/* A young request is measured from its start (its first round trip
	 * included); an older one from its oldest sample inside the window. */
	double t0 = x->started;
	int64_t g0 = 0;
	if (now - x->started > RATE_WINDOW && x->rate_n > 0) {
		int newest = (x->rate_next - 1 + RATE_SAMPLES) % RATE_SAMPLES;
		t0 = x->rate_t[newest];
		g0 = x->rate_got[newest];
		for (int k = 0; k < x->rate_n; k++) {
			int i = (x->rate_next - x->rate_n + k + RATE_SAMPLES) % RATE_SAMPLES;
			if (now - x->rate_t[i] <= RATE_WINDOW) {
				t0 = x->rate_t[i];
				g0 = x->rate_got[i];
				break;
			}
		}
	}
	double dt = now - t0;
	return dt > 0 ? (double)(x->got - g0) / dt : 0;
}

bool lanes_is_slow(double rate, double median, size_t peers, bool tail)
{
	if (peers < SLOW_MIN_PEERS || median <= 0)
		return false;
	return rate * (tail ? SLOW_TAIL_FRACTION : SLOW_FRACTION) < median;
}

bool lanes_worth_acting(double rate, double median, int64_t left)
{
	/* Not when the slow lane would be done with what is left at most
	 * SLOW_MIN_GAIN after a median lane. */
	if (rate <= 0 || median <= 0)
		return false;
	return (double)left / rate >= (double)left / median + SLOW_MIN_GAIN;
}

int lanes_step(struct lanes_state *s, double rate, double cpu_busy)
{
	if (s->fixed || s->settled)
		return s->limit;
	if (s->step_rate > 0 && rate < s->step_rate * LANES_GAIN) {
		/* The last step bought little: the link is full.  Back to the
		 * count before it, and stay there. */
		s->settled = true;
		if (s->prev_limit > 0)
			s->limit = s->prev_limit;
		return s->limit;
	}
	if (s->limit >= s->max || cpu_busy >= LANES_CPU_FULL) {
		s->settled = true;
		return s->limit;
	}
	double grow = s->step_rate > 0 ? LANES_GROW : LANES_FIRST_GROW;
	s->prev_limit = s->limit;
	s->step_rate = rate;
	int next = (int)ceil(s->limit * grow);
	s->limit = next > s->max ? s->max : next;
	if (s->limit > s->peak)
		s->peak = s->limit;
	return s->limit;
}

int lanes_start_count(int base, int max, double rtt)
{
	double f = rtt / LANES_NEAR_RTT;
	if (f > LANES_FAR_START)
		f = LANES_FAR_START;
	int n = f > 1 ? (int)ceil(base * f) : base;
	int cap = max / 2 > base ? max / 2 : base;
	return n > cap ? cap : n;
}

void lanes_start(struct pp_engine *e)
{
	struct lanes_state *s = &e->lanes;
	if (s->fixed || s->started)
		return;
	s->started = true;
	double rtt = 0;
	for (size_t i = 0; i < e->n_blobs; i++) {
		double t = pp_registry_round_trip(e->blobs[i]->reg);
		if (t > 0 && (rtt == 0 || t < rtt))
			rtt = t;
	}
	if (rtt <= 0)
		return;
	/* What the steps settle and measure over, until transfers tell. */
	s->recent_rtt[0] = rtt;
	s->n_rtt = 1;
	s->rtt_next = 1;
	int n = lanes_start_count(s->limit, s->max, rtt);
	pp_debug("lanes: the registry answers in %.0f ms; starting at %d connections", rtt * 1e3,
		 n);
	if (n == s->limit)
		return;
	s->limit = n;
	if (n > s->peak)
		s->peak = n;
	curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, (long)s->limit + RACE_MAX);
}

size_t lanes_span(double rate, double rtt, int64_t chunk_len, size_t pending, int lanes)
{
	if (rate <= 0 || rtt <= 0 || chunk_len <= 0)
		return 1;
	double want = SPAN_RTTS * rate * rtt;
	if (want > SPAN_MAX)
		want = SPAN_MAX;
	size_t m = (size_t)ceil(want / (double)chunk_len);
	/* Never so long that some lanes would have nothing to fetch. */
	size_t fair = lanes > 0 ? pending / (size_t)lanes : pending;
	if (m > fair)
		m = fair;
	return m < 1 ? 1 : m;
}

size_t lanes_span_end(struct pp_engine *e, struct blob *b, size_t ci, double now)
{
	struct lanes_state *s = &e->lanes;
	if (b->repairing || b->single_stream || b->check || s->n_recent == 0 || s->n_rtt == 0)
		return ci;
	size_t pending = 0;
	for (size_t k = ci; k < b->n_chunks; k++)
		pending += b->chunks[k].state == CHUNK_PENDING;
	size_t m = lanes_span(lanes_median(s->recent, (size_t)s->n_recent),
			      lanes_median(s->recent_rtt, (size_t)s->n_rtt), b->chunk_size, pending,
			      s->limit);
	size_t last = ci;
	while (last + 1 < b->n_chunks && last + 1 - ci < m) {
		const struct chunk *c = &b->chunks[last + 1];
		if (c->state != CHUNK_PENDING || c->received > 0 || c->verify ||
		    c->not_before > now)
			break;
		last++;
	}
	return last;
}

static struct lane *lane_for(struct lanes_state *s, long port)
{
	for (size_t i = 0; i < s->n_lane; i++)
		if (s->lane[i].port == port)
			return &s->lane[i];
	/* Bounded: ports are 16 bits, and a run uses few of them. */
	if (s->n_lane >= 4096)
		return NULL;
	s->lane = pp_xrealloc(s->lane, (s->n_lane + 1) * sizeof(*s->lane));
	s->lane[s->n_lane] = (struct lane){.port = port};
	return &s->lane[s->n_lane++];
}

void lanes_note_end(struct pp_engine *e, const struct xfer *x)
{
	struct lanes_state *s = &e->lanes;
	long port = 0;
	curl_off_t first = 0;
	curl_easy_getinfo(x->h, CURLINFO_LOCAL_PORT, &port);
	curl_easy_getinfo(x->h, CURLINFO_STARTTRANSFER_TIME_T, &first);
	if (x->got > 0 && x->last_byte > x->b->last_byte)
		x->b->last_byte = x->last_byte;
	if (x->got <= 0 || port <= 0)
		return;
	double first_at = x->started + (double)first / 1e6;
	double busy = x->last_byte - first_at;
	double rtt = pp_http_round_trip(x->h);
	struct lane *l = lane_for(s, port);
	if (l) {
		/* Idle: from the lane's last byte to its next first byte (the
		 * gap between requests and the round trip of the new one). */
		double idle = first_at - l->last_end;
		if (l->requests > 0 && idle > 0)
			l->idle += idle;
		l->bytes += x->got;
		l->requests++;
		l->busy += busy > 0 ? busy : 0;
		l->rtt_sum += rtt;
		l->last_end = x->last_byte;
	}
	if (rtt > 0) {
		s->recent_rtt[s->rtt_next] = rtt;
		s->rtt_next = (s->rtt_next + 1) % RECENT_RATES;
		if (s->n_rtt < RECENT_RATES)
			s->n_rtt++;
	}
	if (x->got >= 64 * 1024 && busy > 0.02) {
		s->recent[s->recent_next] = (double)x->got / busy;
		s->recent_next = (s->recent_next + 1) % RECENT_RATES;
		if (s->n_recent < RECENT_RATES)
			s->n_recent++;
	}
}

/* The first chunk of b that is not done: what its hash waits for. */
static size_t frontier_chunk(const struct blob *b)
{
	size_t k = b->hash_chunk;
	while (k < b->n_chunks && b->chunks[k].state == CHUNK_DONE)
		k++;
	return k;
}

static bool any_pending(const struct pp_engine *e)
{
	for (size_t i = 0; i < e->n_blobs; i++) {
		const struct blob *b = e->blobs[i];
		if (b->state == BLOB_QUEUED)
			return true;
		if (b->state != BLOB_RUNNING || b->single_stream)
			continue;
		for (size_t k = b->first_pending; k < b->n_chunks; k++)
			if (b->chunks[k].state == CHUNK_PENDING)
				return true;
	}
	return false;
}

/* Racing and retiring cost bytes: no new race or retirement once they
 * cost a twentieth of what the run fetched (and 2 MiB). */
static bool extra_allowed(const struct pp_engine *e)
{
	return e->lanes.extra <= e->fetched / 20 + 2 * MIB;
}

/* The chunk goes back to the queue from where this transfer left it. */
static void retire(struct pp_engine *e, struct xfer *x, double rate, double median)
{
	struct blob *b = x->b;
	struct chunk *c = &b->chunks[x->chunk];
	pp_debug("blob %s: chunk %zu: retiring a slow connection (%.2f MB/s, median %.2f MB/s); "
		 "its %lld bytes stay, the rest is queued again",
		 pp_short_digest(b->digest), x->chunk, rate / 1e6, median / 1e6,
		 (long long)c->received);
	if (b->jfd >= 0 && c->sha && c->received > c->checkpoint && c->received < c->len)
		partial_checkpoint(e, b, x->chunk);
	e->lanes.retired++;
	/* Its slot waits for the next transfer to finish: the rest then goes
	 * out on that transfer's connection, back in the pool and proven (a
	 * slow one never goes back), not on a new one, which lands on a slow
	 * edge as often as the one retired did. */
	e->lanes.held++;
	e->lanes.held_at = pp_now();
	chunk_set_state(b, x->chunk, CHUNK_PENDING);
	xfer_free(e, x);
}

/* Looks at every transfer once; acts on at most one per turn (the list
 * changes under a retirement). */
static bool judge(struct pp_engine *e, double now)
{
	struct lanes_state *s = &e->lanes;
	double rates[64 + RECENT_RATES];
	size_t n = 0;
	for (int i = 0; i < e->n_xfers && n < 64; i++) {
		const struct xfer *x = e->xfers[i];
		if (now - x->started >= SLOW_MIN_AGE && !x->race_of)
			rates[n++] = lanes_window_rate(x, now);
	}
	for (int i = 0; i < s->n_recent; i++)
		rates[n++] = s->recent[i];
	double median = lanes_median(rates, n);
	/* When most lanes are slow, their median is slow too; what the
	 * finished requests got is what a chunk queued again (or a racer on
	 * an idle pooled connection) would get: the higher of the two. */
	if (s->n_recent >= SLOW_MIN_PEERS) {
		double done = lanes_median(s->recent, (size_t)s->n_recent);
		if (done > median)
			median = done;
	}
	bool tail = !any_pending(e) && e->n_xfers < s->limit;
	/* The frontier chunk is judged sooner: every second it spends on a
	 * slow lane, the lanes land a second's worth of bytes past it that
	 * the blob hash (and an unpack) can only take once it is in, and at
	 * the end of a blob that is the time from the last byte to the
	 * commit.  Not before 4 round trips: a request's first one has no
	 * bytes. */
	double frontier_age =
		fmax(SLOW_FRONTIER_AGE, 4 * lanes_median(s->recent_rtt, (size_t)s->n_rtt));
	for (int i = 0; i < e->n_xfers; i++) {
		struct xfer *x = e->xfers[i];
		struct blob *b = x->b;
		struct chunk *c = &b->chunks[x->chunk];
		if (xfer_race_moot(e, x))
			return true;
		if (x->racer || now - x->started < frontier_age)
			continue;
		bool frontier = x->chunk == frontier_chunk(b);
		if (!frontier && now - x->started < SLOW_MIN_AGE)
			continue;
		if (!x->ranged || b->single_stream || b->repairing || b->check || x->error_status ||
		    c->verify)
			continue;
		double rate = lanes_window_rate(x, now);
		/* Silence (nothing for half a second) is a stall, not a slow
		 * lane: --stall-timeout is the rule for that. */
		if (rate <= 0 || now - x->last_byte > SLOW_MIN_AGE / 2)
			continue;
		if (x->race_of) {
			/* A racer as slow as what it races: drop it, so the
			 * frontier can be raced again elsewhere. */
			if (lanes_is_slow(rate, median, n, tail)) {
				pp_debug("blob %s: chunk %zu: the racer is slow too (%.2f MB/s); "
					 "dropping it",
					 pp_short_digest(b->digest), x->chunk, rate / 1e6);
				curl_easy_setopt(x->h, CURLOPT_FORBID_REUSE, 1L);
				e->lanes.extra += x->got;
				xfer_free(e, x);
				return true;
			}
			continue;
		}
		/* A slow connection never goes back to the pool, acted on or not. */
		if (lanes_is_slow(rate, median, n - 1, false))
			curl_easy_setopt(x->h, CURLOPT_FORBID_REUSE, 1L);
		int64_t left = c->len - c->received;
		if (!lanes_worth_acting(rate, median, left))
			continue;
		if (!lanes_is_slow(rate, median, n - 1, tail) || !extra_allowed(e))
			continue;
		if (c->slow_acts >= SLOW_MAX_ACTS)
			continue;
		c->slow_acts++;
		if (frontier && s->racers < RACE_MAX && left <= RACE_BUF_MAX) {
			struct pp_error err = {0};
			pp_debug("blob %s: chunk %zu: the frontier chunk is slow (%.2f MB/s, "
				 "median %.2f MB/s)",
				 pp_short_digest(b->digest), x->chunk, rate / 1e6, median / 1e6);
			if (xfer_race(e, x, &err) == 0)
				s->raced++;
			else
				pp_debug("%s", err.msg);
			return true;
		}
		if (!frontier || left > RACE_BUF_MAX) {
			retire(e, x, rate, median);
			return true;
		}
	}
	return false;
}

/* The machine's CPU time so far, busy and in all (/proc/stat's first
 * line), this process's, and the machine's interrupt and softirq time,
 * in seconds; false when it cannot be read. */
static bool cpu_times(double t[4])
{
	struct timespec ts;
	long hz = sysconf(_SC_CLK_TCK);
	if (hz <= 0 || clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) < 0)
		return false;
	FILE *f = fopen("/proc/stat", "re");
	if (!f)
		return false;
	unsigned long long v[8] = {0};
	int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
		       &v[4], &v[5], &v[6], &v[7]);
	fclose(f);
	if (n < 5)
		return false;
	double all = 0;
	for (int i = 0; i < 8; i++)
		all += (double)v[i];
	t[0] = (all - (double)v[3] - (double)v[4]) / (double)hz; /* not idle, not waiting for I/O */
	t[1] = all / (double)hz;
	t[2] = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	t[3] = ((double)v[5] + (double)v[6]) / (double)hz;
	return true;
}

/* How busy the CPUs were since `then` (from cpu_times), and our share of
 * that busy time (*share); -1 when unknown.  The kernel's packet work
 * (interrupts and softirqs) is not in our process's CPU time, yet while
 * a pull runs it is mostly the pull's bytes arriving: it counts as ours
 * (a benchmark run with the server and its network on the same 2 CPUs
 * saw 14% of the busy time there and 22% in prepull itself). */
static double cpu_busy_since(const double then[4], double *share)
{
	double now[4];
	*share = 0;
	if (then[1] <= 0 || !cpu_times(now) || now[1] <= then[1])
		return -1;
	double busy = now[0] - then[0], ours = now[2] - then[2];
	if (busy <= 0)
		return -1;
	*share = (ours + now[3] - then[3]) / busy;
	return busy / (now[1] - then[1]);
}

/* The automatic count: one measurement per step, while there are chunks
 * waiting for a lane (at the end of the blobs, a step says nothing about
 * the link). */
static void autoscale(struct pp_engine *e, double now)
{
	struct lanes_state *s = &e->lanes;
	if (s->fixed || s->settled)
		return;
	bool waiting = any_pending(e);
	/* Far away, a step needs more round trips to settle (new connections'
	 * handshakes and slow start) and to be measured. */
	double rtt = lanes_median(s->recent_rtt, (size_t)s->n_rtt);
	double warm = fmax(LANES_WARM, 3 * rtt), step = fmax(LANES_STEP, 6 * rtt);
	if (s->step_bytes < 0) {
		if (s->step_at == 0)
			s->step_at = now;
		if (!waiting || e->n_xfers - s->racers < s->limit || now - s->step_at < warm)
			return;
		/* Not before the lanes deliver: a connection still being set up
		 * (or a first request the registry is slow to answer) would make
		 * the count look slower than the link.  An eighth of them may be
		 * between requests: far away each request spends a round trip
		 * before its first byte, and with many lanes (or slow ones being
		 * replaced) there is always one that does, so waiting for every
		 * lane would never measure the step. */
		int silent = 0;
		for (int i = 0; i < e->n_xfers; i++)
			silent += e->xfers[i]->got == 0;
		/* On a machine too busy to set the new connections up quickly,
		 * more stay silent; after a step's worth of waiting more, what
		 * the count delivers is measured as it is. */
		if (silent > s->limit / LANES_SILENT && now - s->step_at < warm + step)
			return;
		s->step_at = now;
		s->step_bytes = e->fetched;
		s->step_starved = false;
		if (!cpu_times(s->step_cpu))
			s->step_cpu[1] = 0;
		return;
	}
	if (!waiting)
		s->step_starved = true;
	if (now - s->step_at < step)
		return;
	if (s->step_starved) {
		s->step_bytes = -1; /* measure again */
		s->step_at = now;
		return;
	}
	double rate = (double)(e->fetched - s->step_bytes) / (now - s->step_at);
	double share = 0, busy = cpu_busy_since(s->step_cpu, &share);
	int before = s->limit;
	/* CPUs that other work keeps busy say nothing about what more
	 * connections would cost us. */
	lanes_step(s, rate, share >= LANES_CPU_OURS ? busy : -1);
	char cpu[64] = "";
	if (busy >= 0)
		snprintf(cpu, sizeof(cpu), " (CPUs %.0f%% busy, %.0f%% of it ours)", busy * 100,
			 share * 100);
	pp_debug("lanes: %d connections gave %.1f MB/s%s; %s %d", before, rate / 1e6, cpu,
		 s->settled ? "staying at" : "trying", s->limit);
	s->step_bytes = -1;
	s->step_at = now;
	curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, (long)s->limit + RACE_MAX);
}

void lanes_tick(struct pp_engine *e)
{
	double now = pp_now();
	struct lanes_state *s = &e->lanes;
	if (now - s->tick_at < LANES_TICK)
		return;
	s->tick_at = now;
	for (int i = 0; i < e->n_xfers; i++)
		lanes_sample(e->xfers[i], now);
	autoscale(e, now);
	judge(e, now);
}

void lanes_blob_done(struct pp_engine *e, struct blob *b)
{
	if (b->last_byte <= 0)
		return; /* nothing fetched by this run */
	double lag = pp_now() - b->last_byte;
	if (lag > e->lanes.commit_lag)
		e->lanes.commit_lag = lag;
	pp_debug("blob %s: committed %.3f s after its last byte", pp_short_digest(b->digest), lag);
}

void lanes_report(struct pp_engine *e)
{
	struct lanes_state *s = &e->lanes;
	pp_debug("lanes: %d connections (%s, at most %d, peak %d); %d raced (%d won), %d retired, "
		 "%lld bytes fetched twice; commits at most %.3f s after the last byte",
		 s->limit, s->fixed ? "fixed by -j" : "automatic", s->max, s->peak, s->raced,
		 s->races_won, s->retired, (long long)s->extra, s->commit_lag);
	for (size_t i = 0; i < s->n_lane; i++) {
		const struct lane *l = &s->lane[i];
		pp_debug("lane %zu (port %ld): %lld bytes in %d requests, %.1f MB/s, RTT %.1f ms, "
			 "busy %.2f s, idle %.2f s",
			 i, l->port, (long long)l->bytes, l->requests,
			 l->busy > 0 ? (double)l->bytes / l->busy / 1e6 : 0,
			 l->requests ? l->rtt_sum / l->requests * 1e3 : 0, l->busy, l->idle);
	}
	if (!e->opts->json)
		return;
	/* racers_left: racers still counted with no transfer left (0 unless
	 * the count leaked; a leak would stop racing for the rest of a run). */
	json_t *ev = json_pack("{s:s, s:i, s:b, s:i, s:i, s:i, s:i, s:i, s:I, s:i, s:f, s:i}",
			       "event", "lanes", "connections", s->limit, "automatic", !s->fixed,
			       "max_connections", s->max, "peak", s->peak, "raced", s->raced,
			       "races_won", s->races_won, "retired", s->retired, "extra_bytes",
			       (json_int_t)s->extra, "lanes_used", (int)s->n_lane, "commit_lag",
			       s->commit_lag, "racers_left", e->n_xfers == 0 ? s->racers : 0);
	char *line = ev ? json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	if (line) {
		printf("%s\n", line);
		fflush(stdout);
	}
	free(line);
	json_decref(ev);
}
