/* A minimal gRPC client over libcurl: HTTP/2 with prior knowledge on a
 * unix socket, as containerd serves it.  A call sends one request body of
 * one or more framed messages (unary, or a client stream that the server
 * answers in lock-step, such as Content.Write with STAT then COMMIT) and
 * collects the response messages and the grpc-status trailer.
 *
 * One pp_grpc is one curl handle; use it from one thread at a time (each
 * call opens its own connection: see grpc.c on libcurl 7.88). */
#ifndef PREPULL_GRPC_H
#define PREPULL_GRPC_H

#include <stddef.h>
#include <stdint.h>

#include "prepull/util.h"

struct pp_error;
struct pp_grpc;

enum pp_grpc_code {
	PP_GRPC_OK = 0,
	PP_GRPC_CANCELLED = 1,
	PP_GRPC_UNKNOWN = 2,
	PP_GRPC_INVALID_ARGUMENT = 3,
	PP_GRPC_DEADLINE_EXCEEDED = 4,
	PP_GRPC_NOT_FOUND = 5,
	PP_GRPC_ALREADY_EXISTS = 6,
	PP_GRPC_PERMISSION_DENIED = 7,
	PP_GRPC_RESOURCE_EXHAUSTED = 8,
	PP_GRPC_FAILED_PRECONDITION = 9,
	PP_GRPC_ABORTED = 10,
	PP_GRPC_OUT_OF_RANGE = 11,
	PP_GRPC_UNIMPLEMENTED = 12,
	PP_GRPC_INTERNAL = 13,
	PP_GRPC_UNAVAILABLE = 14,
	PP_GRPC_DATA_LOSS = 15,
	PP_GRPC_UNAUTHENTICATED = 16,
	PP_GRPC_TRANSPORT = -1, /* no gRPC status: the call never completed */
};

/* Opens a client for the unix socket at `socket` (nothing is connected
 * until the first call).  Checks that the socket exists and is writable, so
 * "not running" and "permission denied" are told apart up front. */
int pp_grpc_new(struct pp_grpc **out, const char *socket, struct pp_error *err);
void pp_grpc_free(struct pp_grpc *g);

/* Metadata sent with every following call (NULL removes it), e.g.
 * "containerd-namespace" and "containerd-lease".  At most 4 keys. */
void pp_grpc_set_metadata(struct pp_grpc *g, const char *key, const char *value);

/* Seconds a call may take (0 = no limit).  Default 120. */
void pp_grpc_set_timeout(struct pp_grpc *g, long seconds);

/* Appends one message to a request body: flag 0, 4-byte big-endian length,
 * the protobuf bytes. */
void pp_grpc_frame(struct pp_buf *body, const void *msg, size_t len);

/* Calls `method` ("/containerd.services.content.v1.Content/Write") with a
 * body of framed messages.  On grpc-status 0 returns 0 with *resp holding
 * the response body (framed messages; walk them with pp_grpc_next_message).
 * Otherwise returns a negative PP_E* code, err says which method failed and
 * why (the server's grpc-message), and *code (when non-NULL) is the gRPC
 * status or PP_GRPC_TRANSPORT.  NOT_FOUND gives PP_ENOTFOUND,
 * PERMISSION_DENIED/UNAUTHENTICATED PP_EPERM, UNIMPLEMENTED
 * PP_EUNSUPPORTED, UNAVAILABLE and transport failures PP_ENET. */
int pp_grpc_call(struct pp_grpc *g, const char *method, const struct pp_buf *body,
		 struct pp_buf *resp, int *code, struct pp_error *err);

/* Unary convenience: frames `req` and returns the single response
 * message's bytes in *resp (unframed). */
int pp_grpc_unary(struct pp_grpc *g, const char *method, const struct pp_buf *req,
		  struct pp_buf *resp, int *code, struct pp_error *err);

/* Walks framed messages in a response body from *pos.  Returns 1 with *msg
 * and *len set, 0 at the end, PP_EPROTO for a truncated or compressed
 * frame. */
int pp_grpc_next_message(const struct pp_buf *body, size_t *pos, const uint8_t **msg, size_t *len,
			 struct pp_error *err);

/* "ALREADY_EXISTS" for 6, etc. */
const char *pp_grpc_code_name(int code);

#endif
