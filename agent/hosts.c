/* Where a registry's content may come from, in the order to try it:
 *   1. prepull's own mirrors (--mirror HOST=URL, the config's "mirrors");
 *   2. the hosts of containerd's <hosts-dir>/<host>/hosts.toml, in the
 *      order of the file (the directory named as containerd names it:
 *      "host_port_", then "host:port", then "_default");
 *   3. for Docker Hub, when no hosts.toml applies, Docker's
 *      registry-mirrors from /etc/docker/daemon.json;
 *   4. the registry itself (hosts.toml's `server` when it names one).
 * Only the last is trusted to have everything; blobs are checked against
 * their digests wherever they come from. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "prepull/error.h"
#include "prepull/hosts.h"
#include "prepull/log.h"
#include "prepull/options.h"
#include "prepull/util.h"

#define HOSTS_FILE_MAX (1 << 20)

const char *pp_docker_daemon_json = "/etc/docker/daemon.json";

static struct pp_host *add_host(struct pp_host_list *l)
{
	l->v = pp_xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
	struct pp_host *h = &l->v[l->n++];
	memset(h, 0, sizeof(*h));
	return h;
}

/* "scheme://host[:port][/path]" (https when no scheme is written) into a
 * host; the API root is the path plus "/v2" unless override_path. */
static int set_url(struct pp_host *h, const char *url, bool override_path, struct pp_error *err)
{
	const char *rest = url, *sep = strstr(url, "://");
	/* user:password@ would end up in messages: credentials go in config.json.
	 * Checked first, before any message quotes the URL. */
	const char *auth = sep ? sep + 3 : url;
	if (memchr(auth, '@', strcspn(auth, "/?#")))
		return pp_error_set(err, PP_EUSAGE,
				    "a host URL takes no user name or password (config.json "
				    "holds credentials, by host)");
	if (sep) {
		size_t n = (size_t)(sep - url);
		if (!((n == 4 && strncmp(url, "http", 4) == 0) ||
		      (n == 5 && strncmp(url, "https", 5) == 0)))
			return pp_error_set(err, PP_EUSAGE, "%s: only http:// and https:// hosts",
					    url);
		h->scheme = pp_xstrndup(url, n);
		rest = sep + 3;
	} else {
		h->scheme = pp_xstrdup("https");
	}
	size_t hl = strcspn(rest, "/?#");
	if (hl == 0)
		return pp_error_set(err, PP_EUSAGE, "%s: no host name in the URL", url);
	if (rest[hl] == '?' || rest[hl] == '#' || strpbrk(rest, " \t\r\n?#"))
		return pp_error_set(err, PP_EUSAGE, "%s: a host URL takes no query or spaces", url);
	h->host = pp_xstrndup(rest, hl);
	char *path = pp_xstrdup(rest + hl);
	size_t pl = strlen(path);
	while (pl > 0 && path[pl - 1] == '/')
		path[--pl] = '\0';
	if (override_path || (pl >= 3 && strcmp(path + pl - 3, "/v2") == 0))
		h->path = path;
	else {
		h->path = pp_xasprintf("%s/v2", path);
		free(path);
	}
	return 0;
}

/* A path in hosts.toml is relative to its directory. */
static char *in_dir(const char *dir, const char *path)
{
	return path[0] == '/' || !dir ? pp_xstrdup(path) : pp_xasprintf("%s/%s", dir, path);
}

static void take_entry(struct pp_host *h, const struct pp_hosts_entry *e, const char *dir,
		       const char *file)
{
	h->caps = e->caps;
	h->skip_verify = e->skip_verify;
	if (e->n_ca > 0)
		h->ca = in_dir(dir, e->ca[0]);
	if (e->n_ca > 1)
		pp_warn("%s: %s: only the first CA bundle is used", file,
			e->url ? e->url : "server");
	if (e->n_clients > 0) {
		h->client_cert = in_dir(dir, e->clients[0].cert);
		h->client_key = e->clients[0].key ? in_dir(dir, e->clients[0].key) : NULL;
	}
	for (size_t i = 0; i < e->n_headers; i++) {
		for (size_t j = 0; j < e->headers[i].n_values; j++) {
			h->headers = pp_xrealloc(h->headers, (h->n_headers + 1) * sizeof(char *));
			h->headers[h->n_headers++] =
				pp_xasprintf("%s: %s", e->headers[i].name, e->headers[i].values[j]);
		}
	}
}

