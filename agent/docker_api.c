/* The Docker Engine API over its unix socket: version negotiation, the
 * daemon's facts (/version, /info), small requests and the streamed
 * upload /images/load needs. */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "prepull/docker_api.h"
#include "prepull/stop.h"
#include "prepull/error.h"
#include "prepull/log.h"
#include "prepull/util.h"

#define SMALL_BODY_MAX (8 * 1024 * 1024)
#define STREAM_TEXT_MAX (64 * 1024)
#define STREAM_LINE_MAX (1024 * 1024)
#define ERROR_BODY_MAX (64 * 1024)
#define CONNECT_TIMEOUT_S 10L
#define SMALL_TIMEOUT_S 120L
#define STREAM_STALL_S 600L

const char *pp_docker_default_socket(void)
{
	const char *host = getenv("DOCKER_HOST");
	if (host && strncmp(host, "unix://", 7) == 0 && host[7])
		return host + 7;
	if (host && *host)
		pp_warn("DOCKER_HOST=%s is not a unix socket; using %s", host,
			PP_DOCKER_DEFAULT_SOCKET);
	return PP_DOCKER_DEFAULT_SOCKET;
}

int pp_docker_parse_version(const char *s, int *major, int *minor)
{
	if (!s)
		return -1;
	char *end;
	long a = strtol(s, &end, 10);
	if (end == s || *end != '.' || a < 0 || a > 100000)
		return -1;
	const char *p = end + 1;
	long b = strtol(p, &end, 10);
	if (end == p || b < 0 || b > 100000)
		return -1;
	*major = (int)a;
	*minor = (int)b;
	return 0;
}

char *pp_docker_familiar_name(const char *domain, const char *path)
{
	if (strcmp(domain, "docker.io") != 0)
		return pp_xasprintf("%s/%s", domain, path);
	if (strncmp(path, "library/", 8) == 0 && !strchr(path + 8, '/'))
		return pp_xstrdup(path + 8);
	return pp_xstrdup(path);
}

static int denied(const char *path, struct pp_error *err)
{
	pp_error_set(err, PP_EPERM,
		     "permission denied on the docker socket %s: run prepull as root or as a "
		     "member of the group that owns the socket (usually docker)",
		     path);
	if (err)
		err->sys_errno = EACCES;
	return PP_EPERM;
}

/* Says plainly why a socket cannot be used, before curl turns it into
 * "Couldn't connect to server". */
static int probe_socket(const char *path, struct pp_error *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return pp_error_set(err, PP_EUSAGE, "docker socket path %s is too long", path);
	strcpy(sa.sun_path, path);
	struct stat st;
	if (stat(path, &st) < 0) {
		if (errno == ENOENT)
			return pp_error_set(err, PP_ENET,
					    "Docker is not running: no socket at %s (is dockerd "
					    "started? --store docker:SOCKET names another)",
					    path);
		if (errno == EACCES)
			return denied(path, err);
		return pp_error_errno(err, "docker socket %s", path);
	}
	if (!S_ISSOCK(st.st_mode))
		return pp_error_set(err, PP_EUSAGE, "%s is not a socket", path);
	cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return pp_error_errno(err, "socket");
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		return 0;
	if (errno == ECONNREFUSED)
		return pp_error_set(err, PP_ENET,
				    "Docker is not running: nothing listens on %s (a socket left "
				    "by a daemon that stopped)",
				    path);
	if (errno == EACCES || errno == EPERM)
		return denied(path, err);
	return pp_error_errno(err, "connect to docker at %s", path);
}

struct reply {
	struct pp_buf body;
	char api_version[32]; /* the Api-Version header */
};

