/* prepull: pre-pull container images with parallel range requests. */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "prepull/commands.h"
#include "prepull/config.h"
#include "prepull/error.h"
#include "prepull/log.h"
#include "prepull/options.h"
#include "prepull/sanitize.h"
#include "prepull/stop.h"
#include "prepull/util.h"

static const char usage_text[] =
	"Usage: prepull pull [OPTIONS] IMAGE...\n"
	"       prepull pull --config FILE [OPTIONS] [IMAGE...]\n"
	"       prepull status [--state-dir DIR]\n"
	"       prepull prune [--older-than DURATION] [--state-dir DIR]\n"
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
	"  --unpacker WHO         who applies layers into containerd's overlayfs\n"
	"                         snapshots: prepull (default: as their bytes arrive,\n"
	"                         ISA-L/zstd inflate) or containerd (Diff.Apply once\n"
	"                         each layer is in)\n"
	"  --discard-layers       containerd only: once a layer is unpacked, its\n"
	"                         compressed blob is not kept in the content store\n"
	"                         (disk for huge images; `ctr images check` then says\n"
	"                         incomplete, and a later ctr/docker pull fetches it)\n"
	"  --platform OS/ARCH[/VARIANT]  platform to take from a multi-arch index\n"
	"                         (default: this machine's)\n"
	"  -j, --connections N    parallel connections in total (default: automatic,\n"
	"                         8 at first, more while they raise the total rate)\n"
	"  --max-connections N    the most the automatic count may use (default 64)\n"
	"  --per-host N           parallel connections to one registry (default: -j)\n"
	"  --chunk-size SIZE      bytes per chunk, each hashed on its own, e.g. 8M\n"
	"                         (default: adaptive, 1M-16M by blob size); a request\n"
	"                         covers several when the registry is far\n"
	"  --state-dir DIR        partial downloads (default /var/lib/prepull as root,\n"
	"                         $XDG_CACHE_HOME/prepull otherwise)\n"
	"  --json                 one JSON event per line on stdout\n"
	"  -q, --quiet            print only errors and the summary\n"
	"  --plain-http           talk HTTP, not HTTPS (for localhost, 127.0.0.0/8\n"
	"                         and ::1 HTTPS is tried first, then HTTP)\n"
	"  --insecure             do not verify TLS certificates\n"
	"  --ca-cert FILE         also trust the CA certificates in FILE (PEM)\n"
	"  --hosts-dir DIR        containerd's registry hosts: DIR/<host>/hosts.toml,\n"
	"                         then DIR/_default (default /etc/containerd/certs.d;\n"
	"                         '' for none)\n"
	"  --mirror HOST=URL      try URL before registry HOST (repeatable; replaces\n"
	"                         the config's \"mirrors\"); a mirror that fails a\n"
	"                         request hands it to the next host\n"
	"  --cache-fill MODE      a mirror answering a range with the whole blob is\n"
	"                         filling its cache: wait (default) for it, asking\n"
	"                         again with backoff (up to 30s, or the blob at 50MB/s),\n"
	"                         so the registry sends the blob once; or bypass: take\n"
	"                         the blob from the registry meanwhile\n"
	"  --deadline DURATION    stop after e.g. 90s, 10m; exit 3, progress kept\n"
	"  --ready-file PATH      written (atomically) when every image is in;\n"
	"                         removed at the start of a run\n"
	"  --stall-timeout DURATION  cancel a request that receives nothing this long\n"
	"                         (default 30s); its chunk is fetched again\n"
	"  --give-up-after DURATION  a blob fails when its failed requests bring no\n"
	"                         new verified bytes for this long (default 2m); what\n"
	"                         it has stays on disk for the next run\n"
	"  --max-image-size SIZE  fail an image whose layers and config declare more\n"
	"                         than SIZE bytes in all (default 1T)\n"
	"  -v, --verbose          debug logging\n"
	"\n"
	"Options for prune (partial downloads no run is working on):\n"
	"  --older-than DURATION  only those untouched for this long, e.g. 48h\n"
	"  --state-dir DIR        as for pull\n"
	"\n"
	"Stores, and what each needs:\n"
	"  oci:DIR                an OCI image layout; no daemon. Write access to DIR\n"
	"  containerd[:SOCKET]    default /run/containerd/containerd.sock. Root:\n"
	"                         prepull writes into containerd's content store, so\n"
	"                         containerd runs on this machine. Tested: containerd\n"
	"                         1.6 (Debian 12) and 2.1 (Debian sid)\n"
	"  docker[:SOCKET]        default $DOCKER_HOST (unix://) or /var/run/docker.sock.\n"
	"                         Root or the socket's group (docker); root when\n"
	"                         Docker keeps its images in containerd (the containerd\n"
	"                         path, namespace moby). Engine API 1.24-1.47. Tested:\n"
	"                         dockerd 20.10 (Debian 12, classic store) and 28\n"
	"                         (Debian sid, containerd image store)\n"
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
	/* An argument may hold any bytes (a pasted escape sequence, a file
	 * name in another encoding): it is shown escaped, as a server's text. */
	cleanup_free char *shown = pp_sanitize_dup(arg);
	fputs("prepull: ", stderr);
	fprintf(stderr, fmt, shown ? shown : "");
	fputs("\nTry 'prepull --help'.\n", stderr);
	return PP_EXIT_USAGE;
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