int pp_hosts_from_file(struct pp_host_list *l, struct pp_host *upstream,
		       const struct pp_hosts_file *f, const char *dir, const char *file,
		       struct pp_error *err)
{
	for (size_t i = 0; i < f->n_hosts; i++) {
		const struct pp_hosts_entry *e = &f->hosts[i];
		struct pp_host *h = add_host(l);
		h->mirror = true;
		int r = set_url(h, e->url, e->override_path, err);
		if (r < 0)
			return pp_error_wrap(err, "%s", file);
		take_entry(h, e, dir, file);
	}
	take_entry(upstream, &f->top, dir, file);
	upstream->caps = PP_CAP_ALL;
	if (f->server) {
		free(upstream->scheme);
		free(upstream->host);
		free(upstream->path);
		upstream->scheme = upstream->host = upstream->path = NULL;
		if (set_url(upstream, f->server, f->top.override_path, err) < 0)
			return pp_error_wrap(err, "%s: server", file);
	}
	return 0;
}

static int read_small_file(const char *path, struct pp_buf *out, bool *found, struct pp_error *err)
{
	*found = false;
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		return pp_error_errno(err, "%s", path);
	}
	out->limit = HOSTS_FILE_MAX;
	if (pp_buf_read_fd(out, fd) < 0)
		return errno == EFBIG ? pp_error_set(err, PP_EUSAGE, "%s: larger than 1 MiB", path)
				      : pp_error_errno(err, "read %s", path);
	*found = true;
	return 0;
}

/* containerd's directory for a host: "host_port_", "host:port", then
 * "_default".  Sets *found when one has a hosts.toml. */
static int hosts_toml(struct pp_host_list *l, struct pp_host *upstream, const char *root,
		      const char *domain, bool *found, struct pp_error *err)
{
	char *names[3] = {NULL, pp_xstrdup(domain), pp_xstrdup("_default")};
	const char *colon = strrchr(domain, ':');
	if (colon && colon != domain)
		names[0] = pp_xasprintf("%.*s_%s_", (int)(colon - domain), domain, colon + 1);
	int r = 0;
	*found = false;
	for (int i = 0; i < 3 && !*found && r == 0; i++) {
		if (!names[i])
			continue;
		cleanup_free char *dir = pp_xasprintf("%s/%s", root, names[i]);
		cleanup_free char *file = pp_xasprintf("%s/hosts.toml", dir);
		cleanup_buf struct pp_buf text = {0};
		r = read_small_file(file, &text, found, err);
		if (r < 0 || !*found)
			continue;
		struct pp_hosts_file f;
		r = pp_hosts_parse(&f, file, text.data ? text.data : "", text.len, err);
		if (r < 0)
			break;
		pp_debug("%s: hosts from %s", domain, file);
		r = pp_hosts_from_file(l, upstream, &f, dir, file, err);
		pp_hosts_file_free(&f);
	}
	for (int i = 0; i < 3; i++)
		free(names[i]);
	return r;
}

