/* The settings of one prepull run: defaults, then the config file
 * (config.c), then the command line (main.c), each overriding the one
 * before.  Those two write them, before the run starts; every other module
 * only reads them (through a const pointer). */
#ifndef PREPULL_OPTIONS_H
#define PREPULL_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "prepull/manifest.h"

#define PP_DEFAULT_CONNECTIONS 8      /* without -j: the automatic count's start */
#define PP_DEFAULT_MAX_CONNECTIONS 64 /* without -j: the automatic count's cap */
#define PP_DEFAULT_STALL_SECONDS 30
#define PP_DEFAULT_GIVE_UP_SECONDS 120        /* --give-up-after 2m */
#define PP_DEFAULT_MAX_IMAGE_SIZE (1LL << 40) /* --max-image-size 1T */

struct pp_options {
	const char *store;       /* "oci:DIR", "auto", ... */
	const char *namespace;   /* containerd namespace */
	const char *snapshotter; /* containerd snapshotter */
	const char *unpacker;    /* "prepull" (default) or "containerd": who applies layers */
	struct pp_platform platform;
	int connections;       /* total connections (-j), or the automatic count's start */
	bool auto_connections; /* no -j: the engine adds connections while they help */
	int max_connections;   /* the automatic count's cap (--max-connections) */
	int per_host;          /* connections to one host */
	int64_t chunk_size;    /* 0 = adaptive */
	const char *state_dir;
	bool json;
	bool quiet;
	bool plain_http;
	bool insecure;
	const char *ca_cert;    /* extra CA bundle (PEM) */
	double deadline;        /* seconds from start, 0 = none */
	double stall_seconds;   /* no bytes for this long cancels a request */
	double give_up_seconds; /* a blob without progress this long fails */
	int64_t max_image_size; /* an image declaring more bytes fails */
	const char *ready_file;
	bool discard_layers;        /* containerd: drop a layer's blob once it is unpacked */
	const char *hosts_dir;      /* containerd's hosts.toml root; NULL: the default, "": none */
	const char *const *mirrors; /* "HOST=URL", tried before HOST (--mirror, "mirrors") */
	size_t n_mirrors;
	bool cache_fill_bypass; /* --cache-fill bypass: no waiting for a mirror filling a blob */
};

#endif
