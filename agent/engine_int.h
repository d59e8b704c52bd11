/* The fetch engine's insides, shared by its files and nobody else:
 *
 *   engine.c    the scheduler: blobs queued, chunk planning, the loop that
 *               starts transfers, drains finished ones and polls; the one
 *               place a chunk's or a blob's state changes
 *   transfer.c  one range request: start it, take its bytes, judge its
 *               reply (one outcome per finished transfer) and act on it
 *   partial.c   a blob's partial file and journal: open and lock,
 *               preallocate, resume, checkpoint, commit into the store
 *   verify.c    the in-order prefix: the whole-blob hash and the prefix
 *               consumers, the digest check, and repair after a mismatch
 *   lanes.c     the connections: each transfer's rate, slow ones raced or
 *               retired, how many connections to use, per-lane stats
 *   race.c      a racer: a second request for a slow frontier chunk
 *   sources.c   which host (registry or mirror) each request goes to
 *
 * The loop thread (all of the above) moves bytes; hashing runs on the
 * hash workers (hashpool.c): a chunk's sha256 follows its bytes on disk a
 * slice behind, and the whole-blob hash reads back done chunks in order.
 *
 * Invariants the files rely on:
 *   - the whole-blob hash covers whole DONE chunks only: bytes [0, hashed)
 *     and those a worker is hashing are on disk and never written again
 *     unless the hash starts over first (prefix_restart);
 *   - a hash a worker holds is touched by nobody else (digest.h waits),
 *     and no worker reads a blob's file once it is closed (partial_close
 *     waits for them);
 *   - a chunk's digest is known (journal, repair) once the workers are
 *     through it (digest_pending); a blob whose hash matches is committed
 *     without the ones still coming, a repair waits for all of them;
 *   - consumers are fed in order, never past the landed prefix, and go
 *     back when bytes they took are fetched again (prefix_rewind);
 *   - a chunk is ACTIVE exactly while one transfer writes it (a racer
 *     only buffers its bytes; they reach the file once the chunk's own
 *     transfer is gone);
 *   - first_pending never points past a PENDING chunk. */
#ifndef PREPULL_ENGINE_INT_H
#define PREPULL_ENGINE_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <curl/curl.h>

#include "prepull/digest.h"
#include "prepull/engine.h"
#include "prepull/error.h"
#include "prepull/http.h"
#include "prepull/prefix.h"
#include "prepull/util.h"

#define MIB (1024 * 1024)
#define CHUNK_MIN (1 * MIB)
#define CHUNK_MAX (4 * MIB)
#define REPAIR_PASSES 2          /* chunk-by-chunk refetches after a digest mismatch */
#define REPAIR_AHEAD 2           /* chunks in flight past the hash while repairing */
#define RECV_BUFFER (128 * 1024) /* curl's receive buffer: the per-connection memory */
#define HASH_BUFFER (1 * MIB)    /* read-back buffer for the whole-blob hash */
#define CDN_URL_MAX_AGE 300.0    /* reuse a redirect target this long at most */
#define ERROR_BODY_MAX 4096
#define HASH_BUDGET (64 * MIB) /* bytes read back per loop turn, so transfers keep flowing */
#define HASH_SLICE (1 * MIB)   /* a chunk's bytes handed to a hash worker at once */
/* Done chunks one blob-hash job takes.  The loop posts the next job only
 * when it has seen the last one end, and meanwhile the worker takes chunk
 * hashes: with 32 MiB jobs a download that kept both CPUs busy (no cap, 16
 * connections) left the blob hash 230-560 MB behind its last byte.  Long
 * jobs keep it close; a close cuts a running one short (hashpool_cancel). */
#define HASH_JOB_MAX (256 * MIB)
#define BUSY_RETRY 1.0 /* seconds between looks at a blob another run holds */
#define MOVED_MAX 100  /* opens that found the file replaced before the blob fails */
#define FD_RESERVE 64  /* descriptors kept free for everything but blob files */