static size_t on_header(char *buf, size_t size, size_t n, void *ctx)
{
	struct reply *r = ctx;
	size_t len = size * n;
	static const char name[] = "api-version:";
	if (len > sizeof(name) - 1 && strncasecmp(buf, name, sizeof(name) - 1) == 0) {
		const char *v = buf + sizeof(name) - 1;
		const char *end = buf + len;
		while (v < end && (*v == ' ' || *v == '\t'))
			v++;
		while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
			end--;
		snprintf(r->api_version, sizeof(r->api_version), "%.*s", (int)(end - v), v);
	}
	return len;
}

static size_t on_body(char *buf, size_t size, size_t n, void *ctx)
{
	struct reply *r = ctx;
	size_t len = size * n;
	if (pp_buf_append(&r->body, buf, len) < 0)
		return 0; /* too large: curl stops with a write error */
	return len;
}

static CURL *new_handle(const char *socket, const char *url, char *errbuf)
{
	CURL *h = curl_easy_init();
	if (!h)
		abort();
	errbuf[0] = '\0';
	curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, socket);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "prepull/" PREPULL_VERSION);
	return h;
}

static int transport_error(struct pp_error *err, const char *socket, CURLcode rc,
			   const char *errbuf)
{
	return pp_error_set(err, PP_ENET, "docker at %s: %s", socket,
			    errbuf[0] ? errbuf : curl_easy_strerror(rc));
}

/* The daemon's {"message": "..."} for a failed request. */
static void error_message(const struct pp_buf *body, char *out, size_t n)
{
	json_t *j = body->len ? json_loadb(body->data, body->len, 0, NULL) : NULL;
	const char *m = json_string_value(json_object_get(j, "message"));
	char tmp[512];
	snprintf(out, n, "%s",
		 m           ? pp_printable(tmp, sizeof(tmp), m)
		 : body->len ? pp_printable(tmp, sizeof(tmp), body->data)
			     : "no message");
	json_decref(j);
}

static int do_request(struct pp_docker *d, const char *method, const char *path, bool versioned,
		      struct reply *r, long *status, struct pp_error *err)
{
	char errbuf[CURL_ERROR_SIZE];
	cleanup_free char *url =
		versioned ? pp_xasprintf("http://docker/v%d.%d%s", d->api_major, d->api_minor, path)
			  : pp_xasprintf("http://docker%s", path);
	CURL *h = new_handle(d->socket, url, errbuf);
	r->body.limit = SMALL_BODY_MAX;
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	if (strcmp(method, "POST") == 0) {
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
	}
	curl_easy_setopt(h, CURLOPT_TIMEOUT, SMALL_TIMEOUT_S);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	CURLcode rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
	curl_easy_cleanup(h);
	if (rc != CURLE_OK)
		return transport_error(err, d->socket, rc, errbuf);
	pp_debug("docker %s %s: HTTP %ld", method, path, *status);
	return 0;
}

int pp_docker_request(struct pp_docker *d, const char *method, const char *path,
		      struct pp_buf *body, long *status, struct pp_error *err)
{
	struct reply r = {0};
	int ret = do_request(d, method, path, true, &r, status, err);
	if (ret == 0 && body) {
		*body = r.body;
		r.body = (struct pp_buf){0};
	}
	pp_buf_free(&r.body);
	return ret;
}

/* GET path and parse the JSON answer (which must be 200). */
static int get_json(struct pp_docker *d, const char *path, bool versioned, json_t **out,
		    struct pp_error *err)
{
	struct reply r = {0};
	long status = 0;
	int ret = do_request(d, "GET", path, versioned, &r, &status, err);
	if (ret == 0 && status != 200) {
		char msg[600];
		error_message(&r.body, msg, sizeof(msg));
		ret = pp_error_set(err, PP_EPROTO, "docker GET %s: HTTP %ld: %s", path, status,
				   msg);
		err->http_status = status;
	}
	if (ret == 0) {
		json_error_t jerr;
		*out = json_loadb(r.body.data ? r.body.data : "", r.body.len, 0, &jerr);
		if (!*out || !json_is_object(*out)) {
			json_decref(*out);
			*out = NULL;
			ret = pp_error_set(err, PP_EPROTO, "docker GET %s: not a JSON object: %s",
					   path, jerr.text);
		}
	}
	pp_buf_free(&r.body);
	return ret;
}

