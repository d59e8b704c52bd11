/* prepull: pre-pull container images with parallel range requests. */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "prepull/config.h"
#include "prepull/engine.h"
#include "prepull/error.h"
#include "prepull/image.h"
#include "prepull/journal.h"
#include "prepull/log.h"
#include "prepull/options.h"
#include "prepull/progress.h"
#include "prepull/reference.h"
#include "prepull/registry.h"
#include "prepull/state_dir.h"
#include "prepull/stop.h"
#include "prepull/store.h"
#include "prepull/util.h"

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_DEADLINE = 3 };

static const char usage_text[] =
	"Usage: prepull pull [OPTIONS] IMAGE...\n"
	"       prepull pull --config FILE [OPTIONS] [IMAGE...]\n"
	"       prepull status [--state-dir DIR]\n"
	"       prepull --help | --version\n"
	"\n"
	"Pre-pulls container images: every blob is fetched as many parallel HTTP\n"
	"range requests, verified (sha256 per chunk and per blob) and placed in the\n"
	"store, so the workload starts without a pull.\n"
	"\n"
	"Options for pull:\n"
	"  --config FILE          images and options from a JSON file; options and\n"
	"                         images on the command line take precedence. With\n"
	"                         no image and no --config, " PP_DEFAULT_CONFIG "\n"
	"                         is read when it exists\n"
	"  --store STORE          oci:DIR, containerd[:SOCKET], docker[:SOCKET] or auto\n"
	"                         (default: docker if its socket answers, else containerd,\n"
	"                         else oci:<state-dir>/oci)\n"
	"  --namespace NS         containerd namespace (default k8s.io)\n"
	"  --snapshotter NAME     containerd snapshotter to unpack into (default overlayfs)\n"
	"  --platform OS/ARCH[/VARIANT]  platform to take from a multi-arch index\n"
	"                         (default: this machine's)\n"
	"  -j, --connections N    parallel connections in total (default 16)\n"
	"  --per-host N           parallel connections to one registry (default: -j)\n"
	"  --chunk-size SIZE      bytes per range request, e.g. 8M (default: adaptive,\n"
	"                         1M-16M by blob size)\n"
	"  --state-dir DIR        partial downloads (default /var/lib/prepull as root,\n"
	"                         $XDG_CACHE_HOME/prepull otherwise)\n"
	"  --json                 one JSON event per line on stdout\n"
	"  -q, --quiet            print only errors and the summary\n"
	"  --plain-http           talk HTTP, not HTTPS (for localhost, 127.0.0.0/8\n"
	"                         and ::1 HTTPS is tried first, then HTTP)\n"
	"  --insecure             do not verify TLS certificates\n"
	"  --ca-cert FILE         also trust the CA certificates in FILE (PEM)\n"
	"  --deadline DURATION    stop after e.g. 90s, 10m; exit 3, progress kept\n"
	"  --ready-file PATH      written (atomically) when every image is in;\n"
	"                         removed at the start of a run\n"
	"  --stall-timeout DURATION  cancel a request that receives nothing this long\n"
	"                         (default 30s); its chunk is fetched again\n"
	"  -v, --verbose          debug logging\n"
	"\n"
	"Exit codes: 0 all images done, 1 failed, 2 usage error, 3 deadline reached.\n";

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
	got_signal = sig;
	pp_stop_requested = 1;
}

static int usage_error(const char *fmt, const char *arg)
{
	fputs("prepull: ", stderr);
	fprintf(stderr, fmt, arg);
	fputs("\nTry 'prepull --help'.\n", stderr);
	return EXIT_USAGE;
}

static char *default_state_dir(void)
{
	if (geteuid() == 0)
		return pp_xstrdup("/var/lib/prepull");
	const char *xdg = getenv("XDG_CACHE_HOME");
	if (xdg && *xdg)
		return pp_xasprintf("%s/prepull", xdg);
	const char *home = getenv("HOME");
	return pp_xasprintf("%s/.cache/prepull", home && *home ? home : "/tmp");
}

struct run;

/* What a blob callback needs: the image and where to report. */
struct image_ctx {
	struct run *run;
	struct pp_image *img;
};

struct run {
	struct pp_options *opts;
	struct pp_store *store;
	struct pp_progress *progress;
	struct pp_image *images;
	struct image_ctx *ctxs;
	size_t n_images;
};

static void image_fail(struct run *run, struct pp_image *img, const struct pp_error *err)
{
	if (img->failed)
		return;
	img->failed = true;
	img->err = *err;
	pp_progress_image_failed(run->progress, img->ref.full ? img->ref.full : "?", err->msg);
}