/* lanes.c: slow transfers, racing, the connection count. */
#define RATE_SAMPLES 16        /* a transfer's (time, bytes) samples: its sliding window */
#define RATE_WINDOW 1.0        /* seconds a transfer's rate is taken over */
#define LANES_TICK 0.1         /* seconds between samples */
#define SLOW_MIN_AGE 1.0       /* a transfer is judged only after this long ... */
#define SLOW_FRONTIER_AGE 0.4  /* ... the frontier chunk's after this (or 4 round trips) */
#define LANES_HOLD 0.5         /* seconds a retired lane's slot may wait for a pooled connection */
#define SLOW_FRACTION 3.0      /* slow: under 1/SLOW_FRACTION of the peers' median */
#define SLOW_TAIL_FRACTION 2.0 /* ... or 1/2 near the end, when lanes stand idle */
#define SLOW_MIN_PEERS 3       /* rates the median needs besides the judged one */
#define SLOW_MIN_GAIN 0.5      /* seconds acting must save at least */
#define SLOW_MAX_ACTS 3        /* races and retirements of one chunk at most */
#define RACE_MAX 1             /* racers at once: each buffers its range (memory) */
#define RACE_BUF_MAX CHUNK_MAX /* a longer remaining range is retired, not raced */
#define RECENT_RATES 16        /* finished transfers' rates kept for the median */
#define LANES_NEAR_RTT 0.0125  /* a registry this far or nearer: the count starts at 8 ... */
#define LANES_FAR_START 4.0    /* ... farther, at 8 x round trip / LANES_NEAR_RTT, up to this x 8 */
#define LANES_FIRST_GROW 4.0   /* the first step multiplies the count by this, */
#define LANES_GROW 2.0         /* each later one by this ... */
#define LANES_GAIN 1.10        /* ... and is kept only if the rate rose this much */
#define LANES_STEP 0.3         /* seconds of measurement per step */
#define LANES_WARM 0.1         /* seconds after a step before measuring ... */
#define LANES_SILENT 8         /* ... with at most 1/8 of the lanes not yet delivering */
#define LANES_CPU_FULL 0.9     /* a step with the machine's CPUs this busy ... */
#define LANES_CPU_OURS 0.25    /* ... and this share of it ours is the last */
#define SPAN_RTTS 16           /* a request carries this many round trips of data ... */
#define SPAN_MAX (64 * MIB)    /* ... up to this much */

enum chunk_state { CHUNK_PENDING, CHUNK_ACTIVE, CHUNK_DONE };

struct chunk {
	int64_t off;
	int64_t len;
	int64_t received; /* bytes of this chunk on disk, from off */
	enum chunk_state state;
	int attempts;
	double not_before;
	struct pp_sha256 *sha;              /* while receiving; a hash worker's at times */
	bool digest_pending;                /* done; its sha256 still with the workers */
	char digest[PP_DIGEST_STR_LEN + 1]; /* once done; while repairing, the last fetch's */
	bool verify; /* done in an earlier run: its bytes must match `digest` first */
	struct pp_sha256 *resume_hash; /* blob hash before this chunk, while verifying */
	int64_t checkpoint;            /* `received` at the last journal checkpoint */
	int slow_acts;                 /* times a slow transfer of it was raced or retired */
	size_t from;                   /* sources.c: 1 + the source `digest` is of, 0 unknown */
	size_t from_new;               /* sources.c: 1 + the source of the bytes being hashed */
};

struct waiter {
	pp_blob_cb cb;
	void *ctx;
	struct waiter *next;
};

/* A prefix consumer and how far it has been fed. */
struct consumer_slot {
	struct pp_prefix_consumer c;
	int64_t pos;
};

enum blob_state { BLOB_QUEUED, BLOB_RUNNING, BLOB_DONE, BLOB_FAILED };

