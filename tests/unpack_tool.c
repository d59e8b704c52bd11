/* Test driver for the streaming layer applier: feeds a layer file through
 * pp_unpack_* into a directory, in pieces, the way the engine will as a
 * blob's prefix grows.
 *
 *   unpack_tool [options] LAYER ROOT
 *     --media-type MT    layer media type (default: guessed from the magic)
 *     --diff-id D        sha256 the uncompressed stream must have (required)
 *     --lower DIR        a lower layer's directory, topmost first (repeatable)
 *     --userxattr        opaque directories get user.overlay.opaque
 *     --piece N          feed N bytes at a time (default 65536)
 *     --random-pieces S  feed random-sized pieces (1 .. 2*N bytes), seed S
 *     --turn-us T        feed like the fetch engine: each turn, only what
 *                        pp_unpack_writable() says it takes, then sleep T
 *                        microseconds (the rest of the engine's turn)
 *     --thread-times     also print the CPU seconds of each thread (sampled
 *                        from /proc every 5 ms): on a busy machine the
 *                        busiest thread's CPU time bounds what the wall time
 *                        would be on idle cores
 *   unpack_tool --inflate-only GZFILE
 *     times ISA-L's streaming inflate of GZFILE alone (all members), output
 *     discarded; prints bytes and MB/s.
 *
 * Prints one line: "ok entries=E compressed=C uncompressed=U seconds=S" or
 * "error code=N refusal=R: message" (exit 1). */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <getopt.h>
#include <isa-l/igzip_lib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "prepull/error.h"
#include "prepull/unpack.h"
#include "prepull/util.h"

/* --thread-times: the last CPU time seen of each thread of this process
 * (threads are gone by the time finish() returns, so they are sampled). */
#define MAX_THREADS 32
static struct {
	int tid;
	char name[32];
	double cpu;
} threads[MAX_THREADS];
static int nthreads;
static volatile bool sampling = true;
static int sampler_tid;
static pthread_mutex_t threads_mu = PTHREAD_MUTEX_INITIALIZER;

static void sample_threads(void)
{
	DIR *d = opendir("/proc/self/task");
	if (!d)
		return;
	struct dirent *de;
	double tick = (double)sysconf(_SC_CLK_TCK);
	while ((de = readdir(d)) != NULL) {
		int tid = atoi(de->d_name);
		if (tid <= 0)
			continue;
		char path[64], buf[512];
		snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = '\0';
		/* pid (comm) state ... utime stime are fields 14 and 15. */
		char *open = strchr(buf, '('), *close = strrchr(buf, ')');
		if (!open || !close)
			continue;
		unsigned long long ut = 0, st = 0;
		if (sscanf(close + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
			   &st) != 2)
			continue;
		pthread_mutex_lock(&threads_mu);
		int i;
		for (i = 0; i < nthreads && threads[i].tid != tid; i++)
			;
		if (i == nthreads && nthreads < MAX_THREADS)
			threads[nthreads++].tid = tid;
		if (i < MAX_THREADS) {
			snprintf(threads[i].name, sizeof(threads[i].name), "%.*s",
				 (int)(close - open - 1), open + 1);
			threads[i].cpu = (double)(ut + st) / tick;
		}
		pthread_mutex_unlock(&threads_mu);
	}
	closedir(d);
}

static void *sampler(void *arg)
{
	(void)arg;
	sampler_tid = (int)gettid();
	while (sampling) {
		sample_threads();
		usleep(5000);
	}
	return NULL;
}

