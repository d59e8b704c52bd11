/* gRPC over HTTP/2 (prior knowledge) on a unix socket, with libcurl. */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "prepull/error.h"
#include "prepull/grpc.h"
#include "prepull/log.h"
#include "prepull/stop.h"
#include "prepull/util.h"

/* A call in flight when a signal or the deadline stops the run gets this
 * long to finish, then it is abandoned (a Diff.Apply may otherwise hold
 * the run for the hour its timeout allows).  Calls made after the stop,
 * to register what is complete and drop the lease, take milliseconds. */
#define STOP_GRACE 2.0

#define MAX_METADATA 4
/* containerd refuses messages over 16 MiB; ours are far smaller, and a
 * response this large means something is wrong. */
#define MAX_RESPONSE (64 * 1024 * 1024)

struct pp_grpc {
	char *socket;
	CURL *h;
	long timeout;
	char *md_key[MAX_METADATA];
	char *md_value[MAX_METADATA];
};

/* What one call collects from the response headers and trailers. */
struct reply {
	int status; /* -1 until a grpc-status header is seen */
	char *message;
	long http_status;
};

int pp_grpc_new(struct pp_grpc **out, const char *socket, struct pp_error *err)
{
	struct stat st;
	if (stat(socket, &st) < 0) {
		if (errno == ENOENT)
			return pp_error_set(
				err, PP_ENET,
				"containerd socket %s does not exist: is containerd "
				"running? (give another with --store containerd:SOCKET)",
				socket);
		if (errno == EACCES)
			return pp_error_set(err, PP_EPERM,
					    "containerd socket %s: permission denied (run as root)",
					    socket);
		return pp_error_errno(err, "containerd socket %s", socket);
	}
	if (!S_ISSOCK(st.st_mode))
		return pp_error_set(err, PP_EUSAGE, "%s is not a unix socket", socket);
	if (access(socket, R_OK | W_OK) < 0)
		return pp_error_set(err, PP_EPERM,
				    "containerd socket %s: permission denied (run as root or as a "
				    "member of the socket's group)",
				    socket);
	struct pp_grpc *g = pp_xcalloc(1, sizeof(*g));
	g->socket = pp_xstrdup(socket);
	g->timeout = 120;
	g->h = curl_easy_init();
	if (!g->h) {
		pp_grpc_free(g);
		return pp_error_set(err, PP_EGENERIC, "curl_easy_init failed");
	}
	*out = g;
	return 0;
}

void pp_grpc_free(struct pp_grpc *g)
{
	if (!g)
		return;
	if (g->h)
		curl_easy_cleanup(g->h);
	for (int i = 0; i < MAX_METADATA; i++) {
		free(g->md_key[i]);
		free(g->md_value[i]);
	}
	free(g->socket);
	free(g);
}

void pp_grpc_set_metadata(struct pp_grpc *g, const char *key, const char *value)
{
	int slot = -1;
	for (int i = 0; i < MAX_METADATA; i++) {
		if (g->md_key[i] && strcmp(g->md_key[i], key) == 0) {
			slot = i;
			break;
		}
		if (!g->md_key[i] && slot < 0)
			slot = i;
	}
	if (slot < 0)
		abort(); /* a programming error: more keys than MAX_METADATA */
	free(g->md_key[slot]);
	free(g->md_value[slot]);
	g->md_key[slot] = value ? pp_xstrdup(key) : NULL;
	g->md_value[slot] = value ? pp_xstrdup(value) : NULL;
}

void pp_grpc_set_timeout(struct pp_grpc *g, long seconds)
{
	g->timeout = seconds;
}

void pp_grpc_frame(struct pp_buf *body, const void *msg, size_t len)
{
	uint8_t hdr[5] = {0, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
			  (uint8_t)len};
	if (pp_buf_append(body, hdr, sizeof(hdr)) < 0 || (len && pp_buf_append(body, msg, len) < 0))
		abort();
}

int pp_grpc_next_message(const struct pp_buf *body, size_t *pos, const uint8_t **msg, size_t *len,
			 struct pp_error *err)
{
	if (*pos >= body->len)
		return 0;
	if (body->len - *pos < 5)
		return pp_error_set(err, PP_EPROTO, "gRPC: truncated message header");
	const uint8_t *p = (const uint8_t *)body->data + *pos;
	if (p[0] != 0)
		return pp_error_set(err, PP_EPROTO, "gRPC: compressed message (flag %u)", p[0]);
	size_t n = ((size_t)p[1] << 24) | ((size_t)p[2] << 16) | ((size_t)p[3] << 8) | p[4];
	if (n > body->len - *pos - 5)
		return pp_error_set(err, PP_EPROTO, "gRPC: message of %zu bytes, %zu received", n,
				    body->len - *pos - 5);
	*msg = p + 5;
	*len = n;
	*pos += 5 + n;
	return 1;
}