/* Another registry or repository whose image lists a blob (engine_add_origin). */
struct blob_origin {
	struct pp_registry *reg;
	char *repo;
};

struct blob {
	char digest[PP_DIGEST_STR_LEN + 1];
	int64_t size;
	struct pp_registry *reg;
	char *repo;
	char *url;
	char *cdn_url; /* where the registry last redirected us */
	double cdn_since;
	char *partial;
	char *journal;
	int fd;
	int jfd;
	pid_t held_by; /* another prepull holds this blob's partial file */
	int moved;     /* times the partial file changed between our open and our lock */
	double next_try;
	int64_t chunk_size;
	size_t n_chunks;
	struct chunk *chunks;
	size_t first_pending; /* chunks before it are not PENDING */
	struct pp_sha256 *hash;
	int64_t hashed;             /* whole-blob hash covers [0, hashed) */
	size_t hash_chunk;          /* the chunk `hashed` is in; earlier ones are DONE */
	struct pp_sha256 *frontier; /* unused: the hash enters no chunk before it is done */
	size_t digests_pending;     /* chunks with digest_pending */
	double chunk_done_at;       /* when a chunk was last done (its last byte in) */
	struct consumer_slot *consumers;
	size_t n_consumers;
	bool single_stream; /* the server ignores Range */
	int restarts;       /* single stream: times it broke and had to start over */
	int64_t kept_max;   /* most bytes with known hashes the partial file held */
	double progress_at; /* when kept_max (or a finished chunk) last grew */
	int active;
	int repairs;             /* repair passes started after a digest mismatch */
	bool repairing;          /* chunks come again in order, compared with their digests */
	size_t changed;          /* chunks that came back different in this pass */
	size_t check_from;       /* once the hash reaches this chunk, try the file as it is */
	struct pp_sha256 *check; /* the blob hash over the rest of the file, while trying */
	int64_t check_pos;       /* the file is hashed into `check` up to here */
	enum blob_state state;
	int64_t fetched; /* downloaded by this run */
	int64_t redone;  /* of those, bytes a repair pass is fetching again */
	int64_t resumed; /* done in earlier runs, verified or still to verify */
	double started;
	double last_byte;  /* when its last transfer ended (for the commit lag) */
	int64_t unflushed; /* bytes of chunks done since its last early flush */
	bool lag_noted;
	struct waiter *waiters;
	struct pp_error err;
	size_t src;                  /* the first host still in play (sources.c) */
	struct blob_origin *origins; /* tried after the first one's hosts */
	size_t n_origins;
	struct blob_src *srcs; /* sources.c: each source's standing for this blob */
	size_t n_srcs;
	size_t cdn_src; /* the source whose redirect cdn_url is */
};

struct xfer {
	struct pp_engine *e;
	CURL *h;
	struct blob *b;
	size_t chunk; /* the chunk its bytes go to now */
	size_t last;  /* a span: the request covers chunks [chunk, last], all ACTIVE */
	int64_t want_start, want_end; /* the range asked for */
	struct curl_slist *hdrs;
	char *authz; /* the Authorization line sent, NULL for none */
	char errbuf[CURL_ERROR_SIZE];
	struct pp_http_response resp;
	bool via_cdn;
	bool ranged;
	bool checked;      /* status and Content-Range looked at */
	bool error_status; /* body is an error document, not blob bytes */
	bool range_ignored;
	int64_t wrong_size; /* the server's size for the blob, when not the manifest's */
	int64_t got;        /* blob bytes this request delivered */
	long redirects;     /* redirects curl followed for it */
	double last_byte;   /* when the last byte (or the request) went out */
	bool stalled;
	int io_errno;         /* writing the partial file failed */
	bool consumer_failed; /* a prefix consumer refused the bytes: consumer_err */
	struct pp_error consumer_err;
	char bad_reply[256];
	struct pp_buf errbody;
	size_t src;                     /* the host it asks: the src-th of blob_host() */
	struct pp_registry *reg;        /* that host (a mirror, or a registry) */
	const char *repo;               /* the repository there (the blob's) */
	char *url;                      /* the blob's URL there */
	double started;                 /* when the request went out */
	double rate_t[RATE_SAMPLES];    /* sliding window: when ... */
	int64_t rate_got[RATE_SAMPLES]; /* ... `got` was what */
	int rate_n, rate_next;
	struct xfer *racer;   /* a second request for this one's remaining range */
	struct xfer *race_of; /* set on a racer: the transfer it races */
	int64_t race_pos;     /* a racer's range: [race_pos, race_end] */
	int64_t race_end;
	unsigned char *race_buf; /* its bytes, until it wins or is dropped */
	int64_t race_got;
	bool race_bad; /* its reply was not the range asked for */
};

