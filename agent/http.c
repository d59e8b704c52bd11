/* Pieces of HTTP shared by the registry client and the fetch engine:
 * response header capture and the parsers for the headers we act on. */
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "prepull/error.h"
#include "prepull/http.h"
#include "prepull/log.h"
#include "prepull/stop.h"
#include "prepull/util.h"

void pp_http_response_reset(struct pp_http_response *r)
{
	free(r->content_type);
	free(r->docker_content_digest);
	free(r->www_authenticate);
	free(r->location);
	free(r->content_range);
	free(r->ratelimit_limit);
	free(r->ratelimit_remaining);
	size_t limit = r->body.limit;
	pp_buf_free(&r->body);
	memset(r, 0, sizeof(*r));
	r->body.limit = limit;
	r->retry_after = -1;
}

static char *header_value(const char *buf, size_t len, const char *name)
{
	size_t nl = strlen(name);
	if (len <= nl || strncasecmp(buf, name, nl) != 0 || buf[nl] != ':')
		return NULL;
	const char *v = buf + nl + 1;
	const char *end = buf + len;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
		end--;
	return pp_xstrndup(v, (size_t)(end - v));
}

static void take(char **slot, char *value)
{
	if (!value)
		return;
	free(*slot);
	*slot = value;
}

size_t pp_http_header_cb(char *buf, size_t size, size_t n, void *userdata)
{
	struct pp_http_response *r = userdata;
	size_t len = size * n;
	if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
		/* A new response (after a redirect or 100): forget the old headers. */
		pp_http_response_reset(r);
		const char *sp = memchr(buf, ' ', len);
		if (sp)
			r->status = strtol(sp + 1, NULL, 10);
		return len;
	}
	char *v;
	take(&r->content_type, header_value(buf, len, "Content-Type"));
	take(&r->docker_content_digest, header_value(buf, len, "Docker-Content-Digest"));
	take(&r->www_authenticate, header_value(buf, len, "WWW-Authenticate"));
	take(&r->location, header_value(buf, len, "Location"));
	take(&r->content_range, header_value(buf, len, "Content-Range"));
	take(&r->ratelimit_limit, header_value(buf, len, "RateLimit-Limit"));
	take(&r->ratelimit_remaining, header_value(buf, len, "RateLimit-Remaining"));
	if ((v = header_value(buf, len, "Retry-After"))) {
		r->retry_after = pp_parse_retry_after(v);
		free(v);
	}
	return len;
}

double pp_parse_retry_after(const char *value)
{
	if (!value)
		return -1;
	while (*value == ' ')
		value++;
	if (isdigit((unsigned char)*value)) {
		char *end;
		long s = strtol(value, &end, 10);
		while (*end == ' ')
			end++;
		if (*end == '\0' && s >= 0)
			return s > PP_RETRY_AFTER_MAX ? PP_RETRY_AFTER_MAX : (double)s;
		return -1;
	}
	time_t when = curl_getdate(value, NULL);
	if (when < 0)
		return -1;
	double d = difftime(when, time(NULL));
	return d < 0 ? 0 : d > PP_RETRY_AFTER_MAX ? PP_RETRY_AFTER_MAX : d;
}