static void on_blob(void *ctx, const char *digest, int64_t size, int64_t fetched, double seconds,
		    const struct pp_error *err)
{
	struct image_ctx *ic = ctx;
	struct pp_image *img = ic->img;
	if (err) {
		image_fail(ic->run, img, err);
		return;
	}
	img->pending--;
	img->done_bytes += size;
	pp_progress_blob_done(ic->run->progress, img, digest, size, fetched, seconds);
}

/* The ready file says which images are in, with their digests; it exists
 * only while every image of the run is in the store. */
static void write_ready_file(const struct run *run)
{
	json_t *images = json_array();
	for (size_t i = 0; i < run->n_images; i++) {
		const struct pp_image *img = &run->images[i];
		json_array_append_new(images, json_pack("{s:s, s:s}", "image", img->ref.full,
							"digest", img->top_digest));
	}
	json_t *root = json_pack("{s:s, s:o}", "store", run->store->desc, "images", images);
	char *text = json_dumps(root, JSON_INDENT(2));
	json_decref(root);
	struct pp_error err = {0};
	cleanup_free char *dir = pp_xstrdup(run->opts->ready_file);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		pp_mkdir_p(dir, 0755);
	}
	if (pp_write_file_atomic(run->opts->ready_file, text, strlen(text), &err) < 0)
		pp_error_log("ready file: %s", err.msg);
	free(text);
}

static int pull(struct pp_options *opts, const char *const *refs, int n_refs)
{
	struct pp_error err = {0};
	struct run run = {.opts = opts};
	int exit_code = EXIT_OK;
	int failed = 0;
	int64_t bytes_in_store = 0;
	struct pp_engine *engine = NULL;

	run.images = pp_xcalloc((size_t)n_refs, sizeof(*run.images));
	run.ctxs = pp_xcalloc((size_t)n_refs, sizeof(*run.ctxs));
	run.n_images = (size_t)n_refs;
	for (int i = 0; i < n_refs; i++) {
		run.ctxs[i] = (struct image_ctx){&run, &run.images[i]};
		if (pp_ref_parse(&run.images[i].ref, refs[i], &err) < 0) {
			fprintf(stderr, "prepull: error: %s\n", err.msg);
			exit_code = EXIT_FAILED;
		}
	}
	if (exit_code != EXIT_OK)
		goto done;
	if (opts->ready_file && unlink(opts->ready_file) < 0 && errno != ENOENT)
		pp_warn("remove %s: %s", opts->ready_file, strerror(errno));

	if (pp_state_dir_open(opts->state_dir, &err) < 0) {
		fprintf(stderr, "prepull: error: %s\n", err.msg);
		exit_code = EXIT_FAILED;
		goto done;
	}
	if (opts->deadline > 0)
		pp_deadline_at = pp_now() + opts->deadline;
	run.progress = pp_progress_new(opts);
	if (pp_store_open(&run.store, opts->store, opts, &err) < 0) {
		fprintf(stderr, "prepull: error: store: %s\n", err.msg);
		exit_code = err.code == PP_EUSAGE ? EXIT_USAGE : EXIT_FAILED;
		goto done;
	}
	pp_progress_store(run.progress, run.store->desc);
	if (pp_engine_new(&engine, opts, run.store, run.progress, &err) < 0) {
		fprintf(stderr, "prepull: error: %s\n", err.msg);
		exit_code = EXIT_FAILED;
		goto done;
	}
	pp_progress_set_engine(run.progress, engine);

	/* Resolve every image first; then one fetch loop moves all their blobs. */
	for (size_t i = 0; i < run.n_images && !pp_should_stop(); i++) {
		struct pp_image *img = &run.images[i];
		pp_error_clear(&err);
		if (pp_image_resolve(img, opts, run.store, &err) < 0) {
			if (err.code != PP_EINTR && err.code != PP_EDEADLINE)
				image_fail(&run, img, &err);
			continue;
		}
		pp_progress_resolved(run.progress, img);
		bool complete = false;
		if (pp_store_prepare_image(run.store, img, &complete, &err) < 0) {
			image_fail(&run, img, &err);
			continue;
		}
		if (complete) {
			img->already_complete = true;
			img->planned = true;
			img->done_bytes = img->total_bytes;
			continue;
		}
		const struct pp_descriptor *cfg = &img->manifest.config;
		img->done_bytes = cfg->size;
		if (img->config_fetched)
			pp_progress_blob_done(run.progress, img, cfg->digest, cfg->size, cfg->size,
					      img->config_seconds);
		else
			pp_progress_blob_present(run.progress, img, cfg->digest, cfg->size);
		for (size_t l = 0; l < img->manifest.n_layers; l++) {
			const struct pp_descriptor *d = &img->manifest.layers[l];
			bool have = false;
			int hr = pp_store_has_layer(run.store, img, l, &have, &err);
			if (hr < 0) {
				image_fail(&run, img, &err);
				break;
			}
			if (have) {
				img->done_bytes += d->size;
				pp_progress_blob_present(run.progress, img, d->digest, d->size);
				continue;
			}
			if (pp_engine_add(engine, img->reg, img->ref.path, d->digest, d->size,
					  on_blob, &run.ctxs[i], &err) < 0) {
				image_fail(&run, img, &err);
				break;
			}
			img->pending++;
			pp_progress_plan(run.progress, d->size);
		}
		img->planned = !img->failed;
	}

	int r = pp_should_stop() ? 0 : pp_engine_run(engine, &err);
	if (pp_stop_requested) {
		fprintf(stderr, "prepull: interrupted; run again to resume\n");
		exit_code = EXIT_FAILED;
	} else if (pp_should_stop()) {
		fprintf(stderr, "prepull: deadline reached; progress kept for the next run\n");
		exit_code = EXIT_DEADLINE;
	} else if (r < 0) {
		fprintf(stderr, "prepull: error: %s\n", err.msg);
		exit_code = EXIT_FAILED;
	}

	for (size_t i = 0; i < run.n_images; i++) {
		struct pp_image *img = &run.images[i];
		if (img->failed) {
			failed++; /* reported when it happened */
			continue;
		}
		if (!img->planned || img->pending > 0)
			continue; /* stopped early: resolved in part, or blobs missing */
		pp_error_clear(&err);
		if (!img->already_complete && pp_store_register_image(run.store, img, &err) < 0) {
			image_fail(&run, img, &err);
			failed++;
			continue;
		}
		bytes_in_store += img->total_bytes;
		pp_progress_image_done(run.progress, img);
	}
	if (failed && exit_code == EXIT_OK)
		exit_code = EXIT_FAILED;
	if (exit_code == EXIT_OK && opts->ready_file)
		write_ready_file(&run);
	pp_progress_summary(run.progress, (int)run.n_images, failed, bytes_in_store,
			    pp_engine_fetched(engine));
done:
	pp_engine_free(engine);
	for (size_t i = 0; i < run.n_images; i++)
		pp_image_free(&run.images[i]);
	free(run.images);
	free(run.ctxs);
	pp_store_free(run.store);
	pp_progress_free(run.progress);
	pp_registry_free_all();
	return exit_code;
}