/* One TCP connection (told apart by its local port): what it carried. */
struct lane {
	long port;
	int64_t bytes;
	int requests;
	double busy;     /* first byte to last byte of its requests */
	double idle;     /* between one request's last byte and the next request */
	double rtt_sum;  /* request sent to first byte, summed */
	double last_end; /* its last request's end */
};

struct lanes_state {
	int limit; /* connections the scheduler uses now */
	int max;   /* --max-connections, or -j */
	bool fixed;
	bool settled; /* the automatic count stopped growing */
	bool started; /* lanes_start ran */
	int peak;
	int prev_limit;
	double tick_at;
	double step_at;              /* the current step's measurement began */
	int64_t step_bytes;          /* e->fetched then; -1 while warming up */
	double step_rate;            /* the rate the count before the last step gave */
	bool step_starved;           /* a lane had no chunk to fetch during the step */
	double step_cpu[4];          /* cpu_times then: busy, all, ours, irq + softirq */
	double recent[RECENT_RATES]; /* finished transfers' rates */
	int n_recent, recent_next;
	double recent_rtt[RECENT_RATES]; /* and their request-to-first-byte times */
	int n_rtt, rtt_next;
	int64_t extra; /* bytes fetched twice: racers' overlap and losers */
	int raced, races_won, retired;
	int held;          /* slots a retirement left empty until a transfer finishes */
	double held_at;    /* ... since then (at most LANES_HOLD) */
	double commit_lag; /* longest time from a blob's last byte to its commit */
	int racers;
	struct lane *lane;
	size_t n_lane;
};

/* A source's standing for one blob (sources.c's; here for the unit test). */
struct blob_src {
	bool ranged;       /* answered a range of this blob with a 206 */
	bool dropped;      /* failed this blob: not asked for it again */
	int active;        /* this blob's transfers to it */
	int ignored;       /* times it ignored Range for this blob */
	double not_before; /* left alone until then (it ignored Range) */
	double fill_since; /* --cache-fill wait: first whole-blob answer, 0 none */
};

struct host_count {
	const struct pp_registry *reg;
	int n;
	double rate;       /* sources.c: bytes/s per connection, recent transfers */
	bool dropped;      /* sources.c: served bytes that differ: not asked again */
	bool fill_gave_up; /* sources.c: a mirror a blob waited for in vain (--cache-fill) */
};

struct pp_engine {
	const struct pp_options *opts;
	struct pp_store *store;
	struct pp_progress *progress;
	CURLM *multi;
	struct blob **blobs;
	size_t n_blobs;
	struct xfer **xfers; /* active, at most opts->connections */
	int n_xfers;
	struct host_count *hosts;
	size_t n_hosts;
	int64_t fetched;
	int64_t resumed;
	int64_t redone;  /* what repair passes fetch again, left out of progress */
	size_t max_open; /* blobs with their files open at once (fds are limited) */
	int run_lock;    /* the staging dir's run lock, held shared (partial.h) */
	unsigned char *hashbuf;
	struct pp_sha256 *scratch; /* for digests of a running hash */
	struct lanes_state lanes;
	struct hashpool *pool;   /* the hash workers, started with the first job */
	struct flusher *flusher; /* flushes partial files early (flusher.h), from the first */
	double loop_cpu;         /* CPU seconds of the loop thread in pp_engine_run */
};