static int inflate_only(const char *path)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0) {
		perror(path);
		return 1;
	}
	static unsigned char in[1 << 17], out[1 << 18];
	struct inflate_state *s = pp_xmalloc(sizeof(*s));
	isal_inflate_init(s);
	s->crc_flag = ISAL_GZIP;
	unsigned long long total = 0, members = 0;
	double t0 = pp_now();
	ssize_t n;
	while ((n = read(fd, in, sizeof(in))) > 0) {
		s->next_in = in;
		s->avail_in = (uint32_t)n;
		while (s->avail_in > 0 || s->avail_out == 0) {
			s->next_out = out;
			s->avail_out = sizeof(out);
			int r = isal_inflate(s);
			if (r != ISAL_DECOMP_OK) {
				fprintf(stderr, "inflate error %d\n", r);
				return 1;
			}
			total += sizeof(out) - s->avail_out;
			if (s->block_state == ISAL_BLOCK_FINISH) {
				members++;
				uint8_t *ni = s->next_in;
				uint32_t ai = s->avail_in;
				isal_inflate_reset(s);
				s->crc_flag = ISAL_GZIP;
				s->next_in = ni;
				s->avail_in = ai;
				s->avail_out = 1; /* not 0: do not loop for output */
			}
		}
	}
	double dt = pp_now() - t0;
	printf("inflate-only bytes=%llu members=%llu seconds=%.3f MB/s=%.0f\n", total, members, dt,
	       total / dt / 1e6);
	free(s);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	const char *mt = NULL, *diff_id = NULL;
	const char *lowers[64] = {0};
	int nlowers = 0;
	bool userxattr = false;
	size_t piece = 65536;
	unsigned seed = 0;
	bool random_pieces = false;
	bool thread_times = false;
	long turn_us = -1;
	static const struct option longopts[] = {
		{"media-type", required_argument, 0, 'm'},
		{"diff-id", required_argument, 0, 'd'},
		{"lower", required_argument, 0, 'l'},
		{"userxattr", no_argument, 0, 'u'},
		{"piece", required_argument, 0, 'p'},
		{"random-pieces", required_argument, 0, 'r'},
		{"inflate-only", required_argument, 0, 'i'},
		{"thread-times", no_argument, 0, 't'},
		{"turn-us", required_argument, 0, 'T'},
		{0, 0, 0, 0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			mt = optarg;
			break;
		case 'd':
			diff_id = optarg;
			break;
		case 'l':
			if (nlowers < 63)
				lowers[nlowers++] = optarg;
			break;
		case 'u':
			userxattr = true;
			break;
		case 'p':
			piece = strtoul(optarg, NULL, 10);
			break;
		case 'r':
			random_pieces = true;
			seed = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'i':
			return inflate_only(optarg);
		case 't':
			thread_times = true;
			break;
		case 'T':
			turn_us = strtol(optarg, NULL, 10);
			break;
		default:
			return 2;
		}
	}
	if (argc - optind != 2 || !diff_id || piece == 0) {
		fprintf(stderr, "usage: unpack_tool [--media-type MT] --diff-id D [--lower DIR]... "
				"[--userxattr] [--piece N] [--random-pieces SEED] LAYER ROOT\n");
		return 2;
	}
	const char *layer = argv[optind], *root = argv[optind + 1];
	struct pp_error err = {0};
	struct pp_unpack_opts o = {.root = root,
				   .diff_id = diff_id,
				   .lowers = lowers,
				   .whiteout = userxattr ? PP_WHITEOUT_OVERLAY_USERXATTR
							 : PP_WHITEOUT_OVERLAY,
				   .label = "layer"};
	int fd = open(layer, O_RDONLY);
	if (fd < 0) {
		perror(layer);
		return 1;
	}
	unsigned char magic[4] = {0};
	if (pread(fd, magic, 4, 0) < 0) {
		perror(layer);
		return 1;
	}
	if (mt) {
		if (pp_unpack_compression_of(mt, &o.compression, &err) < 0) {
			fprintf(stderr, "%s\n", err.msg);
			return 2;
		}
	} else if (magic[0] == 0x1f && magic[1] == 0x8b) {
		o.compression = PP_UNPACK_GZIP;
	} else if (magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd) {
		o.compression = PP_UNPACK_ZSTD;
	}

	pthread_t sampler_thread;
	if (thread_times && pthread_create(&sampler_thread, NULL, sampler, NULL) != 0)
		thread_times = false;
	double t0 = pp_now();
	struct pp_unpack *u = NULL;
	int rc = pp_unpack_new(&u, &o, &err);
	size_t cap = random_pieces ? 2 * piece : piece;
	unsigned char *buf = pp_xmalloc(cap);
	srand(seed);
	while (rc == 0) {
		size_t want = random_pieces ? 1 + (size_t)rand() % cap : piece;
		if (turn_us >= 0) {
			usleep((useconds_t)turn_us);
			size_t w = pp_unpack_writable(u);
			if (w < want)
				want = w;
			if (want == 0)
				continue;
		}
		ssize_t n = read(fd, buf, want);
		if (n < 0) {
			perror(layer);
			return 1;
		}
		if (n == 0)
			break;
		rc = pp_unpack_feed(u, buf, (size_t)n, &err);
	}
	if (rc == 0)
		rc = pp_unpack_finish(u, &err);
	double dt = pp_now() - t0;
	if (thread_times) {
		sampling = false;
		pthread_join(sampler_thread, NULL);
		sample_threads();
		pthread_mutex_lock(&threads_mu);
		printf("threads:");
		for (int i = 0; i < nthreads; i++)
			if (threads[i].tid != sampler_tid)
				printf(" %s=%.2fs", i == 0 ? "main" : threads[i].name,
				       threads[i].cpu);
		printf("\n");
		pthread_mutex_unlock(&threads_mu);
	}
	if (rc < 0) {
		printf("error code=%d refusal=%d: %s\n", rc, u ? (int)pp_unpack_refused(u) : 0,
		       err.msg);
		pp_unpack_free(u);
		return 1;
	}
	struct pp_unpack_stats st;
	pp_unpack_stats(u, &st);
	printf("ok entries=%llu compressed=%llu uncompressed=%llu seconds=%.3f diff_id=%s\n",
	       (unsigned long long)st.entries, (unsigned long long)st.compressed,
	       (unsigned long long)st.uncompressed, dt, st.diff_id);
	pp_unpack_free(u);
	free(buf);
	close(fd);
	return 0;
}