int pp_hosts_daemon_json(const char *path, const char *domain, struct pp_host_list *l,
			 struct pp_host *upstream, struct pp_error *err)
{
	cleanup_buf struct pp_buf text = {0};
	bool found = false;
	int r = read_small_file(path, &text, &found, err);
	if (r < 0 || !found)
		return r;
	json_error_t jerr;
	cleanup_json json_t *root = json_loadb(text.data ? text.data : "", text.len, 0, &jerr);
	if (!json_is_object(root))
		return pp_error_set(err, PP_EUSAGE, "%s: line %d: %s", path, jerr.line,
				    root ? "expected a JSON object" : jerr.text);
	json_t *v;
	size_t i;
	/* As in Docker, registry-mirrors serve Docker Hub only. */
	json_t *mirrors = json_object_get(root, "registry-mirrors");
	if (strcmp(domain, "docker.io") == 0 && json_is_array(mirrors)) {
		json_array_foreach(mirrors, i, v)
		{
			if (!json_is_string(v))
				return pp_error_set(err, PP_EUSAGE,
						    "%s: \"registry-mirrors\": expected URLs",
						    path);
			struct pp_host *h = add_host(l);
			h->mirror = true;
			h->caps = PP_CAP_PULL | PP_CAP_RESOLVE;
			if (set_url(h, json_string_value(v), false, err) < 0)
				return pp_error_wrap(err, "%s: \"registry-mirrors\"", path);
		}
	}
	/* insecure-registries: HTTPS without verification, or plain HTTP. */
	json_array_foreach(json_object_get(root, "insecure-registries"), i, v)
	{
		if (json_is_string(v) && strcmp(json_string_value(v), domain) == 0)
			upstream->insecure_registry = true;
	}
	return 0;
}

/* "HOST=URL" entries naming this domain. */
static int explicit_mirrors(struct pp_host_list *l, const struct pp_options *opts,
			    const char *domain, struct pp_error *err)
{
	for (size_t i = 0; i < opts->n_mirrors; i++) {
		const char *m = opts->mirrors[i], *eq = strchr(m, '=');
		if (!eq || eq == m || !eq[1])
			return pp_error_set(err, PP_EUSAGE, "mirror \"%s\": expected HOST=URL", m);
		if (strlen(domain) != (size_t)(eq - m) || strncmp(m, domain, (size_t)(eq - m)) != 0)
			continue;
		struct pp_host *h = add_host(l);
		h->mirror = true;
		h->caps = PP_CAP_PULL | PP_CAP_RESOLVE;
		if (set_url(h, eq + 1, false, err) < 0)
			return pp_error_wrap(err, "mirror for %s", domain);
	}
	return 0;
}

int pp_hosts_for(struct pp_host_list *out, const char *domain, const struct pp_options *opts,
		 struct pp_error *err)
{
	struct pp_host_list l = {0};
	struct pp_host up = {.caps = PP_CAP_ALL};
	bool found = false;
	int r = explicit_mirrors(&l, opts, domain, err);
	const char *root = opts->hosts_dir ? opts->hosts_dir : PP_DEFAULT_HOSTS_DIR;
	if (r == 0 && *root)
		r = hosts_toml(&l, &up, root, domain, &found, err);
	if (r == 0) {
		/* Docker's mirrors when containerd's configuration says nothing. */
		struct pp_host_list docker = {0};
		r = pp_hosts_daemon_json(pp_docker_daemon_json, domain, &docker, &up, err);
		for (size_t i = 0; i < docker.n; i++) {
			if (!found)
				*add_host(&l) = docker.v[i];
			else
				pp_host_free(&docker.v[i]);
		}
		free(docker.v);
	}
	*add_host(&l) = up;
	if (r < 0) {
		pp_host_list_free(&l);
		return r;
	}
	*out = l;
	return 0;
}

void pp_host_free(struct pp_host *h)
{
	free(h->scheme);
	free(h->host);
	free(h->path);
	free(h->ca);
	free(h->client_cert);
	free(h->client_key);
	for (size_t i = 0; i < h->n_headers; i++)
		free(h->headers[i]);
	free(h->headers);
	memset(h, 0, sizeof(*h));
}

void pp_host_list_free(struct pp_host_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		pp_host_free(&l->v[i]);
	free(l->v);
	memset(l, 0, sizeof(*l));
}