/* ---- engine.c: the scheduler and the state of chunks and blobs ---- */

/* The one place a chunk's state changes (logged under -v with the caller's
 * line).  Keeps first_pending right. */
#define chunk_set_state(b, ci, s) chunk_set_state_at((b), (ci), (s), __func__, __LINE__)
void chunk_set_state_at(struct blob *b, size_t ci, enum chunk_state s, const char *fn, int line);
/* The one place a blob's state changes.  DONE and FAILED tell the images
 * that wait for it (FAILED with b->err). */
#define blob_set_state(b, s) blob_set_state_at((b), (s), __func__, __LINE__)
void blob_set_state_at(struct blob *b, enum blob_state s, const char *fn, int line);

/* How big a chunk a blob of `size` bytes gets (the --chunk-size, or
 * adaptive to the connection count), never more chunks than a journal
 * holds. */
int64_t engine_pick_chunk_size(const struct pp_options *opts, int64_t size);
/* Cuts a blob into chunks of chunk_size (0: chosen here); every chunk
 * PENDING, the hash and the consumers from byte 0.  A blob is planned when
 * it starts (partial_open), not when it is queued, and its plan goes when
 * it is done or failed: memory follows the blobs open at once. */
void engine_plan_chunks(struct pp_engine *e, struct blob *b, int64_t chunk_size);
/* Connections in use to a registry. */
int *engine_host_slot(struct pp_engine *e, const struct pp_registry *reg);
/* Stops every transfer of a blob; their chunks go back to PENDING. */
void engine_cancel_blob_xfers(struct pp_engine *e, struct blob *b);
/* Cancels the blob's transfers (checkpointing what they brought), closes
 * its files and reports err to its images.  The partial file and journal
 * stay: every verified byte is kept for the next run (`prepull prune`
 * removes what no run wants); a file with none in it goes (it only held
 * the preallocated space). */
void engine_fail_blob(struct pp_engine *e, struct blob *b, const struct pp_error *err);
/* The same for a blob whose bytes are provably bad (its digest does not
 * match after repair): the partial file and journal go. */
void engine_discard_blob(struct pp_engine *e, struct blob *b, const struct pp_error *err);
/* Whether a blob has gone --give-up-after without progress: new bytes with
 * known hashes kept in its partial file (bytes received and then thrown
 * away do not count), or a finished chunk.  Called when a request failed. */
bool engine_gave_up(struct pp_engine *e, struct blob *b);

/* ---- transfer.c: one range request ---- */

/* Another registry or repository whose image lists blob b: its hosts are
 * tried when b's own fail it (repo is copied). */
void engine_add_origin(struct blob *b, struct pp_registry *reg, const char *repo);
/* The blob's bytes do not hash to its digest (`got`): when its current host
 * is a mirror and another host follows, the mirror is named and dropped
 * for this blob.  True when the blob moved to the next host. */
bool engine_blame_host(struct pp_engine *e, struct blob *b, const char *got);
/* The src-th host a blob may come from: the first registry's mirrors and
 * itself, then each other origin's; NULL past the last. */
struct pp_registry *blob_host(const struct blob *b, size_t src, const char **repo);

/* Starts fetching chunks [ci, last] of b in one request (the rest of ci,
 * after a checkpoint; the others whole). */
