/* The JSON configuration file (see config.h).  Each key is checked by its
 * own small function with the same bounds as the command-line option of
 * the same name, and every message names the file and the key. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "prepull/config.h"
#include "prepull/error.h"
#include "prepull/options.h"
#include "prepull/util.h"

#define CONFIG_MAX_BYTES (1 << 20)

struct key_ctx {
	struct pp_config *cfg;
	struct pp_options *opts;
	const char *key;
	json_t *value;
	struct pp_error *err;
};

static int bad_value(struct key_ctx *k, const char *expected)
{
	char shown[64];
	cleanup_free char *text = json_dumps(k->value, JSON_ENCODE_ANY | JSON_COMPACT);
	return pp_error_set(k->err, PP_EUSAGE, "config %s: \"%s\": expected %s, got %s",
			    k->cfg->path, k->key, expected,
			    pp_printable(shown, sizeof(shown), text ? text : "?"));
}

/* A non-empty string, or an error naming the key. */
static int want_string(struct key_ctx *k, const char **out)
{
	const char *s = json_string_value(k->value);
	if (!s || !*s)
		return bad_value(k, "a non-empty string");
	*out = s;
	return 0;
}

static int want_int(struct key_ctx *k, long min, long max, int *out)
{
	double v = json_is_integer(k->value) ? (double)json_integer_value(k->value) : -1;
	if (!json_is_integer(k->value) || v < min || v > max) {
		char what[64];
		snprintf(what, sizeof(what), "an integer from %ld to %ld", min, max);
		return bad_value(k, what);
	}
	*out = (int)v;
	return 0;
}

/* Seconds as a number, or a duration string as on the command line. */
static int want_duration(struct key_ctx *k, double min, double *out)
{
	double v = -1;
	if (json_is_number(k->value))
		v = json_number_value(k->value);
	else if (json_is_string(k->value))
		v = pp_parse_duration(json_string_value(k->value));
	if (!(v >= min) || !isfinite(v))
		return bad_value(k, "a duration in seconds or a string like \"90s\" or \"10m\"");
	*out = v;
	return 0;
}

static int want_bool(struct key_ctx *k, bool *out)
{
	if (!json_is_boolean(k->value))
		return bad_value(k, "true or false");
	*out = json_is_true(k->value);
	return 0;
}

static int key_images(struct key_ctx *k)
{
	if (!json_is_array(k->value))
		return bad_value(k, "an array of image references");
	size_t n = json_array_size(k->value);
	const char **images = pp_xcalloc(n ? n : 1, sizeof(*images));
	for (size_t i = 0; i < n; i++) {
		const char *s = json_string_value(json_array_get(k->value, i));
		if (!s || !*s) {
			free(images);
			return pp_error_set(k->err, PP_EUSAGE,
					    "config %s: \"images\"[%zu]: expected a non-empty "
					    "string (an image reference)",
					    k->cfg->path, i);
		}
		images[i] = s;
	}
	free(k->cfg->images);
	k->cfg->images = images;
	k->cfg->n_images = n;
	return 0;
}

static int key_store(struct key_ctx *k)
{
	return want_string(k, &k->opts->store);
}

static int key_namespace(struct key_ctx *k)
{
	return want_string(k, &k->opts->namespace);
}

static int key_snapshotter(struct key_ctx *k)
{
	return want_string(k, &k->opts->snapshotter);
}

static int key_platform(struct key_ctx *k)
{
	const char *s = NULL;
	struct pp_error perr = {0};
	if (want_string(k, &s) < 0)
		return PP_EUSAGE;
	if (pp_platform_parse(&k->opts->platform, s, &perr) < 0)
		return pp_error_set(k->err, PP_EUSAGE, "config %s: \"platform\": %s", k->cfg->path,
				    perr.msg);
	return 0;
}

static int key_connections(struct key_ctx *k)
{
	k->opts->auto_connections = false;
	return want_int(k, 1, 256, &k->opts->connections);
}

static int key_max_connections(struct key_ctx *k)
{
	return want_int(k, 1, 256, &k->opts->max_connections);
}

static int key_per_host(struct key_ctx *k)
{
	return want_int(k, 1, 256, &k->opts->per_host);
}

