/* The fetch engine.  Three steps per turn, as in curl's 10-at-a-time:
 * start transfers up to the limits, drain the finished ones (retry or give
 * up), poll.  Per-transfer state hangs off CURLOPT_PRIVATE. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "prepull/digest.h"
#include "prepull/engine.h"
#include "prepull/error.h"
#include "prepull/http.h"
#include "prepull/journal.h"
#include "prepull/log.h"
#include "prepull/options.h"
#include "prepull/progress.h"
#include "prepull/registry.h"
#include "prepull/stop.h"
#include "prepull/store.h"
#include "prepull/util.h"

#define MIB (1024 * 1024)
#define CHUNK_MIN (1 * MIB)
#define CHUNK_MAX (16 * MIB)
#define CHUNK_ATTEMPTS 7         /* tries without progress before the blob fails */
#define REPAIR_PASSES 2          /* chunk-by-chunk refetches after a digest mismatch */
#define REPAIR_AHEAD 2           /* chunks in flight past the hash while repairing */
#define RECV_BUFFER (128 * 1024) /* curl's receive buffer: the per-connection memory */
#define HASH_BUFFER (1 * MIB)    /* read-back buffer for the whole-blob hash */
#define CDN_URL_MAX_AGE 300.0    /* reuse a redirect target this long at most */
#define ERROR_BODY_MAX 4096
#define HASH_BUDGET (64 * MIB) /* bytes read back per loop turn, so transfers keep flowing */
#define BUSY_RETRY 1.0         /* seconds between looks at a blob another run holds */
#define MOVED_MAX 100          /* opens that found the file replaced before the blob fails */

enum chunk_state { CHUNK_PENDING, CHUNK_ACTIVE, CHUNK_DONE };

struct chunk {
	int64_t off;
	int64_t len;
	int64_t received; /* bytes of this chunk on disk, from off */
	enum chunk_state state;
	int attempts;
	double not_before;
	struct pp_sha256 *sha;              /* while receiving */
	char digest[PP_DIGEST_STR_LEN + 1]; /* once done; while repairing, the last fetch's */
	bool verify; /* done in an earlier run: its bytes must match `digest` first */
	struct pp_sha256 *resume_hash; /* blob hash before this chunk, while verifying */
	int64_t checkpoint;            /* `received` at the last journal checkpoint */
};

struct waiter {
	pp_blob_cb cb;
	void *ctx;
	struct waiter *next;
};

enum blob_state { BLOB_QUEUED, BLOB_RUNNING, BLOB_DONE, BLOB_FAILED };

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
	struct pp_sha256 *frontier; /* the blob hash at the start of chunk hash_chunk */
	bool single_stream;         /* the server ignores Range */
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
	struct waiter *waiters;
	struct pp_error err;
};

struct xfer {
	struct pp_engine *e;
	CURL *h;
	struct blob *b;
	size_t chunk;
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
	double last_byte;   /* when the last byte (or the request) went out */
	bool stalled;
	int io_errno;
	char bad_reply[256];
	struct pp_buf errbody;
};

struct host_count {
	const struct pp_registry *reg;
	int n;
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
	int64_t redone; /* what repair passes fetch again, left out of progress */
	unsigned char *hashbuf;
	struct pp_sha256 *scratch; /* for digests of a running hash */
};

static int *host_slot(struct pp_engine *e, const struct pp_registry *reg)
{
	for (size_t i = 0; i < e->n_hosts; i++)
		if (e->hosts[i].reg == reg)
			return &e->hosts[i].n;
	e->hosts = realloc(e->hosts, (e->n_hosts + 1) * sizeof(*e->hosts));
	if (!e->hosts)
		abort();
	e->hosts[e->n_hosts] = (struct host_count){reg, 0};
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
	curl_multi_setopt(e->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)opts->connections);
	curl_multi_setopt(e->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)opts->per_host);
	curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, (long)opts->connections);
	e->xfers = pp_xcalloc((size_t)opts->connections, sizeof(*e->xfers));
	e->hashbuf = pp_xmalloc(HASH_BUFFER);
	e->scratch = pp_sha256_new();
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

static int64_t pick_chunk_size(const struct pp_engine *e, int64_t size)
{
	int64_t floor = (size + PP_JOURNAL_MAX_CHUNKS - 1) / PP_JOURNAL_MAX_CHUNKS;
	if (e->opts->chunk_size > 0)
		return e->opts->chunk_size > floor ? e->opts->chunk_size : floor;
	int64_t c = size / ((int64_t)e->opts->connections * 4);
	c = (c + MIB - 1) / MIB * MIB;
	if (c < CHUNK_MIN)
		c = CHUNK_MIN;
	if (c > CHUNK_MAX)
		c = CHUNK_MAX;
	return c;
}