int xfer_start(struct pp_engine *e, struct blob *b, size_t ci, size_t last, struct pp_error *err);
/* Judges a finished transfer and acts on the outcome; frees x. */
void xfer_finish(struct pp_engine *e, struct xfer *x, CURLcode rc);
/* Cancels a transfer that received nothing for --stall-timeout. */
void xfer_stalled(struct pp_engine *e, struct xfer *x);
/* Takes a transfer out of the loop and frees it. */
void xfer_free(struct pp_engine *e, struct xfer *x);
/* For race.c: a new request for [start, end] of chunk ci, not yet added
 * to the multi handle; out of the loop; freed; a chunk whose bytes are all
 * in (its digest to the journal, the blob hash moves on). */
struct xfer *xfer_new(struct pp_engine *e, struct blob *b, size_t ci, int64_t start, int64_t end,
		      struct pp_error *err);
void xfer_detach(struct pp_engine *e, struct xfer *x);
void xfer_destroy(struct xfer *x);
void chunk_done(struct pp_engine *e, struct xfer *x);

/* ---- race.c: a second request for the frontier chunk ---- */

/* Starts a racer for x's remaining range on another connection (an idle
 * pooled one when there is one). */
int xfer_race(struct pp_engine *e, struct xfer *x, struct pp_error *err);
/* Drops a racer whose raced transfer finished the chunk first; true if
 * it did. */
bool xfer_race_moot(struct pp_engine *e, struct xfer *r);
/* A racer is over: it won (its bytes go to the file, the raced transfer is
 * stopped) or it is dropped; frees it. */
void xfer_race_finish(struct pp_engine *e, struct xfer *r, CURLcode rc);

/* ---- lanes.c: the connections ---- */

void lanes_init(struct pp_engine *e);
void lanes_free(struct pp_engine *e);
/* Once per loop turn: samples rates, races or retires slow transfers,
 * and steps the automatic connection count. */
void lanes_tick(struct pp_engine *e);
/* A transfer leaves the loop: its lane's stats and its rate for the median. */
void lanes_note_end(struct pp_engine *e, const struct xfer *x);
/* A blob is committed: how long after its last byte (-v, and the most of
 * them in the lanes event). */
void lanes_blob_done(struct pp_engine *e, struct blob *b);
/* -v lines per lane and the --json "lanes" event. */
void lanes_report(struct pp_engine *e);
/* Pure pieces, for the unit tests. */
double lanes_median(const double *v, size_t n);
/* The rate over the sliding window (bytes/s), from a transfer's samples. */
double lanes_window_rate(const struct xfer *x, double now);
void lanes_sample(struct xfer *x, double now);
/* Whether `rate` is slow beside the peers' median (tail: lanes stand idle). */
bool lanes_is_slow(double rate, double median, size_t peers, bool tail);
/* Whether racing or retiring a transfer of `rate` with `left` bytes to go
 * saves enough beside a lane of `median` (bytes/s). */
bool lanes_worth_acting(double rate, double median, int64_t left);
/* The automatic count after one step measured `rate` (bytes/s) with the
 * CPUs `cpu_busy` (0..1, or -1: not known or not ours); a step that gained
 * multiplies the count by LANES_FIRST_GROW the first time, by LANES_GROW
 * after. */
int lanes_step(struct lanes_state *s, double rate, double cpu_busy);
/* The automatic count's first value: base, or more for a registry rtt
 * seconds away; at most half of max (a step still has room). */
int lanes_start_count(int base, int max, double rtt);
/* Before the first transfer: the automatic count from the blobs'
 * registries' round trips (lanes_start_count). */
void lanes_start(struct pp_engine *e);
/* How many chunks of chunk_len one request should cover on a lane of
 * `rate` bytes/s and `rtt` seconds from request to first byte, with
 * `pending` chunks left for `lanes` lanes. */
size_t lanes_span(double rate, double rtt, int64_t chunk_len, size_t pending, int lanes);
/* The last chunk a request starting at chunk ci of b should cover. */
size_t lanes_span_end(struct pp_engine *e, struct blob *b, size_t ci, double now);

