/* A small protobuf codec: enough of the wire format to speak containerd's
 * gRPC API.  The writer appends fields to a pp_buf; nested messages are
 * built in their own pp_buf and added as bytes.  The reader walks the
 * fields of one message without allocating; input is untrusted (it comes
 * off a socket), so every length is checked against the end of the input
 * and anything malformed is an error, never a read past the end. */
#ifndef PREPULL_PROTOBUF_H
#define PREPULL_PROTOBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "prepull/util.h"

struct pp_error;

enum pp_pb_wire {
	PP_PB_VARINT = 0,
	PP_PB_FIXED64 = 1,
	PP_PB_LEN = 2,
	PP_PB_FIXED32 = 5,
};

/* Field numbers are 1 .. 2^29-1. */
#define PP_PB_MAX_FIELD 536870911u

/* ---- writing.  Out of memory aborts, as pp_x* do. */

void pp_pb_put_varint(struct pp_buf *b, uint64_t v);
/* A varint field (int32, int64, uint64, bool, enum).  Negative int64 values
 * are written as 10-byte two's complement, as protobuf does. */
void pp_pb_put_uint(struct pp_buf *b, uint32_t field, uint64_t v);
void pp_pb_put_bytes(struct pp_buf *b, uint32_t field, const void *data, size_t len);
/* Writes nothing when s is NULL (proto3: an absent string is ""). */
void pp_pb_put_string(struct pp_buf *b, uint32_t field, const char *s);
/* A nested message already encoded in `msg` (may be empty). */
void pp_pb_put_message(struct pp_buf *b, uint32_t field, const struct pp_buf *msg);
/* One entry of a map<string,string> field: {key = 1, value = 2}. */
void pp_pb_put_map_entry(struct pp_buf *b, uint32_t field, const char *key, const char *value);

/* ---- reading */

struct pp_pb_reader {
	const uint8_t *p;
	const uint8_t *end;
};

struct pp_pb_field {
	uint32_t num;
	enum pp_pb_wire wire;
	uint64_t u;          /* VARINT, FIXED64, FIXED32 */
	const uint8_t *data; /* LEN: points into the input */
	size_t len;
};

void pp_pb_reader_init(struct pp_pb_reader *r, const void *data, size_t len);

/* Reads the next field into *f.  Returns 1 for a field, 0 at the end of the
 * message, PP_EPROTO when the input is truncated or malformed (bad varint,
 * field number 0, length past the end, group or unknown wire type).
 * Unknown fields are simply returned; callers skip what they do not know. */
int pp_pb_next(struct pp_pb_reader *r, struct pp_pb_field *f, struct pp_error *err);

/* Copies a LEN field as a NUL-terminated string.  PP_EPROTO when the field
 * is not length-delimited or holds a NUL byte.  Caller frees *out (a value
 * already in *out is freed first, so a repeated field keeps the last). */
int pp_pb_string(const struct pp_pb_field *f, char **out, struct pp_error *err);

/* Reader over a LEN field's bytes (a nested message).  PP_EPROTO when the
 * field is not length-delimited. */
int pp_pb_sub(const struct pp_pb_field *f, struct pp_pb_reader *out, struct pp_error *err);

/* A map<string,string> entry: *key and *value point into the input (not
 * NUL-terminated); missing parts are empty. */
int pp_pb_map_entry(const struct pp_pb_field *f, const uint8_t **key, size_t *key_len,
		    const uint8_t **value, size_t *value_len, struct pp_error *err);

/* PP_EPROTO unless the field is a varint. */
int pp_pb_varint(const struct pp_pb_field *f, uint64_t *out, struct pp_error *err);

#endif