static bool version_less(int a_major, int a_minor, int b_major, int b_minor)
{
	return a_major < b_major || (a_major == b_major && a_minor < b_minor);
}

static int negotiate(struct pp_docker *d, struct pp_error *err)
{
	struct reply r = {0};
	long status = 0;
	int ret = do_request(d, "GET", "/_ping", false, &r, &status, err);
	pp_buf_free(&r.body);
	if (ret < 0)
		return ret;
	if (status != 200)
		return pp_error_set(err, PP_EPROTO,
				    "docker at %s answered /_ping with HTTP %ld: is it a Docker "
				    "Engine socket?",
				    d->socket, status);
	int major = 0, minor = 0;
	if (pp_docker_parse_version(r.api_version, &major, &minor) < 0) {
		/* Daemons before API 1.25 send no Api-Version: too old for us anyway. */
		return pp_error_set(err, PP_EUNSUPPORTED,
				    "the Docker API at %s is too old (no API version in /_ping); "
				    "prepull needs API %d.%d or newer",
				    d->socket, PP_DOCKER_API_MIN_MAJOR, PP_DOCKER_API_MIN_MINOR);
	}
	if (version_less(major, minor, PP_DOCKER_API_MIN_MAJOR, PP_DOCKER_API_MIN_MINOR))
		return pp_error_set(err, PP_EUNSUPPORTED,
				    "the Docker API at %s is too old: version %d.%d, prepull "
				    "needs %d.%d or newer",
				    d->socket, major, minor, PP_DOCKER_API_MIN_MAJOR,
				    PP_DOCKER_API_MIN_MINOR);
	d->api_major = major;
	d->api_minor = minor;
	if (version_less(PP_DOCKER_API_MAX_MAJOR, PP_DOCKER_API_MAX_MINOR, major, minor)) {
		d->api_major = PP_DOCKER_API_MAX_MAJOR;
		d->api_minor = PP_DOCKER_API_MAX_MINOR;
	}
	return 0;
}

static int read_version(struct pp_docker *d, struct pp_error *err)
{
	json_t *v = NULL;
	int ret = get_json(d, "/version", true, &v, err);
	if (ret < 0)
		return ret;
	const char *ver = json_string_value(json_object_get(v, "Version"));
	const char *min_api = json_string_value(json_object_get(v, "MinAPIVersion"));
	d->version = pp_xstrdup(ver ? ver : "unknown");
	int a, b;
	if (min_api && pp_docker_parse_version(min_api, &a, &b) == 0 &&
	    version_less(d->api_major, d->api_minor, a, b)) {
		json_decref(v);
		return pp_error_set(err, PP_EUNSUPPORTED,
				    "Docker %s at %s needs API %d.%d or newer; prepull speaks up "
				    "to %d.%d",
				    d->version, d->socket, a, b, PP_DOCKER_API_MAX_MAJOR,
				    PP_DOCKER_API_MAX_MINOR);
	}
	json_decref(v);
	if (pp_docker_parse_version(d->version, &d->engine_major, &d->engine_minor) < 0)
		d->engine_major = d->engine_minor = 0;
	/* Docker 23.0 (API 1.42) was the first to read zstd layers. */
	if (d->engine_major >= 17)
		d->zstd_layers = d->engine_major >= 23;
	else
		d->zstd_layers = !version_less(d->api_major, d->api_minor, 1, 42);
	return 0;
}