static int key_chunk_size(struct key_ctx *k)
{
	int64_t v = -1;
	if (json_is_integer(k->value))
		v = (int64_t)json_integer_value(k->value);
	else if (json_is_string(k->value))
		v = pp_parse_size(json_string_value(k->value));
	if (v < 64 * 1024 || v > (1LL << 30))
		return bad_value(k, "a size from 64K to 1G (bytes, or a string like \"8M\")");
	k->opts->chunk_size = v;
	return 0;
}

static int key_state_dir(struct key_ctx *k)
{
	return want_string(k, &k->opts->state_dir);
}

static int key_deadline(struct key_ctx *k)
{
	return want_duration(k, 0.001, &k->opts->deadline);
}

static int key_stall_timeout(struct key_ctx *k)
{
	return want_duration(k, 1, &k->opts->stall_seconds);
}

static int key_give_up_after(struct key_ctx *k)
{
	return want_duration(k, 1, &k->opts->give_up_seconds);
}

static int key_max_image_size(struct key_ctx *k)
{
	int64_t v = -1;
	if (json_is_integer(k->value))
		v = (int64_t)json_integer_value(k->value);
	else if (json_is_string(k->value))
		v = pp_parse_size(json_string_value(k->value));
	if (v < 1)
		return bad_value(k, "a size of 1 byte or more (bytes, or a string like \"500G\")");
	k->opts->max_image_size = v;
	return 0;
}

static int key_ready_file(struct key_ctx *k)
{
	return want_string(k, &k->opts->ready_file);
}

static int key_unpacker(struct key_ctx *k)
{
	const char *s = NULL;
	if (want_string(k, &s) < 0)
		return PP_EUSAGE;
	if (strcmp(s, "prepull") != 0 && strcmp(s, "containerd") != 0)
		return bad_value(k, "\"prepull\" or \"containerd\"");
	k->opts->unpacker = s;
	return 0;
}

static int key_cache_fill(struct key_ctx *k)
{
	const char *s = NULL;
	if (want_string(k, &s) < 0)
		return PP_EUSAGE;
	if (strcmp(s, "wait") != 0 && strcmp(s, "bypass") != 0)
		return bad_value(k, "\"wait\" or \"bypass\"");
	k->opts->cache_fill_bypass = strcmp(s, "bypass") == 0;
	return 0;
}

static int key_discard_layers(struct key_ctx *k)
{
	return want_bool(k, &k->opts->discard_layers);
}

static int key_plain_http(struct key_ctx *k)
{
	return want_bool(k, &k->opts->plain_http);
}

static int key_insecure(struct key_ctx *k)
{
	return want_bool(k, &k->opts->insecure);
}

static int key_ca_cert(struct key_ctx *k)
{
	const char *s = NULL;
	if (want_string(k, &s) < 0)
		return PP_EUSAGE;
	if (access(s, R_OK) < 0)
		return pp_error_set(k->err, PP_EUSAGE, "config %s: \"ca_cert\": cannot read %s: %s",
				    k->cfg->path, s, strerror(errno));
	k->opts->ca_cert = s;
	return 0;
}

static int key_hosts_dir(struct key_ctx *k)
{
	/* "" is a choice: read no hosts.toml at all. */
	if (!json_is_string(k->value))
		return bad_value(k, "a directory (\"\" for none)");
	k->opts->hosts_dir = json_string_value(k->value);
	return 0;
}

/* {"registry.example.com": "https://mirror" or ["https://m1", ...]},
 * kept as the "HOST=URL" strings --mirror takes. */
static int key_mirrors(struct key_ctx *k)
{
	struct pp_config *cfg = k->cfg;
	const char *host;
	json_t *v;
	if (!json_is_object(k->value))
		return bad_value(k, "an object {\"HOST\": \"URL\" or [\"URL\", ...]}");
	json_object_foreach(k->value, host, v)
	{
		size_t n = json_is_array(v) ? json_array_size(v) : 1;
		for (size_t i = 0; i < n; i++) {
			json_t *u = json_is_array(v) ? json_array_get(v, i) : v;
			const char *url = json_string_value(u);
			if (!*host || !url || !*url)
				return bad_value(k,
						 "an object {\"HOST\": \"URL\" or [\"URL\", ...]}");
			cfg->mirrors = pp_xrealloc(cfg->mirrors,
						   (cfg->n_mirrors + 1) * sizeof(*cfg->mirrors));
			cfg->mirrors[cfg->n_mirrors++] = pp_xasprintf("%s=%s", host, url);
		}
	}
	k->opts->mirrors = (const char *const *)cfg->mirrors;
	k->opts->n_mirrors = cfg->n_mirrors;
	return 0;
}

