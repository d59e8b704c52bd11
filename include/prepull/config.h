/* The configuration file: a JSON object whose keys mirror the pull
 * options, so that cloud-init or Packer can describe a boot-time pull in
 * one file (/etc/prepull/config.json) and the systemd unit runs
 * `prepull pull --config FILE`.
 *
 *   {"images": ["registry.example.com/app:1"], "store": "containerd",
 *    "namespace": "k8s.io", "connections": 32, "chunk_size": "8M",
 *    "deadline": "10m", "ready_file": "/run/prepull/ready"}
 *
 * Keys: images (array of references), store, namespace, snapshotter,
 * unpacker ("prepull" or "containerd"), platform, connections, per_host,
 * chunk_size and max_image_size (bytes or "8M"), state_dir, deadline,
 * stall_timeout and give_up_after (seconds or "90s"/"10m"), ready_file,
 * plain_http, insecure and discard_layers (booleans), ca_cert, hosts_dir
 * (containerd's hosts.toml root, "" for none) and mirrors
 * ({"HOST": "URL" or ["URL", ...]}, as --mirror HOST=URL).  Any other
 * key, or a value of the wrong type or out of range, is an error that
 * names the key. */
#ifndef PREPULL_CONFIG_H
#define PREPULL_CONFIG_H

#include <stddef.h>

struct json_t;
struct pp_error;
struct pp_options;

#define PP_DEFAULT_CONFIG "/etc/prepull/config.json"

struct pp_config {
	char *path;
	struct json_t *root; /* owns every string handed out below */
	const char **images; /* the "images" array; NULL when the key is absent */
	size_t n_images;
	char **mirrors; /* "HOST=URL" from the "mirrors" object, owned here */
	size_t n_mirrors;
};

/* Reads `path` into cfg and sets in *opts every option the file names;
 * options it does not name are left as they are.  Strings stored in opts
 * and cfg->images point into cfg and live until pp_config_free().
 * Returns 0, PP_ENOTFOUND when the file cannot be read, or PP_EUSAGE for
 * malformed JSON, an unknown key or a bad value; err->msg starts with
 * "config PATH: " and names the key. */
int pp_config_load(struct pp_config *cfg, const char *path, struct pp_options *opts,
		   struct pp_error *err);

/* Parses a configuration from memory (`path` is used in messages only). */
int pp_config_parse(struct pp_config *cfg, const char *path, const char *text, size_t len,
		    struct pp_options *opts, struct pp_error *err);

void pp_config_free(struct pp_config *cfg);

#endif