/* What a finished transfer means, decided once from everything it saw. */
enum xfer_outcome {
	XO_DONE,             /* the chunk's bytes are all in */
	XO_LOCAL_IO,         /* writing the partial file failed: the blob fails */
	XO_WRONG_SIZE,       /* the server's blob size is not the manifest's: fails */
	XO_RANGE_IGNORED,    /* a 200 with the whole blob: fetch it as one stream */
	XO_TLS,              /* TLS failure: retrying cannot help */
	XO_REDIRECT_EXPIRED, /* a redirect target refused: ask the registry again */
	XO_UNAUTHORIZED,     /* 401: renew credentials, then retry */
	XO_REFUSED,          /* another 4xx: the blob fails */
	XO_RETRY,            /* transient (transport, 5xx, 429, 408, short body) */
	XO_STOPPED,          /* a signal or the deadline aborted it: keep what it brought */
};
const char *xfer_outcome_name(enum xfer_outcome o);
/* Pure: the outcome for a transfer's facts, as curl and the write callback
 * left them (rc: curl's result; complete: every byte of the chunk in). */
enum xfer_outcome xfer_classify(const struct xfer *x, CURLcode rc, bool complete);

/* ---- partial.c: the partial file and the journal ---- */

enum partial_open_result {
	PARTIAL_OPENED, /* locked, resumed or started, the blob is RUNNING */
	PARTIAL_BUSY,   /* another prepull run holds it (b->held_by) */
	PARTIAL_MOVED,  /* the file moved on under us, or the store has the blob now */
};
/* Opens a blob's partial file (locked against other prepull runs) and
 * journal, resuming an earlier run's work when it is there. */
int partial_open(struct pp_engine *e, struct blob *b, enum partial_open_result *out,
		 struct pp_error *err);
/* Closes the blob's files; with `discard` the partial file and journal go
 * too (only for bytes that are provably bad, or a file this run created
 * and never wrote). */
void partial_close(struct pp_engine *e, struct blob *b, bool discard);
/* A chunk's bytes are all in the file: starts writing them back, and has
 * the file flushed every PP_FLUSH_EVERY bytes (flusher.h). */
void partial_chunk_written(struct pp_engine *e, struct blob *b, size_t ci);
/* Starts a blob's journal over, for a new chunk plan. */
int partial_restart_journal(struct blob *b, struct pp_error *err);
/* Records how far a chunk being received has come (what a kill may cost is
 * the bytes since). */
void partial_checkpoint(struct pp_engine *e, struct blob *b, size_t ci);
/* The same without waiting: records as far as the chunk's hash has come
 * (when no worker holds it and it came further than the last one). */
void partial_checkpoint_hashed(struct pp_engine *e, struct blob *b, size_t ci);
/* Bytes between two checkpoints of a chunk being received. */
int64_t partial_checkpoint_every(const struct blob *b);
/* Reads [pos, end) of the partial file into e->hashbuf, as much as fits.
 * Returns the bytes read (> 0), or -1 with err set. */
ssize_t partial_read(struct pp_engine *e, struct blob *b, int64_t pos, int64_t end,
		     struct pp_error *err);
/* Before any download starts: fails the queued blobs that the free space
 * of the staging dir's filesystem cannot hold (statvfs), in queue order;
 * a blob that fits keeps its place. */
void partial_check_space(struct pp_engine *e);
/* Syncs the verified file and moves it into the store; the blob is DONE.
 * A file the store refused stays on disk for the next run. */
void partial_commit(struct pp_engine *e, struct blob *b);

/* ---- verify.c: the in-order prefix ---- */

/* The whole-blob hash (and the consumers) start over from byte 0. */
void prefix_restart(struct blob *b);
/* `len` bytes at `pos`, just written by a transfer: to every consumer
 * that has everything before them. */
int prefix_feed(struct blob *b, int64_t pos, const void *data, size_t len, struct pp_error *err);
/* Chunk ci's bytes are going to be fetched again: consumers that took
 * any go back. */
