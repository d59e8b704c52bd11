/* Registry mirrors, configured the way the container runtimes configure
 * them, so that one node configuration serves containerd and prepull:
 *   - containerd's hosts.toml (<hosts-dir>/<host>/hosts.toml, with the
 *     _default directory as the fallback), parsed by hosts_toml.c;
 *   - Docker's daemon.json: registry-mirrors (Docker Hub only, as in
 *     Docker) and insecure-registries;
 *   - prepull's own "mirrors" config key and --mirror HOST=URL.
 * hosts.c turns those into, per registry, an ordered list of hosts to try
 * (pp_hosts_for); registry.c speaks to them. */
#ifndef PREPULL_HOSTS_H
#define PREPULL_HOSTS_H

#include <stdbool.h>
#include <stddef.h>

struct pp_error;

/* What a host may be asked for (containerd's capabilities). */
#define PP_CAP_PULL 1u    /* blobs and manifests by digest */
#define PP_CAP_RESOLVE 2u /* tags to digests */
#define PP_CAP_PUSH 4u
#define PP_CAP_ALL (PP_CAP_PULL | PP_CAP_RESOLVE | PP_CAP_PUSH)

struct pp_hosts_header {
	char *name;
	char **values;
	size_t n_values;
};

/* A client certificate and its key (key NULL: the certificate file holds
 * both, as a PEM with the key in it). */
struct pp_hosts_client {
	char *cert;
	char *key;
};

/* One [host."URL"] table, or the top level (for the server). */
struct pp_hosts_entry {
	char *url;     /* as written; NULL for the top level */
	unsigned caps; /* PP_CAP_*; PP_CAP_ALL when the file does not say */
	char **ca;     /* CA bundles (paths as written) */
	size_t n_ca;
	struct pp_hosts_client *clients;
	size_t n_clients;
	bool skip_verify;
	bool override_path; /* the URL's path is the API root: no "/v2" added */
	struct pp_hosts_header *headers;
	size_t n_headers;
};

/* A parsed hosts.toml.  `top` holds the keys written at the top level,
 * which containerd applies to `server`. */
struct pp_hosts_file {
	char *server; /* NULL when the file has no server key */
	struct pp_hosts_entry top;
	struct pp_hosts_entry *hosts; /* in the order of the file */
	size_t n_hosts;
};

/* Parses the subset of TOML that hosts.toml files use: comments, bare and
 * quoted keys, basic strings (with escapes) and literal strings, booleans,
 * arrays (nested, over several lines), [tables] and dotted table names.
 * Keys and tables it does not know are skipped with a note under -v, as
 * containerd does.  `name` is the file's name for messages.
 * @param[out] out  filled on success; pp_hosts_file_free() frees it.
 * @return 0, or PP_EUSAGE with err->msg "NAME:LINE: what is wrong" (out
 * is then empty). */
int pp_hosts_parse(struct pp_hosts_file *out, const char *name, const char *text, size_t len,
		   struct pp_error *err);
void pp_hosts_file_free(struct pp_hosts_file *f);
void pp_hosts_entry_free(struct pp_hosts_entry *h);

#endif