static int read_info(struct pp_docker *d, struct pp_error *err)
{
	json_t *info = NULL;
	int ret = get_json(d, "/info", true, &info, err);
	if (ret < 0)
		return ret;
	/* The containerd image store shows as a driver-type in DriverStatus. */
	json_t *pair;
	size_t i;
	json_array_foreach(json_object_get(info, "DriverStatus"), i, pair)
	{
		const char *k = json_string_value(json_array_get(pair, 0));
		const char *v = json_string_value(json_array_get(pair, 1));
		if (k && v && strcmp(k, "driver-type") == 0 &&
		    strcmp(v, "io.containerd.snapshotter.v1") == 0)
			d->containerd_store = true;
	}
	const char *addr =
		json_string_value(json_object_get(json_object_get(info, "Containerd"), "Address"));
	if (addr && *addr)
		d->containerd_address =
			pp_xstrdup(strncmp(addr, "unix://", 7) == 0 ? addr + 7 : addr);
	json_decref(info);
	return 0;
}

int pp_docker_connect(struct pp_docker **out, const char *socket, struct pp_error *err)
{
	if (!socket || !*socket)
		socket = pp_docker_default_socket();
	int ret = probe_socket(socket, err);
	if (ret < 0)
		return ret;
	struct pp_docker *d = pp_xcalloc(1, sizeof(*d));
	d->socket = pp_xstrdup(socket);
	if ((ret = negotiate(d, err)) < 0 || (ret = read_version(d, err)) < 0 ||
	    (ret = read_info(d, err)) < 0) {
		pp_docker_free(d);
		return ret;
	}
	pp_debug("docker %s at %s: API %d.%d, %s image store, zstd layers %s", d->version,
		 d->socket, d->api_major, d->api_minor,
		 d->containerd_store ? "containerd" : "classic", d->zstd_layers ? "yes" : "no");
	*out = d;
	return 0;
}

void pp_docker_free(struct pp_docker *d)
{
	if (!d)
		return;
	free(d->socket);
	free(d->version);
	free(d->containerd_address);
	free(d);
}

bool pp_docker_socket_answers(const char *socket)
{
	if (!socket || !*socket)
		socket = pp_docker_default_socket();
	if (probe_socket(socket, NULL) < 0)
		return false;
	char errbuf[CURL_ERROR_SIZE];
	struct reply r = {.body.limit = 4096};
	CURL *h = new_handle(socket, "http://docker/_ping", errbuf);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 2000L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
	long status = 0;
	CURLcode rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(h);
	bool ok = rc == CURLE_OK && status == 200 && r.body.data &&
		  strncmp(r.body.data, "OK", 2) == 0;
	pp_buf_free(&r.body);
	return ok;
}

/* One message of a JSON stream: the first error wins. */
static int parse_message(const char *line, size_t len, struct pp_buf *text, bool *had_error,
			 struct pp_error *err)
{
	while (len && (line[len - 1] == '\r' || line[len - 1] == ' '))
		len--;
	if (!len)
		return 0;
	json_error_t jerr;
	json_t *m = json_loadb(line, len, 0, &jerr);
	if (!m || !json_is_object(m)) {
		json_decref(m);
		if (*had_error)
			return 0;
		*had_error = true;
		char tmp[200];
		cleanup_free char *copy = pp_xstrndup(line, len);
		return pp_error_set(err, PP_EPROTO, "docker sent a message that is not JSON: %s",
				    pp_printable(tmp, sizeof(tmp), copy));
	}
	const char *e = json_string_value(json_object_get(m, "error"));
	const char *detail =
		json_string_value(json_object_get(json_object_get(m, "errorDetail"), "message"));
	if (!e)
		e = detail;
	if (e && !*had_error) {
		*had_error = true;
		char tmp[800];
		pp_error_set(err, PP_EGENERIC, "%s", pp_printable(tmp, sizeof(tmp), e));
	}
	const char *s = json_string_value(json_object_get(m, "stream"));
	if (s && text && text->len + strlen(s) <= STREAM_TEXT_MAX)
		pp_buf_append(text, s, strlen(s));
	json_decref(m);
	return 0;
}

