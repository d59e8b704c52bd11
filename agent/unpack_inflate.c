/* Streaming layer apply, the inflating half: a thread of its own that takes
 * the compressed bytes feed() put in the input ring, inflates them (ISA-L
 * for gzip, libzstd for zstd; a plain tar is copied as it is) and fills the
 * plain ring's slots for the applier (unpack.c).
 *
 * Why its own thread: on a compressible layer the gzip inflate is about
 * three quarters of the CPU the whole apply takes, and it cannot be split
 * (a deflate stream refers back into its own last 32 KiB).  On its own
 * core it sets the pace, and the diffID hash and the tar writes run beside
 * it on another.
 *
 * The decompressor reads straight from the input ring: the span it holds
 * [ring_head, ring_head + in_len) stays counted in ring_len, so feed() does
 * not write over it, until it is consumed and released. */
#include <errno.h>
#include <isa-l/igzip_lib.h>
#include <pthread.h>
#include <string.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "prepull/error.h"
#include "prepull/unpack.h"
#include "unpack_int.h"

/* Releases the consumed input span and takes the next one, contiguous in
 * the ring.  Waits for bytes only when `block`.  Returns 1 with a span in
 * u->in, 0 with none (u->in_eof set when the input has ended, else nothing
 * is there yet), or PP_EINTR when free() stops us or the applier has ended
 * (then nobody wants our output). */
static int take_input(struct pp_unpack *u, bool block, struct pp_error *err)
{
	pthread_mutex_lock(&u->mu);
	if (u->in_len > 0) {
		u->ring_head = (u->ring_head + u->in_len) % RING_CAP;
		u->ring_len -= u->in_len;
		pthread_cond_broadcast(&u->cond);
	}
	u->in_len = u->in_pos = 0;
	while (block && u->ring_len == 0 && !u->input_end && !u->abort && !u->done)
		pthread_cond_wait(&u->cond, &u->mu);
	bool stop = u->abort || u->done;
	size_t head = u->ring_head, avail = u->ring_len;
	bool end = u->input_end;
	pthread_mutex_unlock(&u->mu);
	if (stop)
		return pp_error_set(err, PP_EINTR, "stopped");
	if (avail == 0) {
		u->in_eof = end;
		return 0;
	}
	/* Bytes [head, head+n) are ours until we release them. */
	size_t n = avail < IN_CAP ? avail : IN_CAP;
	if (n > RING_CAP - head)
		n = RING_CAP - head;
	u->in = u->ring + head;
	u->in_len = n;
	return 1;
}

/* One step of the decompressor over u->in into dst[0, cap).  *produced =
 * bytes of tar stream written there. */
static int inflate_step(struct pp_unpack *u, unsigned char *dst, size_t cap, size_t *produced,
			struct pp_error *err)
{
	*produced = 0;
	if (u->comp == PP_UNPACK_TAR) {
		size_t n = u->in_len - u->in_pos;
		if (n > cap)
			n = cap;
		memcpy(dst, u->in + u->in_pos, n);
		u->in_pos += n;
		*produced = n;
		return 0;
	}
	if (u->comp == PP_UNPACK_GZIP) {
		if (!u->gz_in_member) {
			/* A new member: ISA-L stops at the end of one, and gzip
			 * allows many back to back (pigz, concatenated layers). */
			isal_inflate_reset(u->isal);
			u->isal->crc_flag = ISAL_GZIP;
			u->gz_in_member = true;
		}
		struct inflate_state *s = u->isal;
		s->next_in = (uint8_t *)(u->in + u->in_pos);
		s->avail_in = (uint32_t)(u->in_len - u->in_pos);
		s->next_out = dst;
		s->avail_out = (uint32_t)cap;
		int r = isal_inflate(s);
		u->in_pos = u->in_len - s->avail_in;
		*produced = cap - s->avail_out;
		u->more_out = s->avail_out == 0;
		if (r != ISAL_DECOMP_OK)
			return pp_error_set(err, PP_EPROTO,
					    "gzip stream is corrupt (member %llu, ISA-L error %d)",
					    (unsigned long long)u->gz_members + 1, r);
		if (s->block_state == ISAL_BLOCK_FINISH) {
			u->gz_in_member = false;
			u->gz_members++;
			u->more_out = false;
		}
		return 0;
	}
	/* zstd */
	ZSTD_inBuffer in = {u->in + u->in_pos, u->in_len - u->in_pos, 0};
	ZSTD_outBuffer o = {dst, cap, 0};
	size_t r = ZSTD_decompressStream(u->zd, &o, &in);
	if (ZSTD_isError(r)) {
		if (ZSTD_getErrorCode(r) == ZSTD_error_frameParameter_windowTooLarge) {
			u->in_refusal = PP_UNPACK_REFUSED_ZSTD_WINDOW;
			return pp_error_set(err, PP_EUNSUPPORTED,
					    "zstd frame %llu needs a window over %d MiB",
					    (unsigned long long)u->z_frames + 1,
					    1 << (PP_UNPACK_ZSTD_WINDOW_LOG_MAX - 20));
		}
		return pp_error_set(err, PP_EPROTO, "zstd stream is corrupt (frame %llu): %s",
				    (unsigned long long)u->z_frames + 1, ZSTD_getErrorName(r));
	}
	u->in_pos += in.pos;
	*produced = o.pos;
	u->more_out = o.pos == o.size;
	if (r == 0 && (in.pos > 0 || o.pos > 0))
		u->z_frames++;
	u->z_hint = r;
	return 0;
}