const char *pp_grpc_code_name(int code)
{
	static const char *const names[] = {
		"OK",
		"CANCELLED",
		"UNKNOWN",
		"INVALID_ARGUMENT",
		"DEADLINE_EXCEEDED",
		"NOT_FOUND",
		"ALREADY_EXISTS",
		"PERMISSION_DENIED",
		"RESOURCE_EXHAUSTED",
		"FAILED_PRECONDITION",
		"ABORTED",
		"OUT_OF_RANGE",
		"UNIMPLEMENTED",
		"INTERNAL",
		"UNAVAILABLE",
		"DATA_LOSS",
		"UNAUTHENTICATED",
	};
	if (code >= 0 && code < (int)(sizeof(names) / sizeof(names[0])))
		return names[code];
	return "UNKNOWN";
}

/* grpc-message is percent-encoded. */
static char *percent_decode(const char *s, size_t n)
{
	char *out = pp_xmalloc(n + 1);
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		int hi, lo;
		if (s[i] == '%' && i + 2 < n && (hi = pp_hex_value(s[i + 1])) >= 0 &&
		    (lo = pp_hex_value(s[i + 2])) >= 0) {
			out[o++] = (char)(hi * 16 + lo);
			i += 2;
		} else {
			out[o++] = s[i];
		}
	}
	out[o] = '\0';
	return out;
}

static size_t header_cb(char *buf, size_t size, size_t n, void *userdata)
{
	struct reply *r = userdata;
	size_t len = size * n;
	size_t end = len;
	while (end && (buf[end - 1] == '\r' || buf[end - 1] == '\n'))
		end--;
	if (end >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
		const char *sp = memchr(buf, ' ', end);
		if (sp)
			r->http_status = strtol(sp + 1, NULL, 10);
		return len;
	}
	const char *colon = memchr(buf, ':', end);
	if (!colon)
		return len;
	size_t klen = (size_t)(colon - buf);
	const char *v = colon + 1;
	while (v < buf + end && (*v == ' ' || *v == '\t'))
		v++;
	size_t vlen = (size_t)(buf + end - v);
	if (klen == 11 && strncasecmp(buf, "grpc-status", 11) == 0) {
		char tmp[16];
		if (vlen == 0 || vlen >= sizeof(tmp))
			return len;
		memcpy(tmp, v, vlen);
		tmp[vlen] = '\0';
		char *e;
		long code = strtol(tmp, &e, 10);
		if (*e == '\0' && code >= 0 && code < 1000)
			r->status = (int)code;
	} else if (klen == 12 && strncasecmp(buf, "grpc-message", 12) == 0) {
		free(r->message);
		r->message = percent_decode(v, vlen);
	}
	return len;
}

static size_t write_cb(char *data, size_t size, size_t n, void *userdata)
{
	struct pp_buf *b = userdata;
	if (pp_buf_append(b, data, size * n) < 0)
		return 0;
	return size * n;
}

static int code_to_error(int code)
{
	switch (code) {
	case PP_GRPC_NOT_FOUND:
		return PP_ENOTFOUND;
	case PP_GRPC_PERMISSION_DENIED:
	case PP_GRPC_UNAUTHENTICATED:
		return PP_EPERM;
	case PP_GRPC_UNIMPLEMENTED:
		return PP_EUNSUPPORTED;
	case PP_GRPC_UNAVAILABLE:
		return PP_ENET;
	case PP_GRPC_INVALID_ARGUMENT:
		return PP_EUSAGE;
	default:
		return PP_EPROTO;
	}
}

/* Describes a failed connect the way a person at the console needs it. */
static int transport_error(struct pp_grpc *g, CURLcode rc, const char *errbuf, const char *method,
			   struct pp_error *err)
{
	long os_errno = 0;
	curl_easy_getinfo(g->h, CURLINFO_OS_ERRNO, &os_errno);
	if (rc == CURLE_COULDNT_CONNECT) {
		if (os_errno == ECONNREFUSED || os_errno == ENOENT)
			return pp_error_set(err, PP_ENET,
					    "cannot connect to containerd at %s: %s (is containerd "
					    "running?)",
					    g->socket, strerror((int)os_errno));
		if (os_errno == EACCES || os_errno == EPERM)
			return pp_error_set(err, PP_EPERM,
					    "cannot connect to containerd at %s: permission denied "
					    "(run as root)",
					    g->socket);
	}
	if (rc == CURLE_OPERATION_TIMEDOUT)
		return pp_error_set(err, PP_ENET, "containerd %s: no answer after %ld s", method,
				    g->timeout);
	return pp_error_set(err, PP_ENET, "containerd %s at %s: %s", method, g->socket,
			    errbuf[0] ? errbuf : curl_easy_strerror(rc));
}

