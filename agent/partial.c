/* A blob's partial file and journal.  The file is preallocated at the
 * blob's size beside its final place in the store (so committing is a
 * rename), locked against other prepull runs, and written at chunk offsets;
 * the journal records each chunk's sha256 as it finishes (and checkpoints
 * of chunks being received), so a later run resumes without trusting
 * anything it has not re-read. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "engine_int.h"
#include "flusher.h"
#include "hashpool.h"
#include "prepull/journal.h"
#include "prepull/log.h"
#include "prepull/partial.h"
#include "prepull/store.h"

#define PARTIAL_SUFFIX ".partial"
#define JOURNAL_SUFFIX ".journal"

/* Closes a blob's files.  With `discard`, its partial file and journal go
 * too (a failed blob); otherwise they stay for the next run. */
void partial_close(struct pp_engine *e, struct blob *b, bool discard)
{
	/* Nothing still to hash of it is wanted now (the digests a stop keeps
	 * were settled before): a blob-hash job of up to HASH_JOB_MAX stops at
	 * its next read rather than delaying the close. */
	if (e->pool && b->fd >= 0)
		hashpool_cancel(e->pool, b->fd);
	prefix_quiesce(b);                 /* no hash worker reads the file past its close */
	flusher_forget(e->flusher, b->fd); /* nor does the flush thread sync it */
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
	engine_plan_chunks(e, b, j.chunk_size);
	size_t n = 0;
	for (size_t i = 0; i < b->n_chunks; i++) {
		struct chunk *c = &b->chunks[i];
		const struct pp_journal_chunk *jc = &j.chunks[i];
		if (jc->done[0]) {
			chunk_set_state(b, i, CHUNK_DONE);
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
ssize_t partial_read(struct pp_engine *e, struct blob *b, int64_t pos, int64_t end,
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
			ssize_t n = partial_read(e, b, pos, c->off + c->received, err);
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

int partial_open(struct pp_engine *e, struct blob *b, enum partial_open_result *out,
		 struct pp_error *err)
{
	*out = PARTIAL_MOVED;
	if (!b->partial) {
		b->partial = pp_partial_path(e->store->stage_dir, b->digest);
		b->journal = pp_partial_journal_path(e->store->stage_dir, b->digest);
	}
	/* Never through a link someone planted: the bytes are the registry's. */
	b->fd = open(b->partial, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
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
		if (saved == EAGAIN || saved == EACCES) {
			*out = PARTIAL_BUSY;
			return 0;
		}
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
		return 0;
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
		return r < 0 ? r : 0;
	}
	bool resumed = resume_from_journal(e, b);
	if (resumed) {
		r = pp_journal_open_append(&b->jfd, b->journal, err);
		if (r == 0)
			r = verify_checkpoints(e, b, err);
	} else {
		if (ftruncate(b->fd, 0) < 0) {
			r = pp_error_errno(err, "truncate %s", b->partial);
			goto fail;
		}
		engine_plan_chunks(e, b, b->single_stream ? b->size : 0);
		r = preallocate(e, b, err);
		if (r == 0)
			r = pp_journal_create(&b->jfd, b->journal, b->digest, b->size,
					      b->chunk_size, err);
	}
	if (r < 0)
		goto fail;
	blob_set_state(b, BLOB_RUNNING);
	pp_debug("blob %s: %lld bytes in %zu chunks of %lld", pp_short_digest(b->digest),
		 (long long)b->size, b->n_chunks, (long long)b->chunk_size);
	*out = PARTIAL_OPENED;
	return 0;
fail:
	/* What an earlier run left stays for the next (this one could not
	 * read or extend it); a file started afresh holds nothing yet, and
	 * a failed preallocation may hold the space a full disk needs. */
	partial_close(e, b, !resumed);
	return r;
}

/* Starts a blob's journal over, for a new chunk plan. */
int partial_restart_journal(struct blob *b, struct pp_error *err)
{
	if (b->jfd >= 0)
		close(b->jfd);
	b->jfd = -1;
	return pp_journal_create(&b->jfd, b->journal, b->digest, b->size, b->chunk_size, err);
}

/* Bytes between journal checkpoints of a chunk being received: what a
 * kill can cost per open request. */
int64_t partial_checkpoint_every(const struct blob *b)
{
	int64_t every = b->size / 8192;
	return every > MIB ? every : MIB;
}

/* The chunk's hash, wherever it has come to, and how far that is: a
 * hash worker may be a little behind what was received. */
void partial_checkpoint_hashed(struct pp_engine *e, struct blob *b, size_t ci)
{
	struct chunk *c = &b->chunks[ci];
	char digest[PP_DIGEST_STR_LEN + 1];
	struct pp_error err = {0};
	pp_sha256_copy(e->scratch, c->sha);
	int64_t at = pp_sha256_fed(e->scratch);
	if (at <= c->checkpoint || pp_sha256_error(e->scratch))
		return;
	pp_sha256_final(e->scratch, digest);
	if (pp_journal_append_part(b->jfd, b->journal, ci, at, digest, &err) < 0)
		pp_warn("blob %s: %s", pp_short_digest(b->digest), err.msg);
	c->checkpoint = at;
}

void partial_checkpoint(struct pp_engine *e, struct blob *b, size_t ci)
{
	chunk_hash_settle(e, b, ci);
	partial_checkpoint_hashed(e, b, ci);
}

/* Disk space a queued blob still needs: its size less what a partial file
 * an earlier run left already holds (it was preallocated). */
static int64_t space_needed(struct pp_engine *e, struct blob *b)
{
	cleanup_free char *path = pp_partial_path(e->store->stage_dir, b->digest);
	struct stat st;
	int64_t held = 0;
	if (lstat(path, &st) == 0 && S_ISREG(st.st_mode))
		held = (int64_t)st.st_blocks * 512;
	return held >= b->size ? 0 : b->size - held;
}

void partial_check_space(struct pp_engine *e)
{
	struct statvfs vfs;
	if (!e->store || !e->store->stage_dir || statvfs(e->store->stage_dir, &vfs) < 0)
		return; /* the preallocation of each blob still finds a full disk */
	int64_t avail = (int64_t)vfs.f_bavail * (int64_t)vfs.f_frsize, taken = 0;
	for (size_t i = 0; i < e->n_blobs; i++) {
		struct blob *b = e->blobs[i];
		if (b->state != BLOB_QUEUED)
			continue;
		int64_t need = space_needed(e, b);
		if (taken + need <= avail) {
			taken += need;
			continue;
		}
		char needs[32], free_[32];
		struct pp_error err = {0};
		pp_format_bytes(needs, sizeof(needs), (double)b->size);
		pp_format_bytes(free_, sizeof(free_), (double)(avail - taken));
		pp_error_set(
			&err, PP_EIO,
			"no space left in %s for blob %s: it needs %lld bytes (%s), %s are free "
			"after the blobs queued before it",
			e->store->stage_dir, pp_short_digest(b->digest), (long long)b->size, needs,
			free_);
		engine_fail_blob(e, b, &err);
	}
}

void partial_chunk_written(struct pp_engine *e, struct blob *b, size_t ci)
{
	const struct chunk *c = &b->chunks[ci];
	/* Writeback starts now, and the flushes on their own thread make it
	 * durable as the blob arrives: the fsync at commit has little left. */
	sync_file_range(b->fd, c->off, c->len, SYNC_FILE_RANGE_WRITE);
	b->unflushed += c->len;
	if (b->unflushed < PP_FLUSH_EVERY)
		return;
	b->unflushed = 0;
	if (!e->flusher)
		e->flusher = flusher_new();
	flusher_post(e->flusher, b->fd);
}

void partial_commit(struct pp_engine *e, struct blob *b)
{
	struct pp_error err = {0};
	/* An early flush that failed took the error with it (flusher.h). */
	int lost = flusher_forget(e->flusher, b->fd);
	if (lost == 0 && fsync(b->fd) < 0)
		lost = errno;
	if (lost != 0) {
		errno = lost;
		pp_error_errno(&err, "sync %s", b->partial);
		engine_fail_blob(e, b, &err);
		return;
	}
	if (pp_store_commit_file(e->store, b->digest, b->partial, &err) < 0) {
		/* The bytes are verified: closed first, the file and its journal
		 * stay for the next run, which checks and commits them again. */
		partial_close(e, b, false);
		pp_error_wrap(&err, "blob %s", pp_short_digest(b->digest));
		engine_fail_blob(e, b, &err);
		return;
	}
	/* Committed: the journal has nothing left to say. */
	unlink(b->journal);
	pp_debug("blob %s: verified and committed (%lld bytes fetched)", pp_short_digest(b->digest),
		 (long long)b->fetched);
	prefix_finish(e, b, true); /* still open: consumers may read the file */
	partial_close(e, b, false);
	if (b->state == BLOB_RUNNING)
		blob_set_state(b, BLOB_DONE);
}

char *pp_partial_path(const char *dir, const char *digest)
{
	return pp_xasprintf("%s/%s" PARTIAL_SUFFIX, dir, pp_digest_hex(digest));
}

char *pp_partial_journal_path(const char *dir, const char *digest)
{
	return pp_xasprintf("%s/%s" JOURNAL_SUFFIX, dir, pp_digest_hex(digest));
}

/* Whether another process holds a partial file's lock, and which. */
static pid_t lock_holder(const char *partial)
{
	int fd = open(partial, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return 0;
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	pid_t pid = fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK ? fl.l_pid : 0;
	close(fd);
	return pid;
}

/* Bytes a journal claims: done chunks whole, checkpoints of the others. */
static int64_t journal_have(const struct pp_journal *j)
{
	int64_t have = 0;
	for (size_t i = 0; i < j->n_chunks; i++) {
		int64_t off = (int64_t)i * j->chunk_size;
		if (j->chunks[i].done[0])
			have += off + j->chunk_size > j->size ? j->size - off : j->chunk_size;
		else
			have += j->chunks[i].part_len;
	}
	return have;
}

int pp_partial_list(const char *dir, void (*fn)(void *ctx, const struct pp_partial_info *info),
		    void *ctx)
{
	cleanup_dir DIR *d = opendir(dir);
	if (!d)
		return 0;
	int n = 0;
	const size_t suffix = strlen(JOURNAL_SUFFIX);
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);
		if (len <= suffix || strcmp(de->d_name + len - suffix, JOURNAL_SUFFIX) != 0)
			continue;
		cleanup_free char *name = pp_xstrndup(de->d_name, len - suffix);
		cleanup_free char *path = pp_xasprintf("%s/%s", dir, de->d_name);
		cleanup_free char *partial = pp_xasprintf("%s/%s" PARTIAL_SUFFIX, dir, name);
		struct pp_journal j = {0};
		struct pp_error err = {0};
		struct pp_partial_info info = {.name = name};
		if (pp_journal_load(&j, path, &err) < 0) {
			info.error = err.msg;
		} else {
			info.digest = j.digest;
			info.size = j.size;
			info.have = journal_have(&j);
			info.holder = lock_holder(partial);
		}
		fn(ctx, &info);
		pp_journal_free(&j);
		n++;
	}
	return n;
}

int pp_partial_dir_lock(const char *dir, bool exclusive, bool *busy)
{
	*busy = false;
	/* A lock on the directory itself (flock works on a directory's fd):
	 * no file is left behind in the staging dir. */
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -1;
	/* A run waits for a prune (which is quick); a prune never waits for a
	 * run.  A signal ends the wait (no SA_RESTART). */
	if (flock(fd, exclusive ? LOCK_EX | LOCK_NB : LOCK_SH) == 0)
		return fd;
	int saved = errno;
	*busy = saved == EWOULDBLOCK;
	close(fd);
	errno = saved;
	return -1;
}

/* Space a file takes on disk (a preallocated partial file takes its whole
 * size from the start). */
static int64_t disk_bytes(const struct stat *st)
{
	return (int64_t)st->st_blocks * 512;
}

/* Removes one partial blob (name: the hex part) if nobody holds it and it
 * is old enough.  The partial file is locked while its files go, so a run
 * that opens it meanwhile finds the path replaced and starts afresh. */
static void prune_one(const char *dir, const char *name, double older_than,
		      struct pp_prune_info *info)
{
	cleanup_free char *partial = pp_xasprintf("%s/%s" PARTIAL_SUFFIX, dir, name);
	cleanup_free char *journal = pp_xasprintf("%s/%s" JOURNAL_SUFFIX, dir, name);
	struct stat pst, jst;
	bool have_p = lstat(partial, &pst) == 0, have_j = lstat(journal, &jst) == 0;
	if ((have_p && !S_ISREG(pst.st_mode)) || (have_j && !S_ISREG(jst.st_mode))) {
		info->error = "not a regular file (left alone)";
		return;
	}
	cleanup_close int fd = -1;
	if (have_p) {
		fd = open(partial, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
		struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
		if (fd < 0 || fcntl(fd, F_SETLK, &fl) < 0) {
			info->holder = lock_holder(partial);
			if (!info->holder)
				info->error = strerror(errno);
			return;
		}
		/* What we locked is what the path names (not a file a run just
		 * committed and replaced). */
		if (fstat(fd, &pst) < 0 || lstat(partial, &jst) < 0 || pst.st_ino != jst.st_ino)
			return;
		have_j = lstat(journal, &jst) == 0;
	}
	time_t newest = 0;
	if (have_p) {
		info->bytes += disk_bytes(&pst);
		newest = pst.st_mtime;
	}
	if (have_j) {
		info->bytes += disk_bytes(&jst);
		if (jst.st_mtime > newest)
			newest = jst.st_mtime;
	}
	info->age = difftime(time(NULL), newest);
	if (info->age < older_than)
		return;
	if ((have_j && unlink(journal) < 0 && errno != ENOENT) ||
	    (have_p && unlink(partial) < 0 && errno != ENOENT)) {
		info->error = strerror(errno);
		return;
	}
	info->removed = true;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int pp_partial_prune(const char *dir, double older_than,
		     void (*fn)(void *ctx, const struct pp_prune_info *info), void *ctx)
{
	cleanup_dir DIR *d = opendir(dir);
	if (!d)
		return 0;
	/* Names first: the loop removes files from the directory it reads. */
	char **names = NULL;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name), cut = 0;
		if (len > strlen(PARTIAL_SUFFIX) &&
		    strcmp(de->d_name + len - strlen(PARTIAL_SUFFIX), PARTIAL_SUFFIX) == 0)
			cut = strlen(PARTIAL_SUFFIX);
		else if (len > strlen(JOURNAL_SUFFIX) &&
			 strcmp(de->d_name + len - strlen(JOURNAL_SUFFIX), JOURNAL_SUFFIX) == 0)
			cut = strlen(JOURNAL_SUFFIX);
		if (!cut || de->d_name[0] == '.')
			continue;
		names = pp_xrealloc(names, (n + 1) * sizeof(*names));
		names[n++] = pp_xstrndup(de->d_name, len - cut);
	}
	/* Sorted, a blob's two files are neighbours: each blob once. */
	qsort(names, n, sizeof(*names), compare_names);
	int found = 0;
	for (size_t i = 0; i < n; i++) {
		if (i == 0 || strcmp(names[i], names[i - 1]) != 0) {
			struct pp_prune_info info = {.name = names[i]};
			prune_one(dir, names[i], older_than, &info);
			fn(ctx, &info);
			found++;
		}
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return found;
}
