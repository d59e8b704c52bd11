/* Pieces of HTTP shared by the registry client, the fetch engine and the
 * daemon clients: capture of the response headers we act on, their parsers,
 * and the messages for transport errors and unexpected statuses. */
#ifndef PREPULL_HTTP_H
#define PREPULL_HTTP_H

#include <curl/curl.h>
#include <stdint.h>

#include "prepull/util.h"

struct pp_error;

/* What we keep of one HTTP response. */
struct pp_http_response {
	long status;
	char *content_type;
	char *docker_content_digest;
	char *www_authenticate;
	char *location;
	double retry_after; /* seconds, -1 when absent */
	char *content_range;
	char *ratelimit_limit;     /* Docker Hub's RateLimit-Limit, e.g. "100;w=21600" */
	char *ratelimit_remaining; /* RateLimit-Remaining, e.g. "0;w=21600" */
	struct pp_buf body;
};
void pp_http_response_reset(struct pp_http_response *r);

/* Header callback that fills a pp_http_response (pass it as HEADERDATA).
 * Resets on each new status line so redirects leave only the last one. */
size_t pp_http_header_cb(char *buf, size_t size, size_t n, void *userdata);

/* The longest wait a Retry-After gets: a server's word, not a reason to
 * wait for ever (or to overflow a timeout). */
#define PP_RETRY_AFTER_MAX 120.0

/* Points a request at `url` with headers `hdrs` and has its response
 * captured into resp: the headers we act on, and the body up to
 * resp->body.limit (past it the transfer is aborted).  errbuf is
 * CURL_ERROR_SIZE bytes. */
void pp_http_capture(CURL *h, const char *url, struct curl_slist *hdrs, char *errbuf,
		     struct pp_http_response *resp);

/* A finished request's round trip, in seconds (0: unknown): from the
 * request to its first byte, or on a new connection half the time from
 * the name lookup to the first byte when that is less (the handshake and
 * the request: where the TCP handshake ends nearby, at a proxy or a
 * middlebox, the far side's handshake shows in the request's time). */
double pp_http_round_trip(CURL *h);

/* Parses Retry-After (delta-seconds or HTTP-date) into seconds, at most
 * PP_RETRY_AFTER_MAX; -1 when unparseable. */
double pp_parse_retry_after(const char *value);

/* Parses "bytes a-b/total" ("*" total allowed as -1).  0 or PP_EPROTO. */
int pp_parse_content_range(const char *value, int64_t *start, int64_t *end, int64_t *total,
			   struct pp_error *err);

/* Turns a curl error into a prepull error with a helpful message. */
int pp_curl_error(struct pp_error *err, CURLcode rc, const char *errbuf, const char *url);

/* Message for an unexpected HTTP status, using the registry's JSON error
 * body when there is one; a 429 with RateLimit-* headers names the limit
 * and what is left, and the Retry-After when there is one. */
int pp_http_status_error(struct pp_error *err, const struct pp_http_response *resp);

/* How many times a request to a registry or its token server is tried. */
#define PP_HTTP_ATTEMPTS 5

/* The pause between two tries of a request that failed in a way worth
 * retrying (transport error, 5xx, 429, 408), described by err.  Waits
 * `wait` seconds (a Retry-After or a backoff; cut at the deadline, cut short
 * by a signal), logging "WHAT: err->msg; retrying in N s".
 * @param attempt  0 for the first try.
 * @return 0 when another try is due; err->code when the tries are used up
 * or prepull is stopping. */
int pp_http_retry_wait(int attempt, double wait, const char *what, struct pp_error *err);

#endif