/* The whole-blob hash starts over from byte 0. */
static void restart_hash(struct blob *b)
{
	b->hashed = 0;
	b->hash_chunk = 0;
	pp_sha256_free(b->hash);
	pp_sha256_free(b->frontier);
	b->hash = pp_sha256_new();
	b->frontier = pp_sha256_new();
}

/* Cuts a blob into chunks of chunk_size (0: chosen here). */
static void plan_chunks(struct pp_engine *e, struct blob *b, int64_t chunk_size)
{
	for (size_t i = 0; i < b->n_chunks; i++) {
		pp_sha256_free(b->chunks[i].sha);
		pp_sha256_free(b->chunks[i].resume_hash);
	}
	free(b->chunks);
	b->chunk_size = chunk_size > 0 ? chunk_size : pick_chunk_size(e, b->size);
	b->n_chunks = b->size ? (size_t)((b->size + b->chunk_size - 1) / b->chunk_size) : 0;
	b->chunks = pp_xcalloc(b->n_chunks ? b->n_chunks : 1, sizeof(*b->chunks));
	for (size_t i = 0; i < b->n_chunks; i++) {
		struct chunk *c = &b->chunks[i];
		c->off = (int64_t)i * b->chunk_size;
		c->len = c->off + b->chunk_size > b->size ? b->size - c->off : b->chunk_size;
	}
	b->first_pending = 0;
	restart_hash(b);
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
	plan_chunks(e, b, 0);
	e->blobs = realloc(e->blobs, (e->n_blobs + 1) * sizeof(*e->blobs));
	if (!e->blobs)
		abort();
	e->blobs[e->n_blobs++] = b;
	return 0;
}

static void notify(struct blob *b, const struct pp_error *err)
{
	double secs = pp_now() - b->started;
	for (struct waiter *w = b->waiters; w; w = w->next)
		w->cb(w->ctx, b->digest, b->size, b->fetched, secs, err);
}

/* Takes a transfer out of the loop; its memory stays until xfer_destroy. */
static void xfer_detach(struct pp_engine *e, struct xfer *x)
{
	curl_multi_remove_handle(e->multi, x->h);
	for (int i = 0; i < e->n_xfers; i++) {
		if (e->xfers[i] == x) {
			e->xfers[i] = e->xfers[--e->n_xfers];
			break;
		}
	}
	x->b->active--;
	(*host_slot(e, x->b->reg))--;
}

static void xfer_destroy(struct xfer *x)
{
	curl_easy_cleanup(x->h);
	curl_slist_free_all(x->hdrs);
	free(x->authz);
	pp_http_response_reset(&x->resp);
	pp_buf_free(&x->resp.body);
	pp_buf_free(&x->errbody);
	free(x);
}

static void xfer_free(struct pp_engine *e, struct xfer *x)
{
	xfer_detach(e, x);
	xfer_destroy(x);
}

/* Stops every transfer of a blob; their chunks go back to PENDING. */
static void cancel_blob_xfers(struct pp_engine *e, struct blob *b)
{
	for (int i = e->n_xfers - 1; i >= 0; i--) {
		struct xfer *x = e->xfers[i];
		if (x->b != b)
			continue;
		struct chunk *c = &b->chunks[x->chunk];
		c->state = CHUNK_PENDING;
		if (x->chunk < b->first_pending)
			b->first_pending = x->chunk;
		xfer_free(e, x);
		i = e->n_xfers; /* the array was compacted: rescan */
	}
}

/* Closes a blob's files.  With `discard`, its partial file and journal go
 * too (a failed blob); otherwise they stay for the next run. */
static void close_blob(struct blob *b, bool discard)
{
	if (discard && b->partial && b->fd >= 0) {
		/* Before the close drops our lock, so no other run takes over
		 * files that are about to go. */
		unlink(b->journal);
		unlink(b->partial);
	}
	if (b->fd >= 0)
		close(b->fd); /* also drops our lock on it */
	if (b->jfd >= 0)
		close(b->jfd);
	b->fd = b->jfd = -1;
	pp_sha256_free(b->check);
	b->check = NULL;
	for (size_t i = 0; i < b->n_chunks; i++) {
		pp_sha256_free(b->chunks[i].sha);
		pp_sha256_free(b->chunks[i].resume_hash);
		b->chunks[i].sha = NULL;
		b->chunks[i].resume_hash = NULL;
	}
}

