/* A small client for the Docker Engine API on its unix socket (HTTP/1.1
 * through libcurl's CURLOPT_UNIX_SOCKET_PATH).  It negotiates the API
 * version (/_ping, /version), learns which image store the daemon uses
 * (/info) and offers the few calls the docker store needs. */
#ifndef PREPULL_DOCKER_API_H
#define PREPULL_DOCKER_API_H

#include <stdbool.h>
#include <stddef.h>

#include "prepull/util.h"

struct pp_error;

/* The newest API version we speak (1.47 reports Containerd.Address in
 * /info) and the oldest we accept (the daemon's own floor since 2016). */
#define PP_DOCKER_API_MAX_MAJOR 1
#define PP_DOCKER_API_MAX_MINOR 47
#define PP_DOCKER_API_MIN_MAJOR 1
#define PP_DOCKER_API_MIN_MINOR 24

#define PP_DOCKER_DEFAULT_SOCKET "/var/run/docker.sock"

struct pp_docker {
	char *socket;
	int api_major, api_minor;       /* negotiated: min(ours, the daemon's) */
	char *version;                  /* "20.10.24+dfsg1" */
	int engine_major, engine_minor; /* 20, 10; 0, 0 when unparseable */
	bool zstd_layers;               /* the daemon can read zstd-compressed layers */
	bool containerd_store;          /* images live in containerd (namespace moby) */
	char *containerd_address;       /* from /info when it says; else NULL */
};

/* The socket to use when none is given: $DOCKER_HOST when it is
 * unix://PATH, else /var/run/docker.sock.  Returns a static or
 * environment string. */
const char *pp_docker_default_socket(void);

/* Connects to the daemon at `socket` (NULL for the default): checks the
 * socket can be reached, negotiates the API version and reads /version
 * and /info.  Errors say plainly whether Docker is not running, the socket
 * is not ours to use, or the API is too old.  Caller frees *out. */
int pp_docker_connect(struct pp_docker **out, const char *socket, struct pp_error *err);
void pp_docker_free(struct pp_docker *d);

/* True when something answers /_ping on `socket` within about a second
 * (used by `--store auto`). */
bool pp_docker_socket_answers(const char *socket);

/* One request with a small body (or none).  `path` is without the version
 * prefix ("/images/x/json").  The response body (at most 8 MiB) goes to
 * *body when body is non-NULL; *status is the HTTP status. */
int pp_docker_request(struct pp_docker *d, const char *method, const char *path,
		      struct pp_buf *body, long *status, struct pp_error *err);

/* Streams a request body produced by `read` (curl read-callback
 * semantics: bytes written into buf, 0 at the end, CURL_READFUNC_ABORT to
 * stop) as a chunked POST, e.g. to /images/load.  Such calls answer 200
 * and then a JSON message stream that may carry the real error: it is
 * read as it arrives, and the first error in it fails the call
 * (PP_EGENERIC with the daemon's message).  The text of "stream"
 * messages is appended to *text (capped) when text is non-NULL.  When
 * `read` aborted, the call fails with PP_EINTR and the caller supplies
 * its own reason. */
typedef size_t (*pp_docker_read_fn)(char *buf, size_t size, size_t n, void *ctx);
int pp_docker_post_stream(struct pp_docker *d, const char *path, const char *content_type,
			  pp_docker_read_fn read, void *ctx, struct pp_buf *text,
			  struct pp_error *err);

/* Reads the JSON message stream an Engine API call answers with
 * ({"stream":..}, {"status":..}, {"errorDetail":{..},"error":..}).  The
 * first error becomes PP_EGENERIC with its message.  The text of
 * "stream" messages is appended to *text when text is non-NULL. */
int pp_docker_parse_messages(const char *data, size_t len, struct pp_buf *text,
			     struct pp_error *err);

/* "20.10.24+dfsg1" -> 20, 10;  "1.41" -> 1, 41.  -1 when unparseable. */
int pp_docker_parse_version(const char *s, int *major, int *minor);

/* The name docker shows for a normalised reference: "docker.io/library/x"
 * -> "x", "docker.io/u/x" -> "u/x", others unchanged.  Caller frees. */
char *pp_docker_familiar_name(const char *domain, const char *path);

#endif
