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
struct pp_options;

#define PP_DEFAULT_HOSTS_DIR "/etc/containerd/certs.d"

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

/* One place to ask, ready for registry.c.  For the registry itself (the
 * last of a list) scheme, host and path are NULL unless hosts.toml's
 * `server` names them: registry.c then picks its own. */
struct pp_host {
	char *scheme; /* "https" or "http" */
	char *host;   /* host[:port]: its credentials are looked up under it */
	char *path;   /* the API root, e.g. "/v2", no trailing '/' */
	unsigned caps;
	bool mirror;            /* requests carry ?ns=<the registry's domain> */
	bool skip_verify;       /* hosts.toml skip_verify */
	bool insecure_registry; /* daemon.json insecure-registries: unverified or HTTP */
	char *ca;               /* CA bundle (hosts.toml ca) */
	char *client_cert;
	char *client_key;
	char **headers; /* "Name: value" lines */
	size_t n_headers;
};

struct pp_host_list {
	struct pp_host *v;
	size_t n;
};

/* Docker's daemon configuration; a variable so tests can point it
 * elsewhere. */
extern const char *pp_docker_daemon_json;

/* The hosts to try for `domain`, in order, the registry itself last
 * (see hosts.c for where they come from).
 * @param[out] out  the list, pp_host_list_free() frees it.
 * @return 0, or PP_EUSAGE for a malformed hosts.toml, daemon.json or
 * mirror, PP_EIO / PP_EPERM when one cannot be read. */
int pp_hosts_for(struct pp_host_list *out, const char *domain, const struct pp_options *opts,
		 struct pp_error *err);

/* The hosts of a parsed hosts.toml appended to l; its top-level keys (and
 * `server`) applied to *upstream.  `dir` anchors relative paths; `file`
 * names the file in messages. */
int pp_hosts_from_file(struct pp_host_list *l, struct pp_host *upstream,
		       const struct pp_hosts_file *f, const char *dir, const char *file,
		       struct pp_error *err);

/* Docker's daemon.json at `path` (absent: nothing): registry-mirrors
 * appended to l when domain is docker.io; insecure-registries marks
 * *upstream. */
int pp_hosts_daemon_json(const char *path, const char *domain, struct pp_host_list *l,
			 struct pp_host *upstream, struct pp_error *err);

void pp_host_free(struct pp_host *h);
void pp_host_list_free(struct pp_host_list *l);

#endif