static void fail_blob(struct pp_engine *e, struct blob *b, const struct pp_error *err)
{
	cancel_blob_xfers(e, b);
	close_blob(b, true);
	b->state = BLOB_FAILED;
	b->err = *err;
	/* The images that wanted the blob report the failure, once each. */
	pp_debug("%s", err->msg);
	notify(b, &b->err);
}

static int preallocate(struct pp_engine *e, struct blob *b, struct pp_error *err)
{
	if (b->size == 0)
		return 0;
	int r = posix_fallocate(b->fd, 0, b->size);
	if (r == 0)
		return 0;
	errno = r;
	if (r != ENOSPC)
		return pp_error_errno(err, "preallocate %s (%lld bytes)", b->partial,
				      (long long)b->size);
	char need[32];
	pp_format_bytes(need, sizeof(need), (double)b->size);
	return pp_error_set(
		err, PP_EIO, "no space left in %s for blob %s: it needs %lld bytes (%s)",
		e->store->stage_dir, pp_short_digest(b->digest), (long long)b->size, need);
}

/* Adopts what an earlier run left: the journal's done chunks become
 * claims, checked against the bytes on disk as the hash reaches them. */
static bool resume_from_journal(struct pp_engine *e, struct blob *b)
{
	struct pp_journal j = {0};
	struct pp_error jerr = {0};
	struct stat st;
	if (pp_journal_load(&j, b->journal, &jerr) < 0) {
		if (jerr.code != PP_ENOTFOUND)
			pp_warn("blob %s: %s; starting the blob again", pp_short_digest(b->digest),
				jerr.msg);
		return false;
	}
	bool ok = strcmp(j.digest, b->digest) == 0 && j.size == b->size && fstat(b->fd, &st) == 0 &&
		  st.st_size == b->size && (j.chunk_size == b->size || !b->single_stream);
	if (!ok) {
		pp_warn("blob %s: journal does not match the partial file; starting the blob again",
			pp_short_digest(b->digest));
		pp_journal_free(&j);
		return false;
	}
	plan_chunks(e, b, j.chunk_size);
	size_t n = 0;
	for (size_t i = 0; i < b->n_chunks; i++) {
		struct chunk *c = &b->chunks[i];
		const struct pp_journal_chunk *jc = &j.chunks[i];
		if (jc->done[0]) {
			c->state = CHUNK_DONE;
			c->verify = true;
			c->received = c->len;
			memcpy(c->digest, jc->done, sizeof(c->digest));
			b->resumed += c->len;
			n++;
		} else if (jc->part_len > 0) {
			c->received = c->checkpoint = jc->part_len;
			memcpy(c->digest, jc->part, sizeof(c->digest));
			b->resumed += jc->part_len;
		}
	}
	pp_journal_free(&j);
	e->resumed += b->resumed;
	if (n)
		pp_info("blob %s: resuming, %zu of %zu chunks done in an earlier run",
			pp_short_digest(b->digest), n, b->n_chunks);
	return true;
}

/* Reads the partial file at [pos, end) into the hash buffer, as much as
 * fits.  Returns the bytes read (> 0), or -1 with err set. */
static ssize_t read_back(struct pp_engine *e, struct blob *b, int64_t pos, int64_t end,
			 struct pp_error *err)
{
	size_t want = (size_t)(end - pos);
	if (want > HASH_BUFFER)
		want = HASH_BUFFER;
	for (;;) {
		ssize_t n = pread(b->fd, e->hashbuf, want, pos);
		if (n > 0)
			return n;
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0)
			errno = EIO; /* the file is shorter than the blob */
		return pp_error_errno(err, "read %s", b->partial);
	}
}

/* A chunk an earlier run had partly received continues where its last
 * checkpoint was, once the bytes on disk still hash to what it recorded;
 * the chunk's hash state is then the one to continue with. */
static int verify_checkpoints(struct pp_engine *e, struct blob *b, struct pp_error *err)
{
	for (size_t i = 0; i < b->n_chunks; i++) {
		struct chunk *c = &b->chunks[i];
		if (c->state != CHUNK_PENDING || c->received == 0)
			continue;
		struct pp_sha256 *h = pp_sha256_new();
		for (int64_t pos = c->off; pos < c->off + c->received;) {
			ssize_t n = read_back(e, b, pos, c->off + c->received, err);
			if (n < 0) {
				pp_sha256_free(h);
				return -1;
			}
			pp_sha256_update(h, e->hashbuf, (size_t)n);
			pos += n;
		}
		char got[PP_DIGEST_STR_LEN + 1];
		pp_sha256_copy(e->scratch, h);
		pp_sha256_final(e->scratch, got);
		if (strcmp(got, c->digest) == 0) {
			c->sha = h;
			continue;
		}
		pp_warn("blob %s: chunk %zu: checkpointed bytes on disk do not match the journal; "
			"fetching the chunk again",
			pp_short_digest(b->digest), i);
		pp_sha256_free(h);
		b->resumed -= c->received;
		e->resumed -= c->received;
		c->received = c->checkpoint = 0;
	}
	return 0;
}