/* curl's progress callback: non-zero aborts the call. */
static int stop_cb(void *ctx, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		   curl_off_t ulnow)
{
	double *stop_seen = ctx;
	(void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
	if (!pp_should_stop())
		return 0;
	double now = pp_now();
	if (*stop_seen == 0)
		*stop_seen = now;
	return now - *stop_seen > STOP_GRACE;
}

int pp_grpc_call(struct pp_grpc *g, const char *method, const struct pp_buf *body,
		 struct pp_buf *resp, int *code, struct pp_error *err)
{
	double stop_seen = 0;
	struct reply r = {.status = -1};
	char errbuf[CURL_ERROR_SIZE] = "";
	struct curl_slist *hdrs = NULL;
	cleanup_free char *url = pp_xasprintf("http://localhost%s", method);
	int ret = 0;

	if (code)
		*code = PP_GRPC_TRANSPORT;
	pp_buf_free(resp);
	*resp = (struct pp_buf){.limit = MAX_RESPONSE};

	hdrs = curl_slist_append(hdrs, "Content-Type: application/grpc");
	hdrs = curl_slist_append(hdrs, "TE: trailers");
	hdrs = curl_slist_append(hdrs, "Expect:");
	for (int i = 0; i < MAX_METADATA; i++) {
		if (!g->md_key[i])
			continue;
		cleanup_free char *line = pp_xasprintf("%s: %s", g->md_key[i], g->md_value[i]);
		hdrs = curl_slist_append(hdrs, line);
	}

	CURL *h = g->h;
	/* Every option is set on each call, so the handle needs no reset. */
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, g->socket);
	curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
	/* libcurl 7.88 breaks a reused prior-knowledge HTTP/2 connection
	 * ("Error in the HTTP2 framing layer", curl issue 10634, fixed in 8.0):
	 * one connection per call; a unix socket connect costs microseconds. */
	curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L);
	curl_easy_setopt(h, CURLOPT_POST, 1L);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body->data ? body->data : "");
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body->len);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "prepull/" PREPULL_VERSION " grpc-c");
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &r);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, resp);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, g->timeout);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, stop_cb);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, &stop_seen);

	CURLcode rc = curl_easy_perform(h);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, NULL);
	/* The handle outlives this frame: drop the pointers into it. */
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(hdrs);
	if (rc == CURLE_ABORTED_BY_CALLBACK) {
		ret = pp_error_set(err, pp_stop_requested ? PP_EINTR : PP_EDEADLINE,
				   "containerd %s: abandoned %.0f s after the run was stopped",
				   method, STOP_GRACE);
		goto done;
	}
	if (rc != CURLE_OK) {
		ret = transport_error(g, rc, errbuf, method, err);
		goto done;
	}
	if (r.status < 0) {
		/* No grpc-status: not a gRPC server, or the stream was reset. */
		ret = pp_error_set(err, PP_EPROTO,
				   "containerd %s: no grpc-status in the answer (HTTP %ld): is %s "
				   "a containerd socket?",
				   method, r.http_status, g->socket);
		goto done;
	}
	if (code)
		*code = r.status;
	if (r.status != PP_GRPC_OK) {
		char msg[600];
		ret = pp_error_set(err, code_to_error(r.status), "containerd %s: %s: %s", method,
				   pp_grpc_code_name(r.status),
				   pp_printable(msg, sizeof(msg), r.message ? r.message : ""));
		goto done;
	}
done:
	free(r.message);
	if (ret < 0)
		pp_buf_free(resp);
	return ret;
}

int pp_grpc_unary(struct pp_grpc *g, const char *method, const struct pp_buf *req,
		  struct pp_buf *resp, int *code, struct pp_error *err)
{
	struct pp_buf body = {0}, raw = {0};
	pp_grpc_frame(&body, req->data, req->len);
	int r = pp_grpc_call(g, method, &body, &raw, code, err);
	pp_buf_free(&body);
	if (r < 0)
		return r;
	size_t pos = 0;
	const uint8_t *msg = NULL;
	size_t len = 0;
	r = pp_grpc_next_message(&raw, &pos, &msg, &len, err);
	if (r == 0)
		r = pp_error_set(err, PP_EPROTO, "containerd %s: OK without a response message",
				 method);
	if (r > 0) {
		pp_buf_free(resp);
		*resp = (struct pp_buf){0};
		if (len)
			pp_buf_append(resp, msg, len);
		r = 0;
	}
	pp_buf_free(&raw);
	return r;
}