/* Checks the compressed stream ended where a gzip member or zstd frame
 * ends. */
static int check_clean_end(struct pp_unpack *u, struct pp_error *err)
{
	if (u->comp == PP_UNPACK_GZIP) {
		if (u->gz_in_member)
			return pp_error_set(err, PP_EPROTO,
					    "gzip stream is truncated (member %llu)",
					    (unsigned long long)u->gz_members + 1);
		if (u->gz_members == 0)
			return pp_error_set(err, PP_EPROTO, "gzip stream is empty");
	} else if (u->comp == PP_UNPACK_ZSTD) {
		if (u->z_hint != 0)
			return pp_error_set(err, PP_EPROTO, "zstd stream is truncated (frame %llu)",
					    (unsigned long long)u->z_frames + 1);
		if (u->z_frames == 0)
			return pp_error_set(err, PP_EPROTO, "zstd stream is empty");
	}
	return 0;
}

/* Hands slot `idx`, holding n bytes, to the applier. */
static void publish(struct pp_unpack *u, size_t idx, size_t n)
{
	pthread_mutex_lock(&u->mu);
	u->p_len[idx] = n;
	u->p_count++;
	pthread_cond_broadcast(&u->pcond);
	pthread_mutex_unlock(&u->mu);
}

/* Fills slots until the input ends (then checks that it ended cleanly) or
 * fails.  Bytes inflated before a failure are published first, so the
 * applier meets them, and anything wrong in them, before the failure. */
static int inflate_all(struct pp_unpack *u, struct pp_error *err)
{
	for (;;) {
		pthread_mutex_lock(&u->mu);
		while (u->p_count == PLAIN_SLOTS && !u->abort && !u->done)
			pthread_cond_wait(&u->pcond, &u->mu);
		bool stop = u->abort || u->done;
		size_t idx = (u->p_head + u->p_count) % PLAIN_SLOTS;
		pthread_mutex_unlock(&u->mu);
		if (stop)
			return pp_error_set(err, PP_EINTR, "stopped");
		unsigned char *dst = u->plain_buf + idx * PLAIN_CAP;
		size_t filled = 0;
		int rc = 0;
		while (filled < PLAIN_CAP) {
			if (u->in_pos == u->in_len && !u->more_out) {
				if (u->in_eof)
					break;
				/* With bytes in hand, pass them on rather than
				 * wait for more input: the applier goes on. */
				rc = take_input(u, filled == 0, err);
				if (rc < 0)
					return rc;
				if (rc == 0 && !u->in_eof)
					break;
				continue;
			}
			size_t produced;
			rc = inflate_step(u, dst + filled, PLAIN_CAP - filled, &produced, err);
			if (rc < 0)
				break;
			filled += produced;
		}
		if (filled > 0)
			publish(u, idx, filled);
		if (rc < 0)
			return rc;
		if (u->in_eof && u->in_pos == u->in_len && !u->more_out)
			return check_clean_end(u, err);
	}
}

void *unpack_inflater(void *arg)
{
	struct pp_unpack *u = arg;
	pthread_setname_np(pthread_self(), "pp-inflate");
	struct pp_error err = {0};
	int rc = inflate_all(u, &err);
	pthread_mutex_lock(&u->mu);
	u->irc = rc;
	if (rc < 0) {
		u->ierr = err;
		u->irefusal = u->in_refusal;
	}
	u->p_end = true;
	pthread_cond_broadcast(&u->pcond);
	pthread_mutex_unlock(&u->mu);
	return NULL;
}