/* Opens a blob's partial file (locked against other prepull runs) and
 * journal, resuming an earlier run's work when it is there.  Returns 1
 * when another process holds the blob, 2 when the store may have it now. */
static int open_blob(struct pp_engine *e, struct blob *b, struct pp_error *err)
{
	if (!b->partial) {
		const char *hex = pp_digest_hex(b->digest);
		b->partial = pp_xasprintf("%s/%s.partial", e->store->stage_dir, hex);
		b->journal = pp_xasprintf("%s/%s.journal", e->store->stage_dir, hex);
	}
	b->fd = open(b->partial, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (b->fd < 0)
		return pp_error_errno(err, "open %s", b->partial);
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	if (fcntl(b->fd, F_SETLK, &fl) < 0) {
		int saved = errno;
		struct flock who = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
		b->held_by =
			fcntl(b->fd, F_GETLK, &who) == 0 && who.l_type != F_UNLCK ? who.l_pid : 0;
		close(b->fd);
		b->fd = -1;
		if (saved == EAGAIN || saved == EACCES)
			return 1;
		errno = saved;
		return pp_error_errno(err, "lock %s", b->partial);
	}
	b->held_by = 0;
	/* Between our open and our lock, the run that held the file may have
	 * committed it (renamed it into the store) or failed it (deleted it):
	 * only the file the path still names is a partial blob.  And a blob
	 * the store has by now needs no partial file at all. */
	struct stat fst, pst;
	if (fstat(b->fd, &fst) < 0 || stat(b->partial, &pst) < 0 || fst.st_dev != pst.st_dev ||
	    fst.st_ino != pst.st_ino) {
		close(b->fd);
		b->fd = -1;
		return 2;
	}
	bool have = false;
	int r = pp_store_has_blob(e->store, b->digest, b->size, &have, err);
	if (r < 0 || have) {
		if (have) {
			unlink(b->journal); /* while still locked: nobody works on these */
			unlink(b->partial);
		}
		close(b->fd);
		b->fd = -1;
		return r < 0 ? r : 2;
	}
	if (resume_from_journal(e, b)) {
		r = pp_journal_open_append(&b->jfd, b->journal, err);
		if (r == 0)
			r = verify_checkpoints(e, b, err);
	} else {
		if (ftruncate(b->fd, 0) < 0) {
			r = pp_error_errno(err, "truncate %s", b->partial);
			goto fail;
		}
		if (b->single_stream)
			plan_chunks(e, b, b->size);
		r = preallocate(e, b, err);
		if (r == 0)
			r = pp_journal_create(&b->jfd, b->journal, b->digest, b->size,
					      b->chunk_size, err);
	}
	if (r < 0)
		goto fail;
	b->started = pp_now();
	b->state = BLOB_RUNNING;
	pp_debug("blob %s: %lld bytes in %zu chunks of %lld", pp_short_digest(b->digest),
		 (long long)b->size, b->n_chunks, (long long)b->chunk_size);
	return 0;
fail:
	close_blob(b, true);
	return r;
}

/* Starts a blob's journal over, for a new chunk plan. */
static int restart_journal(struct blob *b, struct pp_error *err)
{
	if (b->jfd >= 0)
		close(b->jfd);
	b->jfd = -1;
	return pp_journal_create(&b->jfd, b->journal, b->digest, b->size, b->chunk_size, err);
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
			ssize_t n = read_back(e, b, b->hashed, end, err);
			if (n < 0)
				return -1;
			pp_sha256_update(b->hash, e->hashbuf, (size_t)n);
			if (c->verify)
				pp_sha256_update(c->sha, e->hashbuf, (size_t)n);
			b->hashed += n;
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
				b->resumed -= c->len;
				e->resumed -= c->len;
				c->state = CHUNK_PENDING;
				c->received = 0;
				if (b->hash_chunk < b->first_pending)
					b->first_pending = b->hash_chunk;
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

/* Renames a verified blob into the store. */
static void commit_blob(struct pp_engine *e, struct blob *b)
{
	struct pp_error err = {0};
	if (fsync(b->fd) < 0) {
		pp_error_errno(&err, "sync %s", b->partial);
		fail_blob(e, b, &err);
		return;
	}
	if (pp_store_commit_file(e->store, b->digest, b->partial, &err) < 0) {
		pp_error_wrap(&err, "blob %s", pp_short_digest(b->digest));
		fail_blob(e, b, &err);
		return;
	}
	/* Committed: the journal has nothing left to say. */
	unlink(b->journal);
	close_blob(b, false);
	b->state = BLOB_DONE;
	pp_debug("blob %s: verified and committed (%lld bytes fetched)", pp_short_digest(b->digest),
		 (long long)b->fetched);
	notify(b, NULL);
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
	if (b->repairing && b->changed == 0) {
		pp_error_set(&err, PP_EDIGEST,
			     "blob %s from %s: content hashes to %s; every chunk fetched again "
			     "came back the same, so the source serves these bytes",
			     b->digest, source, got);
		fail_blob(e, b, &err);
		return;
	}
	if (b->repairs >= REPAIR_PASSES) {
		pp_error_set(&err, PP_EDIGEST,
			     "blob %s from %s: content hashes to %s after %d repair passes",
			     b->digest, source, got, b->repairs);
		fail_blob(e, b, &err);
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
		c->state = CHUNK_PENDING;
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
	restart_hash(b);
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
		commit_blob(e, b);
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
		ssize_t n = read_back(e, b, b->check_pos, b->size, err);
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
		commit_blob(e, b);
	}
	return 0;
}

static bool reply_ok(struct xfer *x)
{
	struct blob *b = x->b;
	struct chunk *c = &b->chunks[x->chunk];
	long status = x->resp.status;
	int64_t start = c->off + c->received, end = c->off + c->len - 1;
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

/* Bytes between journal checkpoints of a chunk being received: what a
 * kill can cost per open request. */
static int64_t checkpoint_every(const struct blob *b)
{
	int64_t every = b->size / 8192;
	return every > MIB ? every : MIB;
}

static void checkpoint(struct pp_engine *e, struct blob *b, size_t ci)
{
	struct chunk *c = &b->chunks[ci];
	char digest[PP_DIGEST_STR_LEN + 1];
	struct pp_error err = {0};
	pp_sha256_copy(e->scratch, c->sha);
	pp_sha256_final(e->scratch, digest);
	if (pp_journal_append_part(b->jfd, b->journal, ci, c->received, digest, &err) < 0)
		pp_warn("blob %s: %s", pp_short_digest(b->digest), err.msg);
	c->checkpoint = c->received;
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
	pp_sha256_update(c->sha, data, len);
	if (b->hashed == pos && b->hash_chunk == x->chunk) {
		pp_sha256_update(b->hash, data, len);
		b->hashed += (int64_t)len;
	}
	c->received += (int64_t)len;
	x->got += (int64_t)len;
	x->last_byte = pp_now();
	b->fetched += (int64_t)len;
	x->e->fetched += (int64_t)len;
	if (c->received - c->checkpoint >= checkpoint_every(b) && c->received < c->len)
		checkpoint(x->e, b, x->chunk);
	return len;
}

static int start_chunk(struct pp_engine *e, struct blob *b, size_t ci, struct pp_error *err)
{
	struct chunk *c = &b->chunks[ci];
	struct xfer *x = pp_xcalloc(1, sizeof(*x));
	x->e = e;
	x->b = b;
	x->chunk = ci;
	x->resp.retry_after = -1;
	x->wrong_size = -1;
	x->h = curl_easy_init();
	if (!x->h) {
		free(x);
		return pp_error_set(err, PP_EGENERIC, "curl_easy_init failed");
	}
	if (b->cdn_url && pp_now() - b->cdn_since > CDN_URL_MAX_AGE) {
		free(b->cdn_url);
		b->cdn_url = NULL;
	}
	x->via_cdn = b->cdn_url != NULL;
	if (!x->via_cdn) {
		char *authz = NULL;
		int r = pp_registry_auth_header(b->reg, b->repo, &authz, err);
		if (r < 0) {
			curl_easy_cleanup(x->h);
			free(x);
			return r;
		}
		if (authz)
			x->hdrs = curl_slist_append(x->hdrs, authz);
		x->authz = authz;
	}
	/* A closed range even for a single stream, so a resumed stream starts
	 * where it stopped; a 200 for the whole blob is accepted then. */
	int64_t start = c->off + c->received, end = c->off + c->len - 1;
	char range[96];
	snprintf(range, sizeof(range), "Range: bytes=%lld-%lld", (long long)start, (long long)end);
	x->ranged = !(b->single_stream && start == 0);
	if (x->ranged)
		x->hdrs = curl_slist_append(x->hdrs, range);
	if (!c->sha)
		c->sha = pp_sha256_new();
	pp_registry_setup_handle(b->reg, x->h);
	/* One range per connection, so HTTP/2's multiplexing buys nothing here,
	 * and its framing costs CPU on both ends: a 1 GiB blob over TLS from
	 * nginx took 7.1 s with HTTP/2 and 5.6 s with HTTP/1.1 (-j 16, 2 cores). */
	curl_easy_setopt(x->h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(x->h, CURLOPT_URL, x->via_cdn ? b->cdn_url : b->url);
	curl_easy_setopt(x->h, CURLOPT_HTTPHEADER, x->hdrs);
	curl_easy_setopt(x->h, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(x->h, CURLOPT_HEADERFUNCTION, pp_http_header_cb);
	curl_easy_setopt(x->h, CURLOPT_HEADERDATA, &x->resp);
	curl_easy_setopt(x->h, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(x->h, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(x->h, CURLOPT_PRIVATE, x);
	curl_easy_setopt(x->h, CURLOPT_BUFFERSIZE, (long)RECV_BUFFER);
	x->last_byte = pp_now();
	curl_multi_add_handle(e->multi, x->h);
	c->state = CHUNK_ACTIVE;
	b->active++;
	(*host_slot(e, b->reg))++;
	e->xfers[e->n_xfers++] = x;
	pp_debug("blob %s: chunk %zu: GET%s bytes %lld-%lld", pp_short_digest(b->digest), ci,
		 x->via_cdn ? " (redirect target)" : "", (long long)start, (long long)end);
	return 0;
}

/* Puts a chunk back in the queue after a failed request, or fails the blob
 * when it has been tried too often. */
static void retry_chunk(struct pp_engine *e, struct blob *b, size_t ci, double wait,
			const struct pp_error *why)
{
	struct chunk *c = &b->chunks[ci];
	c->state = CHUNK_PENDING;
	if (c->received == c->len) {
		/* Every byte came but the request still failed: take none of it,
		 * and neither may the blob hash, which had them if the chunk was
		 * at its frontier. */
		c->received = c->checkpoint = 0;
		pp_sha256_free(c->sha);
		c->sha = NULL;
		if (b->hash_chunk == ci && b->hashed > c->off) {
			pp_sha256_copy(b->hash, b->frontier);
			b->hashed = c->off;
		}
	}
	if (ci < b->first_pending)
		b->first_pending = ci;
	if (++c->attempts >= CHUNK_ATTEMPTS) {
		struct pp_error err = *why;
		pp_error_wrap(&err, "blob %s: chunk %zu: giving up after %d attempts",
			      pp_short_digest(b->digest), ci, c->attempts);
		fail_blob(e, b, &err);
		return;
	}
	c->not_before = pp_now() + wait;
	pp_warn("blob %s: chunk %zu: %s; retry %d in %.1f s", pp_short_digest(b->digest), ci,
		why->msg, c->attempts, wait);
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
		pp_curl_error(err, rc, x->errbuf, x->via_cdn ? "redirect target" : x->b->url);
	} else if (x->error_status) {
		struct pp_http_response tmp = x->resp;
		tmp.body = x->errbody;
		pp_http_status_error(err, &tmp);
	} else {
		pp_error_set(err, PP_EPROTO, "body ended after %lld of %lld bytes",
			     (long long)c->received, (long long)c->len);
	}
}

/* Moves a blob's hash along and commits the blob when it is complete.
 * Returns 1 when the budget ran out with work left. */
static int hash_blob(struct pp_engine *e, struct blob *b, int64_t *budget)
{
	struct pp_error err = {0};
	int r = b->check ? advance_check(e, b, budget, &err) : advance_hash(e, b, budget, &err);
	if (r < 0)
		fail_blob(e, b, &err);
	else if (r == 0 && b->state == BLOB_RUNNING && !b->check) {
		if (b->hash_chunk == b->n_chunks)
			finish_blob(e, b);
		else if (b->check_from > 0 && b->hash_chunk >= b->check_from && b->active == 0)
			start_check(b);
	}
	return r > 0 || b->check != NULL;
}

static void chunk_done(struct pp_engine *e, struct xfer *x)
{
	struct blob *b = x->b;
	struct chunk *c = &b->chunks[x->chunk];
	struct pp_error err = {0};
	char *eff = NULL;
	char got[PP_DIGEST_STR_LEN + 1];
	c->state = CHUNK_DONE;
	pp_sha256_final(c->sha, got);
	pp_sha256_free(c->sha);
	c->sha = NULL;
	if (b->repairing && strcmp(got, c->digest) != 0) {
		pp_info("blob %s: chunk %zu came back different; replaced it",
			pp_short_digest(b->digest), x->chunk);
		b->changed++;
		if (x->chunk + 1 > b->check_from)
			b->check_from = x->chunk + 1;
	}
	memcpy(c->digest, got, sizeof(c->digest));
	curl_easy_getinfo(x->h, CURLINFO_EFFECTIVE_URL, &eff);
	if (!x->via_cdn && eff && strcmp(eff, b->url) != 0) {
		free(b->cdn_url);
		b->cdn_url = pp_xstrdup(eff);
		b->cdn_since = pp_now();
	}
	/* Start writing the chunk back now, so the fsync at commit has little left. */
	sync_file_range(b->fd, c->off, c->len, SYNC_FILE_RANGE_WRITE);
	if (pp_journal_append_done(b->jfd, b->journal, x->chunk, c->digest, &err) < 0) {
		fail_blob(e, b, &err);
		return;
	}
	int64_t budget = HASH_BUDGET;
	hash_blob(e, b, &budget);
}

/* Retry, go back to the registry, or give up on the blob. */
static void chunk_failed(struct pp_engine *e, struct xfer *x, CURLcode rc)
{
	struct blob *b = x->b;
	size_t ci = x->chunk;
	long status = x->resp.status;
	struct pp_error err = {0};

	if (x->io_errno) {
		errno = x->io_errno;
		if (x->io_errno == ENOSPC)
			pp_error_set(&err, PP_EIO, "no space left writing %s", b->partial);
		else
			pp_error_errno(&err, "write %s", b->partial);
		fail_blob(e, b, &err);
		return;
	}
	long long unsat_total;
	if (status == 416 && x->resp.content_range &&
	    sscanf(x->resp.content_range, "bytes */%lld", &unsat_total) == 1 &&
	    unsat_total != b->size)
		x->wrong_size = unsat_total; /* the range is past the end of a shorter blob */
	if (x->wrong_size >= 0) {
		/* Not a transient fault: the registry and the manifest disagree. */
		pp_error_set(&err, PP_EPROTO,
			     "blob %s from %s: the server has %lld bytes, the manifest says %lld",
			     b->digest, b->url, (long long)x->wrong_size, (long long)b->size);
		fail_blob(e, b, &err);
		return;
	}
	if (x->got > 0 && b->chunks[ci].received < b->chunks[ci].len)
		b->chunks[ci].attempts = 0; /* it moved and keeps that: count failures afresh */
	if (x->range_ignored) {
		/* The server sends whole bodies: fetch this blob as one stream. */
		pp_warn("blob %s: server ignored Range; fetching it as one stream",
			pp_short_digest(b->digest));
		cancel_blob_xfers(e, b);
		b->single_stream = true;
		e->resumed -= b->resumed;
		b->resumed = 0;
		plan_chunks(e, b, b->size);
		if (restart_journal(b, &err) < 0)
			fail_blob(e, b, &err);
		return;
	}
	describe_failure(x, rc, &err);
	if (err.code == PP_EDEADLINE || err.code == PP_EINTR) {
		/* Not a failure but our stop, caught by the request before the
		 * loop: keep what it brought, as stop_all does for the others. */
		struct chunk *c = &b->chunks[ci];
		if (b->jfd >= 0 && c->sha && c->received > c->checkpoint && c->received < c->len)
			checkpoint(e, b, ci);
	}
	if (err.code == PP_ETLS) {
		fail_blob(e, b, &err);
		return;
	}
	long redirects = 0;
	curl_easy_getinfo(x->h, CURLINFO_REDIRECT_COUNT, &redirects);
	if ((x->via_cdn || redirects > 0) && status >= 400 && status < 500 && status != 429) {
		/* A signed URL expired: go back to the registry for a new one. */
		pp_info("blob %s: redirect target answered %ld; asking the registry again",
			pp_short_digest(b->digest), status);
		free(b->cdn_url);
		b->cdn_url = NULL;
		retry_chunk(e, b, ci, 0, &err);
		return;
	}
	if (status == 401) {
		struct pp_error aerr = {0};
		if (pp_registry_unauthorized(b->reg, b->repo, x->resp.www_authenticate, x->authz,
					     &aerr) < 0) {
			pp_error_wrap(&aerr, "blob %s", pp_short_digest(b->digest));
			fail_blob(e, b, &aerr);
			return;
		}
		retry_chunk(e, b, ci, 0, &err);
		return;
	}
	if (status >= 400 && status < 500 && status != 408 && status != 429 && status != 416) {
		pp_error_wrap(&err, "blob %s from %s", b->digest, b->url);
		fail_blob(e, b, &err);
		return;
	}
	double wait = (status == 429 || status == 503) && x->resp.retry_after >= 0
			      ? x->resp.retry_after
			      : pp_backoff(b->chunks[ci].attempts);
	retry_chunk(e, b, ci, wait, &err);
}

static void finish_xfer(struct pp_engine *e, struct xfer *x, CURLcode rc)
{
	const struct chunk *c = &x->b->chunks[x->chunk];
	/* Out of the loop first, so failing the blob cannot free it under us. */
	xfer_detach(e, x);
	if (rc == CURLE_OK && !x->error_status && !x->bad_reply[0] &&
	    (x->resp.status == 200 || x->resp.status == 206) && c->received == c->len)
		chunk_done(e, x);
	else
		chunk_failed(e, x, rc);
	xfer_destroy(x);
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
		x->stalled = true;
		xfer_detach(e, x);
		chunk_failed(e, x, CURLE_OPERATION_TIMEDOUT);
		xfer_destroy(x);
	}
}

static bool blob_open(const struct blob *b)
{
	return b->state == BLOB_QUEUED || b->state == BLOB_RUNNING;
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
		if (*host_slot(e, b->reg) >= e->opts->per_host)
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
			*ci = k;
			return b;
		}
	}
	return NULL;
}

static void start_transfers(struct pp_engine *e, double *wake)
{
	double now = pp_now();
	while (e->n_xfers < e->opts->connections) {
		size_t ci;
		struct blob *b = next_chunk(e, &ci, now, wake);
		if (!b)
			return;
		struct pp_error err = {0};
		if (start_chunk(e, b, ci, &err) < 0) {
			pp_error_wrap(&err, "blob %s", pp_short_digest(b->digest));
			fail_blob(e, b, &err);
		}
	}
}

/* Opens a blob that is not running yet.  One that another prepull run
 * holds is looked at again every BUSY_RETRY seconds: it is done when that
 * run has committed it, or ours once that run lets go. */
static void activate(struct pp_engine *e, struct blob *b, double now)
{
	if (b->state != BLOB_QUEUED || now < b->next_try)
		return;
	struct pp_error err = {0};
	if (b->held_by) {
		bool have = false;
		if (pp_store_has_blob(e->store, b->digest, b->size, &have, &err) == 0 && have) {
			pp_info("blob %s: committed by the other prepull run",
				pp_short_digest(b->digest));
			b->state = BLOB_DONE;
			notify(b, NULL);
			return;
		}
	}
	pid_t before = b->held_by;
	int r = open_blob(e, b, &err);
	if (r < 0) {
		fail_blob(e, b, &err);
	} else if (r == 2) {
		/* The file moved on under us: look at the store, then again. */
		if (++b->moved > MOVED_MAX) {
			pp_error_set(&err, PP_EIO, "%s keeps being replaced by another process",
				     b->partial);
			fail_blob(e, b, &err);
			return;
		}
		b->held_by = b->held_by ? b->held_by : -1;
		b->next_try = now + 0.1;
	} else if (r > 0) {
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
		if (b->state == BLOB_RUNNING && hash_blob(e, b, &budget))
			more = true;
	}
	return more;
}

static void stop_all(struct pp_engine *e)
{
	while (e->n_xfers > 0) {
		struct xfer *x = e->xfers[0];
		struct chunk *c = &x->b->chunks[x->chunk];
		/* Keep what the request brought since its last checkpoint. */
		if (x->b->jfd >= 0 && c->sha && c->received > c->checkpoint && c->received < c->len)
			checkpoint(e, x->b, x->chunk);
		c->state = CHUNK_PENDING;
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
		close_blob(b, false);
	}
}

int pp_engine_run(struct pp_engine *e, struct pp_error *err)
{
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
		for (size_t i = 0; i < e->n_blobs; i++) {
			struct blob *b = e->blobs[i];
			activate(e, b, now);
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
			finish_xfer(e, x, msg->data.result);
			finished = true;
		}
		cancel_stalled(e);
		if (e->progress)
			pp_progress_tick(e->progress, e->fetched - e->redone + e->resumed);
		int timeout_ms = 200;
		if (more_hashing || finished) {
			/* Start the next chunks (or hash, or finish) without waiting. */
			timeout_ms = 0;
		} else if (e->n_xfers == 0 && wake > 0) {
			double d = wake - pp_now();
			timeout_ms = d <= 0 ? 0 : d >= 1 ? 1000 : (int)(d * 1000) + 1;
		}
		curl_multi_poll(e->multi, NULL, 0, timeout_ms, NULL);
	}
	return 0;
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
		free(b->repo);
		free(b->url);
		free(b->cdn_url);
		free(b->partial);
		free(b->journal);
		free(b);
	}
	free(e->blobs);
	free(e->xfers);
	free(e->hosts);
	free(e->hashbuf);
	pp_sha256_free(e->scratch);
	curl_multi_cleanup(e->multi);
	free(e);
}