enum {
	OPT_STORE = 256,
	OPT_NAMESPACE,
	OPT_SNAPSHOTTER,
	OPT_UNPACKER,
	OPT_DISCARD_LAYERS,
	OPT_PLATFORM,
	OPT_PER_HOST,
	OPT_MAX_CONNECTIONS,
	OPT_CHUNK_SIZE,
	OPT_STATE_DIR,
	OPT_JSON,
	OPT_PLAIN_HTTP,
	OPT_INSECURE,
	OPT_CA_CERT,
	OPT_DEADLINE,
	OPT_STALL,
	OPT_GIVE_UP,
	OPT_MAX_IMAGE,
	OPT_OLDER_THAN,
	OPT_READY_FILE,
	OPT_CONFIG,
	OPT_HOSTS_DIR,
	OPT_MIRROR,
	OPT_CACHE_FILL,
	OPT_HELP,
	OPT_VERSION,
};

static const struct option long_options[] = {
	{"store", required_argument, NULL, OPT_STORE},
	{"namespace", required_argument, NULL, OPT_NAMESPACE},
	{"snapshotter", required_argument, NULL, OPT_SNAPSHOTTER},
	{"unpacker", required_argument, NULL, OPT_UNPACKER},
	{"discard-layers", no_argument, NULL, OPT_DISCARD_LAYERS},
	{"platform", required_argument, NULL, OPT_PLATFORM},
	{"connections", required_argument, NULL, 'j'},
	{"per-host", required_argument, NULL, OPT_PER_HOST},
	{"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
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
	{"give-up-after", required_argument, NULL, OPT_GIVE_UP},
	{"max-image-size", required_argument, NULL, OPT_MAX_IMAGE},
	{"older-than", required_argument, NULL, OPT_OLDER_THAN},
	{"ready-file", required_argument, NULL, OPT_READY_FILE},
	{"config", required_argument, NULL, OPT_CONFIG},
	{"hosts-dir", required_argument, NULL, OPT_HOSTS_DIR},
	{"mirror", required_argument, NULL, OPT_MIRROR},
	{"cache-fill", required_argument, NULL, OPT_CACHE_FILL},
	{"help", no_argument, NULL, OPT_HELP},
	{"version", no_argument, NULL, OPT_VERSION},
	{NULL, 0, NULL, 0},
};

/* Every connection and every blob being fetched or hashed holds file
 * descriptors: take all the kernel allows this process (the soft limit is
 * often 1024 while the hard one is far higher).  The engine sizes what it
 * keeps open by the limit it finds. */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
		return;
	rlim_t was = rl.rlim_cur;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		pp_warn("cannot raise the open-file limit from %llu to %llu: %s",
			(unsigned long long)was, (unsigned long long)rl.rlim_max, strerror(errno));
}