int pp_docker_parse_messages(const char *data, size_t len, struct pp_buf *text,
			     struct pp_error *err)
{
	bool had_error = false;
	/* One message a line, as the daemon's JSON encoder writes them. */
	size_t start = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && data[i] != '\n')
			continue;
		parse_message(data + start, i - start, text, &had_error, err);
		start = i + 1;
	}
	return had_error ? (err ? err->code : PP_EGENERIC) : 0;
}

/* Ctrl-C also stops a load that is past its upload, waiting on Docker. */
static int on_progress(void *ctx, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		       curl_off_t ulnow)
{
	return pp_stop_requested ? 1 : 0;
}

struct stream_ctx {
	struct pp_buf line; /* the message being received */
	struct pp_buf raw;  /* the start of the body, for non-200 answers */
	struct pp_buf *text;
	bool had_error;
	struct pp_error msg_err;
};

static size_t on_stream_body(char *buf, size_t size, size_t n, void *ctx)
{
	struct stream_ctx *s = ctx;
	size_t len = size * n;
	if (s->raw.len < ERROR_BODY_MAX)
		pp_buf_append(&s->raw, buf, len < ERROR_BODY_MAX ? len : ERROR_BODY_MAX);
	for (size_t i = 0; i < len; i++) {
		if (buf[i] != '\n') {
			/* A line past the cap is dropped: progress bars never get there. */
			if (s->line.len < STREAM_LINE_MAX)
				pp_buf_append(&s->line, &buf[i], 1);
			continue;
		}
		if (s->line.len)
			parse_message(s->line.data, s->line.len, s->text, &s->had_error,
				      &s->msg_err);
		s->line.len = 0;
	}
	return len;
}

int pp_docker_post_stream(struct pp_docker *d, const char *path, const char *content_type,
			  pp_docker_read_fn read, void *ctx, struct pp_buf *text,
			  struct pp_error *err)
{
	char errbuf[CURL_ERROR_SIZE];
	cleanup_free char *url =
		pp_xasprintf("http://docker/v%d.%d%s", d->api_major, d->api_minor, path);
	cleanup_free char *ct = pp_xasprintf("Content-Type: %s", content_type);
	struct stream_ctx s = {.text = text};
	CURL *h = new_handle(d->socket, url, errbuf);
	struct curl_slist *hdrs = NULL;
	hdrs = curl_slist_append(hdrs, ct);
	hdrs = curl_slist_append(hdrs, "Transfer-Encoding: chunked");
	hdrs = curl_slist_append(hdrs, "Expect:");
	curl_easy_setopt(h, CURLOPT_POST, 1L);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_READFUNCTION, read);
	curl_easy_setopt(h, CURLOPT_READDATA, ctx);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_stream_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
	curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, 256L * 1024);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	/* A daemon that neither reads nor answers for this long is stuck (a
	 * load reports progress while it applies each layer). */
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, STREAM_STALL_S);
	CURLcode rc = curl_easy_perform(h);
	long status = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(h);
	curl_slist_free_all(hdrs);
	int ret = 0;
	if (rc == CURLE_ABORTED_BY_CALLBACK) {
		ret = pp_error_set(err, PP_EINTR, "interrupted while docker was loading");
	} else if (rc != CURLE_OK) {
		ret = transport_error(err, d->socket, rc, errbuf);
	} else if (status != 200) {
		char msg[600];
		error_message(&s.raw, msg, sizeof(msg));
		ret = pp_error_set(err, PP_EPROTO, "docker POST %s: HTTP %ld: %s", path, status,
				   msg);
		err->http_status = status;
	} else {
		if (s.line.len)
			parse_message(s.line.data, s.line.len, text, &s.had_error, &s.msg_err);
		if (s.had_error) {
			*err = s.msg_err;
			ret = err->code;
		}
	}
	pp_buf_free(&s.line);
	pp_buf_free(&s.raw);
	return ret;
}