/* Whether another process holds a partial file's lock, and which. */
static pid_t lock_holder(const char *partial)
{
	int fd = open(partial, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	pid_t pid = fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK ? fl.l_pid : 0;
	close(fd);
	return pid;
}

/* Lists the partial blobs in one directory; returns how many. */
static int status_dir(const char *dir, bool show_dir)
{
	DIR *d = opendir(dir);
	int n = 0;
	struct dirent *de;
	while (d && (de = readdir(d))) {
		size_t len = strlen(de->d_name);
		if (len < 9 || strcmp(de->d_name + len - 8, ".journal") != 0)
			continue;
		cleanup_free char *path = pp_xasprintf("%s/%s", dir, de->d_name);
		cleanup_free char *partial =
			pp_xasprintf("%s/%.*s.partial", dir, (int)(len - 8), de->d_name);
		struct pp_journal j = {0};
		struct pp_error err = {0};
		if (pp_journal_load(&j, path, &err) < 0) {
			printf("%.*s  unreadable journal: %s\n", (int)(len - 8), de->d_name,
			       err.msg);
			continue;
		}
		int64_t done = 0;
		for (size_t i = 0; i < j.n_chunks; i++) {
			int64_t off = (int64_t)i * j.chunk_size;
			if (j.chunks[i].done[0])
				done += off + j.chunk_size > j.size ? j.size - off : j.chunk_size;
			else
				done += j.chunks[i].part_len;
		}
		char total[32], got[32];
		pid_t pid = lock_holder(partial);
		printf("%s  %5.1f%%  %s of %s", j.digest,
		       j.size ? 100.0 * (double)done / (double)j.size : 100.0,
		       pp_format_bytes(got, sizeof(got), (double)done),
		       pp_format_bytes(total, sizeof(total), (double)j.size));
		if (pid)
			printf("  (being fetched by pid %ld)", (long)pid);
		if (show_dir)
			printf("  in %s", dir);
		putchar('\n');
		pp_journal_free(&j);
		n++;
	}
	if (d)
		closedir(d);
	return n;
}

/* The state dir's partial/, then the directories beside stores on other
 * filesystems that runs with this state dir recorded. */
static int status(const char *state_dir)
{
	cleanup_free char *own = pp_xasprintf("%s/partial", state_dir);
	int n = status_dir(own, false);
	cleanup_free char *list = pp_xasprintf("%s/%s", state_dir, PP_STAGE_DIRS_FILE);
	FILE *f = fopen(list, "re");
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	while (f && (len = getline(&line, &cap, f)) > 0) {
		if (line[len - 1] == '\n')
			line[--len] = '\0';
		if (len > 0)
			n += status_dir(line, true);
	}
	free(line);
	if (f)
		fclose(f);
	if (!n)
		printf("no partial downloads in %s\n", state_dir);
	return EXIT_OK;
}

enum {
	OPT_STORE = 256,
	OPT_NAMESPACE,
	OPT_SNAPSHOTTER,
	OPT_PLATFORM,
	OPT_PER_HOST,
	OPT_CHUNK_SIZE,
	OPT_STATE_DIR,
	OPT_JSON,
	OPT_PLAIN_HTTP,
	OPT_INSECURE,
	OPT_CA_CERT,
	OPT_DEADLINE,
	OPT_STALL,
	OPT_READY_FILE,
	OPT_CONFIG,
	OPT_HELP,
	OPT_VERSION,
};

static const struct option long_options[] = {
	{"store", required_argument, NULL, OPT_STORE},
	{"namespace", required_argument, NULL, OPT_NAMESPACE},
	{"snapshotter", required_argument, NULL, OPT_SNAPSHOTTER},
	{"platform", required_argument, NULL, OPT_PLATFORM},
	{"connections", required_argument, NULL, 'j'},
	{"per-host", required_argument, NULL, OPT_PER_HOST},
	{"chunk-size", required_argument, NULL, OPT_CHUNK_SIZE},
	{"state-dir", required_argument, NULL, OPT_STATE_DIR},
	{"json", no_argument, NULL, OPT_JSON},
	{"quiet", no_argument, NULL, 'q'},
	{"verbose", no_argument, NULL, 'v'},
	{"plain-http", no_argument, NULL, OPT_PLAIN_HTTP},
	{"insecure", no_argument, NULL, OPT_INSECURE},
	{"ca-cert", required_argument, NULL, OPT_CA_CERT},
	{"deadline", required_argument, NULL, OPT_DEADLINE},
	{"stall-timeout", required_argument, NULL, OPT_STALL},
	{"ready-file", required_argument, NULL, OPT_READY_FILE},
	{"config", required_argument, NULL, OPT_CONFIG},
	{"help", no_argument, NULL, OPT_HELP},
	{"version", no_argument, NULL, OPT_VERSION},
	{NULL, 0, NULL, 0},
};

int main(int argc, char **argv)
{
	struct pp_options opts = {
		.store = "auto",
		.namespace = "k8s.io",
		.snapshotter = "overlayfs",
		.connections = PP_DEFAULT_CONNECTIONS,
		.stall_seconds = PP_DEFAULT_STALL_SECONDS,
	};
	pp_platform_default(&opts.platform);
	cleanup_free char *state_dir = NULL;
	struct pp_error err = {0};

	if (argc >= 2 && strcmp(argv[1], "--help") == 0) {
		fputs(usage_text, stdout);
		return EXIT_OK;
	}
	if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
		printf("prepull %s (%s)\n", PREPULL_VERSION, curl_version());
		return EXIT_OK;
	}
	if (argc < 2)
		return usage_error("%s", "missing command (pull or status)");
	const char *cmd = argv[1];
	if (strcmp(cmd, "pull") != 0 && strcmp(cmd, "status") != 0)
		return usage_error("unknown command \"%s\"", cmd);

	/* Options come from the defaults, then the config file, then the
	 * command line, each overriding the one before.  A first pass looks
	 * only for --config and for images on the command line; getopt is
	 * given argv from the command word on, so optind = 0 restarts it. */
	int ac = argc - 1;
	char **av = argv + 1;
	const char *config_path = NULL;
	int c;
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(ac, av, ":j:qv", long_options, NULL)) != -1)
		if (c == OPT_CONFIG)
			config_path = optarg;
	bool default_config = false;
	if (!config_path && (strcmp(cmd, "status") == 0 || optind >= ac) &&
	    access(PP_DEFAULT_CONFIG, F_OK) == 0) {
		config_path = PP_DEFAULT_CONFIG;
		default_config = true;
	}
	__attribute__((cleanup(pp_config_free))) struct pp_config cfg = {0};
	if (config_path && pp_config_load(&cfg, config_path, &opts, &err) < 0)
		return usage_error("%s", err.msg);

	optind = 0;
	while ((c = getopt_long(ac, av, ":j:qv", long_options, NULL)) != -1) {
		switch (c) {
		case OPT_STORE:
			opts.store = optarg;
			break;
		case OPT_NAMESPACE:
			opts.namespace = optarg;
			break;
		case OPT_SNAPSHOTTER:
			opts.snapshotter = optarg;
			break;
		case OPT_PLATFORM:
			if (pp_platform_parse(&opts.platform, optarg, &err) < 0)
				return usage_error("--platform: %s", err.msg);
			break;
		case 'j': {
			char *end;
			long n = strtol(optarg, &end, 10);
			if (*end || n < 1 || n > 256)
				return usage_error(
					"-j/--connections: expected 1 to 256, got \"%s\"", optarg);
			opts.connections = (int)n;
			break;
		}
		case OPT_PER_HOST: {
			char *end;
			long n = strtol(optarg, &end, 10);
			if (*end || n < 1 || n > 256)
				return usage_error("--per-host: expected 1 to 256, got \"%s\"",
						   optarg);
			opts.per_host = (int)n;
			break;
		}
		case OPT_CHUNK_SIZE:
			opts.chunk_size = pp_parse_size(optarg);
			if (opts.chunk_size < 64 * 1024 || opts.chunk_size > (1LL << 30))
				return usage_error("--chunk-size: expected 64K to 1G, got \"%s\"",
						   optarg);
			break;
		case OPT_STATE_DIR:
			opts.state_dir = optarg;
			break;
		case OPT_JSON:
			opts.json = true;
			break;
		case 'q':
			opts.quiet = true;
			break;
		case 'v':
			pp_log_level = PP_LOG_DEBUG;
			break;
		case OPT_PLAIN_HTTP:
			opts.plain_http = true;
			break;
		case OPT_INSECURE:
			opts.insecure = true;
			break;
		case OPT_CA_CERT:
			if (access(optarg, R_OK) < 0)
				return usage_error("--ca-cert: cannot read \"%s\"", optarg);
			opts.ca_cert = optarg;
			break;
		case OPT_DEADLINE:
			opts.deadline = pp_parse_duration(optarg);
			if (opts.deadline <= 0)
				return usage_error(
					"--deadline: expected a duration like 90s or 10m, "
					"got \"%s\"",
					optarg);
			break;
		case OPT_STALL:
			opts.stall_seconds = pp_parse_duration(optarg);
			if (opts.stall_seconds < 1)
				return usage_error(
					"--stall-timeout: expected 1s or more, got \"%s\"", optarg);
			break;
		case OPT_READY_FILE:
			opts.ready_file = optarg;
			break;
		case OPT_CONFIG:
			break; /* read above */
		case OPT_HELP:
			fputs(usage_text, stdout);
			return EXIT_OK;
		case OPT_VERSION:
			printf("prepull %s\n", PREPULL_VERSION);
			return EXIT_OK;
		case ':':
			return usage_error("option %s needs a value", av[optind - 1]);
		default:
			return usage_error("unknown option %s", av[optind - 1]);
		}
	}
	if (opts.per_host == 0 || opts.per_host > opts.connections)
		opts.per_host = opts.connections;
	if (!opts.state_dir)
		opts.state_dir = state_dir = default_state_dir();
	if (opts.quiet)
		pp_log_level = PP_LOG_ERROR;

	if (strcmp(cmd, "status") == 0)
		return status(opts.state_dir);
	/* Images named on the command line replace the file's list. */
	const char *const *refs = (const char *const *)(av + optind);
	int n_refs = ac - optind;
	if (n_refs == 0 && cfg.n_images > 0) {
		refs = cfg.images;
		n_refs = (int)cfg.n_images;
	}
	if (n_refs == 0 && config_path)
		return usage_error("pull: no image given, neither on the command line nor in "
				   "\"images\" of %s",
				   config_path);
	if (n_refs == 0)
		return usage_error("%s", "pull: no image given");
	if (default_config && !opts.quiet)
		fprintf(stderr, "prepull: no image given; reading %s\n", config_path);

	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	srand((unsigned)(getpid() ^ (unsigned)(pp_now() * 1000)));
	int rc = pull(&opts, refs, n_refs);
	curl_global_cleanup();
	return rc;
}