int main(int argc, char **argv)
{
	struct pp_options opts = {
		.store = "auto",
		.namespace = "k8s.io",
		.snapshotter = "overlayfs",
		.connections = PP_DEFAULT_CONNECTIONS,
		.auto_connections = true,
		.max_connections = PP_DEFAULT_MAX_CONNECTIONS,
		.stall_seconds = PP_DEFAULT_STALL_SECONDS,
		.give_up_seconds = PP_DEFAULT_GIVE_UP_SECONDS,
		.max_image_size = PP_DEFAULT_MAX_IMAGE_SIZE,
	};
	double older_than = 0;
	pp_platform_default(&opts.platform);
	cleanup_free char *state_dir = NULL;
	cleanup_free const char **cli_mirrors = NULL;
	struct pp_error err = {0};

	if (argc >= 2 && strcmp(argv[1], "--help") == 0) {
		fputs(usage_text, stdout);
		return PP_EXIT_OK;
	}
	if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
		printf("prepull %s (%s)\n", PREPULL_VERSION, curl_version());
		return PP_EXIT_OK;
	}
	if (argc < 2)
		return usage_error("%s", "missing command (pull, status or prune)");
	const char *cmd = argv[1];
	bool is_pull = strcmp(cmd, "pull") == 0;
	if (!is_pull && strcmp(cmd, "status") != 0 && strcmp(cmd, "prune") != 0)
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
	if (!config_path && (!is_pull || optind >= ac) && access(PP_DEFAULT_CONFIG, F_OK) == 0) {
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
		case OPT_UNPACKER:
			if (strcmp(optarg, "prepull") != 0 && strcmp(optarg, "containerd") != 0)
				return usage_error(
					"--unpacker: expected prepull or containerd, got \"%s\"",
					optarg);
			opts.unpacker = optarg;
			break;
		case OPT_CACHE_FILL:
			if (strcmp(optarg, "wait") != 0 && strcmp(optarg, "bypass") != 0)
				return usage_error(
					"--cache-fill: expected wait or bypass, got \"%s\"",
					optarg);
			opts.cache_fill_bypass = strcmp(optarg, "bypass") == 0;
			break;
		case OPT_DISCARD_LAYERS:
			opts.discard_layers = true;
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
			opts.auto_connections = false;
			break;
		}
		case OPT_MAX_CONNECTIONS: {
			char *end;
			long n = strtol(optarg, &end, 10);
			if (*end || n < 1 || n > 256)
				return usage_error(
					"--max-connections: expected 1 to 256, got \"%s\"", optarg);
			opts.max_connections = (int)n;
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
		case OPT_HOSTS_DIR:
			opts.hosts_dir = optarg;
			break;
		case OPT_MIRROR:
			/* The first --mirror drops the config's list. */
			if (!cli_mirrors)
				opts.n_mirrors = 0;
			if (!strchr(optarg, '=') || optarg[0] == '=' || !strchr(optarg, '=')[1])
				return usage_error("--mirror: expected HOST=URL, got \"%s\"",
						   optarg);
			cli_mirrors = pp_xrealloc(cli_mirrors,
						  (opts.n_mirrors + 1) * sizeof(*cli_mirrors));
			cli_mirrors[opts.n_mirrors++] = optarg;
			opts.mirrors = cli_mirrors;
			break;
		case OPT_CA_CERT:
			if (access(optarg, R_OK) < 0)
				return usage_error("--ca-cert: cannot read \"%s\"", optarg);
			opts.ca_cert = optarg;
			break;
		case OPT_DEADLINE:
			opts.deadline = pp_parse_duration(optarg);
			if (!(opts.deadline > 0))
				return usage_error(
					"--deadline: expected a duration like 90s or 10m, "
					"got \"%s\"",
					optarg);
			break;
		case OPT_STALL:
			opts.stall_seconds = pp_parse_duration(optarg);
			if (!(opts.stall_seconds >= 1))
				return usage_error(
					"--stall-timeout: expected 1s or more, got \"%s\"", optarg);
			break;
		case OPT_GIVE_UP:
			opts.give_up_seconds = pp_parse_duration(optarg);
			if (!(opts.give_up_seconds >= 1))
				return usage_error(
					"--give-up-after: expected 1s or more, got \"%s\"", optarg);
			break;
		case OPT_MAX_IMAGE:
			opts.max_image_size = pp_parse_size(optarg);
			if (opts.max_image_size < 1)
				return usage_error("--max-image-size: expected a size like 500G or "
						   "1T, got \"%s\"",
						   optarg);
			break;
		case OPT_OLDER_THAN:
			if (strcmp(cmd, "prune") != 0)
				return usage_error("%s", "--older-than is an option of prune");
			older_than = pp_parse_duration(optarg);
			if (!(older_than >= 0))
				return usage_error("--older-than: expected a duration like 30m or "
						   "48h, got \"%s\"",
						   optarg);
			break;
		case OPT_READY_FILE:
			opts.ready_file = optarg;
			break;
		case OPT_CONFIG:
			break; /* read above */
		case OPT_HELP:
			fputs(usage_text, stdout);
			return PP_EXIT_OK;
		case OPT_VERSION:
			printf("prepull %s\n", PREPULL_VERSION);
			return PP_EXIT_OK;
		case ':':
			return usage_error("option %s needs a value", av[optind - 1]);
		default:
			return usage_error("unknown option %s", av[optind - 1]);
		}
	}
	if (opts.auto_connections && opts.connections > opts.max_connections)
		opts.connections = opts.max_connections;
	int most = opts.auto_connections ? opts.max_connections : opts.connections;
	if (opts.per_host == 0 || opts.per_host > most)
		opts.per_host = most;
	if (!opts.state_dir)
		opts.state_dir = state_dir = default_state_dir();
	if (opts.quiet)
		pp_log_level = PP_LOG_ERROR;

	if (strcmp(cmd, "status") == 0)
		return pp_status(opts.state_dir);
	if (strcmp(cmd, "prune") == 0) {
		if (optind < ac)
			return usage_error("prune: unexpected argument \"%s\"", av[optind]);
		return pp_prune(opts.state_dir, older_than);
	}
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
	raise_fd_limit();
	curl_global_init(CURL_GLOBAL_DEFAULT);
	srand((unsigned)(getpid() ^ (unsigned)(pp_now() * 1000)));
	int rc = pp_pull(&opts, refs, n_refs);
	curl_global_cleanup();
	return rc;
}