static int parse_i64(const char **p, int64_t *out)
{
	const char *s = *p;
	if (!isdigit((unsigned char)*s))
		return -1;
	int64_t v = 0;
	while (isdigit((unsigned char)*s)) {
		if (v > (INT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (*s - '0');
		s++;
	}
	*p = s;
	*out = v;
	return 0;
}

int pp_parse_content_range(const char *value, int64_t *start, int64_t *end, int64_t *total,
			   struct pp_error *err)
{
	const char *p = value;
	if (!p || strncasecmp(p, "bytes", 5) != 0)
		goto bad;
	p += 5;
	if (*p != ' ')
		goto bad;
	while (*p == ' ')
		p++;
	if (parse_i64(&p, start) < 0 || *p++ != '-' || parse_i64(&p, end) < 0 || *p++ != '/')
		goto bad;
	if (*p == '*') {
		*total = -1;
		p++;
	} else if (parse_i64(&p, total) < 0) {
		goto bad;
	}
	if (*p != '\0' || *end < *start || (*total >= 0 && *end >= *total))
		goto bad;
	return 0;
bad:
	return pp_error_set(err, PP_EPROTO, "malformed Content-Range \"%.80s\"",
			    value ? value : "");
}

int pp_curl_error(struct pp_error *err, CURLcode rc, const char *errbuf, const char *url)
{
	const char *detail = (errbuf && *errbuf) ? errbuf : curl_easy_strerror(rc);
	if (rc == CURLE_ABORTED_BY_CALLBACK && pp_stop_requested)
		return pp_error_set(err, PP_EINTR, "interrupted; run again to resume");
	if (rc == CURLE_ABORTED_BY_CALLBACK && pp_should_stop())
		return pp_error_set(err, PP_EDEADLINE,
				    "deadline reached; progress kept for the next run");
	switch (rc) {
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CERTPROBLEM:
		return pp_error_set(
			err, PP_ETLS,
			"TLS error talking to %s: %s (trust a private CA with --ca-cert "
			"FILE, or skip verification with --insecure)",
			url, detail);
	default:
		return pp_error_set(err, PP_ENET, "%s: %s", url, detail);
	}
}

int pp_http_status_error(struct pp_error *err, const struct pp_http_response *resp)
{
	char detail[512] = "";
	if (resp->body.len) {
		json_t *root = json_loadb(resp->body.data, resp->body.len, 0, NULL);
		json_t *errors = root ? json_object_get(root, "errors") : NULL;
		json_t *first = json_is_array(errors) ? json_array_get(errors, 0) : NULL;
		const char *code = json_string_value(json_object_get(first, "code"));
		const char *msg = json_string_value(json_object_get(first, "message"));
		if (code || msg) {
			/* Server text, shown in our messages: no control characters. */
			char c[128], m[300];
			snprintf(detail, sizeof(detail), ": %s%s%s",
				 code ? pp_printable(c, sizeof(c), code) : "",
				 code && msg ? " " : "",
				 msg ? pp_printable(m, sizeof(m), msg) : "");
		}
		json_decref(root);
	}
	int code = PP_EGENERIC;
	if (resp->status == 404)
		code = PP_ENOTFOUND;
	else if (resp->status == 401 || resp->status == 403)
		code = PP_EAUTH;
	char limit[160] = "";
	long n = 0, w = 0, left = -1;
	/* "100;w=21600": 100 requests per window of 21600 s (Docker Hub). */
	if (resp->status == 429 && resp->ratelimit_limit &&
	    sscanf(resp->ratelimit_limit, "%ld;w=%ld", &n, &w) >= 1) {
		if (resp->ratelimit_remaining)
			sscanf(resp->ratelimit_remaining, "%ld", &left);
		int o = w > 0 ? snprintf(limit, sizeof(limit), " (rate limit: %ld per %ld s", n, w)
			      : snprintf(limit, sizeof(limit), " (rate limit: %ld", n);
		if (left >= 0 && o > 0 && (size_t)o < sizeof(limit))
			o += snprintf(limit + o, sizeof(limit) - (size_t)o, ", %ld left", left);
		if (resp->retry_after >= 0 && o > 0 && (size_t)o < sizeof(limit))
			o += snprintf(limit + o, sizeof(limit) - (size_t)o, ", retry after %.0f s",
				      resp->retry_after);
		if (o > 0 && (size_t)o < sizeof(limit) - 1)
			snprintf(limit + o, sizeof(limit) - (size_t)o, ")");
	}
	pp_error_set(err, code, "HTTP %ld%s%s", resp->status, detail, limit);
	err->http_status = resp->status;
	return code;
}

static void sleep_seconds(double s)
{
	double until = pp_now() + s;
	while (!pp_should_stop()) {
		double left = until - pp_now();
		if (left <= 0)
			return;
		if (left > 0.2)
			left = 0.2;
		struct timespec ts = {0, (long)(left * 1e9)};
		nanosleep(&ts, NULL);
	}
}

int pp_http_retry_wait(int attempt, double wait, const char *what, struct pp_error *err)
{
	if (attempt + 1 >= PP_HTTP_ATTEMPTS || pp_should_stop())
		return err->code;
	if (pp_deadline_at > 0 && pp_now() + wait > pp_deadline_at)
		wait = pp_deadline_at - pp_now();
	pp_warn("%s: %s; retrying in %.1f s", what, err->msg, wait);
	sleep_seconds(wait);
	return 0;
}

double pp_http_round_trip(CURL *h)
{
	curl_off_t lookup = 0, pre = 0, first = 0;
	long connects = 0;
	curl_easy_getinfo(h, CURLINFO_NAMELOOKUP_TIME_T, &lookup);
	curl_easy_getinfo(h, CURLINFO_PRETRANSFER_TIME_T, &pre);
	curl_easy_getinfo(h, CURLINFO_STARTTRANSFER_TIME_T, &first);
	curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects);
	if (first <= pre)
		return 0;
	double t = (double)(first - pre) / 1e6;
	if (connects > 0 && first > lookup && (double)(first - lookup) / 2e6 < t)
		t = (double)(first - lookup) / 2e6;
	return t;
}

static size_t body_cb(char *buf, size_t size, size_t n, void *userdata)
{
	struct pp_buf *b = userdata;
	if (pp_buf_append(b, buf, size * n) < 0)
		return 0; /* over the cap: abort the transfer */
	return size * n;
}

void pp_http_capture(CURL *h, const char *url, struct curl_slist *hdrs, char *errbuf,
		     struct pp_http_response *resp)
{
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, pp_http_header_cb);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, resp);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_cb);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp->body);
}