void prefix_rewind(struct blob *b, size_t ci);
/* Chunk ci received more: hands a slice of it to a hash worker when one
 * has gathered, and checkpoints what is hashed. */
void chunk_hash_more(struct pp_engine *e, struct blob *b, size_t ci);
/* Chunk ci is DONE: its digest is finalised (journal, repair) once the
 * workers are through its bytes. */
void chunk_hash_done(struct pp_engine *e, struct blob *b, size_t ci);
/* The same from inside curl's write callback: the loop's next
 * verify_blob finalises it. */
void chunk_hash_done_later(struct blob *b, size_t ci);
/* Brings chunk ci's hash up to what it received, on this thread (for a
 * checkpoint when stopping). */
void chunk_hash_settle(struct pp_engine *e, struct blob *b, size_t ci);
/* Waits until no worker hashes the blob's bytes (before its file closes). */
void prefix_quiesce(struct blob *b);
/* Moves the blob's hash along (on the workers) and the consumers (within
 * *budget bytes read back), finalises chunk digests, and commits or
 * repairs the blob when it is complete.  Returns true when the loop has
 * work left for the next turn (a worker's job ending wakes it anyway). */
bool verify_blob(struct pp_engine *e, struct blob *b, int64_t *budget);
/* Tells every consumer that the blob is over. */
void prefix_finish(struct pp_engine *e, struct blob *b, bool verified);
/* Logs (under -v) the loop thread's and the hash workers' CPU time. */
void verify_report_cpu(struct pp_engine *e);

/* ---- sources.c: several sources for one blob ---- */

/* Whether some source of b can take a request now (*wake: when one may). */
bool sources_ready(struct pp_engine *e, struct blob *b, double now, double *wake);
/* ... and for chunk ci of a repair: a source other than the chunk's first
 * one, while another is in play. */
bool sources_ready_for(struct pp_engine *e, struct blob *b, size_t ci, double now, double *wake);
/* The source for a request for chunk ci: x->src, x->reg, x->repo. */
void sources_pick(struct pp_engine *e, struct blob *b, size_t ci, struct xfer *x);
/* A transfer joins / leaves the loop: connection counts per host, and the
 * host's measured rate. */
void sources_started(struct pp_engine *e, struct xfer *x);
void sources_detached(struct pp_engine *e, struct xfer *x);
/* The transfer's source answered a range with a range. */
void sources_ranged(struct xfer *x);
/* The transfer brought its chunk: the chunk remembers the source. */
void sources_chunk_done(struct xfer *x);
/* A done chunk's digest is known (`differs`: a repair brought bytes
 * unlike the last fetch's): when the two fetches came from different
 * hosts, the one to blame is named and dropped for the rest of the run. */
void sources_chunk_final(struct pp_engine *e, struct blob *b, size_t ci, bool differs);
/* The source failed the blob (fall-through, `why`): not asked for it
 * again.  False when it was out of play already. */
bool sources_drop(struct pp_engine *e, struct blob *b, size_t src, const char *why);
/* Host h was dropped for blob b for its bytes (engine_blame_host): --json. */
void sources_blamed(struct pp_engine *e, struct blob *b, const struct pp_registry *h,
		    const char *why);
/* Appends to an error's source the hosts of b dropped for their bytes. */
void sources_name_dropped(struct pp_engine *e, struct blob *b, char *buf, size_t n);
/* True when b has one source in play (no other to compare with). */
bool sources_single(struct pp_engine *e, struct blob *b);
/* A mirror ignored Range while other sources have the blob: the chunk
 * goes back to the queue and, by --cache-fill, the blob waits for the
 * mirror to fill it, or the mirror is left alone for a backoff.  False
 * when the blob must be fetched as one stream instead. */
bool sources_range_ignored(struct pp_engine *e, struct xfer *x);

#endif