static const struct {
	const char *name;
	int (*apply)(struct key_ctx *k);
} keys[] = {
	{"images", key_images},
	{"store", key_store},
	{"namespace", key_namespace},
	{"snapshotter", key_snapshotter},
	{"unpacker", key_unpacker},
	{"discard_layers", key_discard_layers},
	{"platform", key_platform},
	{"connections", key_connections},
	{"max_connections", key_max_connections},
	{"per_host", key_per_host},
	{"chunk_size", key_chunk_size},
	{"state_dir", key_state_dir},
	{"deadline", key_deadline},
	{"stall_timeout", key_stall_timeout},
	{"give_up_after", key_give_up_after},
	{"max_image_size", key_max_image_size},
	{"ready_file", key_ready_file},
	{"plain_http", key_plain_http},
	{"insecure", key_insecure},
	{"ca_cert", key_ca_cert},
	{"hosts_dir", key_hosts_dir},
	{"mirrors", key_mirrors},
	{"cache_fill", key_cache_fill},
};

static int unknown_key(const struct pp_config *cfg, const char *key, struct pp_error *err)
{
	char shown[80];
	/* "chunk-size" (the option's spelling) is the likely slip: say so. */
	cleanup_free char *alt = pp_xstrdup(key);
	for (char *c = alt; *c; c++)
		if (*c == '-')
			*c = '_';
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (strcmp(alt, keys[i].name) == 0)
			return pp_error_set(err, PP_EUSAGE,
					    "config %s: unknown key \"%s\" (did you mean \"%s\"?)",
					    cfg->path, pp_printable(shown, sizeof(shown), key),
					    keys[i].name);
	return pp_error_set(err, PP_EUSAGE, "config %s: unknown key \"%s\"", cfg->path,
			    pp_printable(shown, sizeof(shown), key));
}

int pp_config_parse(struct pp_config *cfg, const char *path, const char *text, size_t len,
		    struct pp_options *opts, struct pp_error *err)
{
	json_error_t jerr;
	memset(cfg, 0, sizeof(*cfg));
	cfg->path = pp_xstrdup(path);
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return pp_error_set(err, PP_EUSAGE, "config %s: line %d, column %d: %s", path,
				    jerr.line, jerr.column, jerr.text);
	cfg->root = root;
	if (!json_is_object(root))
		return pp_error_set(err, PP_EUSAGE,
				    "config %s: expected a JSON object ({\"images\": [...], ...})",
				    path);
	const char *key;
	json_t *value;
	json_object_foreach(root, key, value)
	{
		size_t i, n = sizeof(keys) / sizeof(keys[0]);
		for (i = 0; i < n && strcmp(key, keys[i].name) != 0; i++)
			;
		if (i == n)
			return unknown_key(cfg, key, err);
		struct key_ctx k = {cfg, opts, keys[i].name, value, err};
		int r = keys[i].apply(&k);
		if (r < 0)
			return r;
	}
	return 0;
}

int pp_config_load(struct pp_config *cfg, const char *path, struct pp_options *opts,
		   struct pp_error *err)
{
	struct pp_buf text = {.limit = CONFIG_MAX_BYTES};
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		memset(cfg, 0, sizeof(*cfg));
		return pp_error_set(err, PP_ENOTFOUND, "config %s: cannot read: %s", path,
				    strerror(errno));
	}
	if (pp_buf_read_fd(&text, fd) < 0) {
		bool too_big = errno == EFBIG;
		memset(cfg, 0, sizeof(*cfg));
		pp_buf_free(&text);
		return pp_error_set(err, PP_EUSAGE, "config %s: %s", path,
				    too_big ? "larger than 1 MiB" : "read error");
	}
	int r = pp_config_parse(cfg, path, text.data ? text.data : "", text.len, opts, err);
	pp_buf_free(&text);
	return r;
}

void pp_config_free(struct pp_config *cfg)
{
	if (!cfg)
		return;
	free(cfg->path);
	free(cfg->images);
	for (size_t i = 0; i < cfg->n_mirrors; i++)
		free(cfg->mirrors[i]);
	free(cfg->mirrors);
	if (cfg->root)
		json_decref(cfg->root);
	memset(cfg, 0, sizeof(*cfg));
}
