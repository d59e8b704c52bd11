/* Protobuf wire format: varints, length-delimited fields, map entries. */
#include <stdlib.h>
#include <string.h>

#include "prepull/error.h"
#include "prepull/protobuf.h"

static void append(struct pp_buf *b, const void *p, size_t n)
{
	if (pp_buf_append(b, p, n) < 0)
		abort(); /* out of memory: not recoverable here */
}

void pp_pb_put_varint(struct pp_buf *b, uint64_t v)
{
	uint8_t tmp[10];
	size_t n = 0;
	do {
		uint8_t byte = v & 0x7f;
		v >>= 7;
		tmp[n++] = byte | (v ? 0x80 : 0);
	} while (v);
	append(b, tmp, n);
}

static void put_tag(struct pp_buf *b, uint32_t field, enum pp_pb_wire wire)
{
	pp_pb_put_varint(b, ((uint64_t)field << 3) | (uint64_t)wire);
}

void pp_pb_put_uint(struct pp_buf *b, uint32_t field, uint64_t v)
{
	put_tag(b, field, PP_PB_VARINT);
	pp_pb_put_varint(b, v);
}

void pp_pb_put_bytes(struct pp_buf *b, uint32_t field, const void *data, size_t len)
{
	put_tag(b, field, PP_PB_LEN);
	pp_pb_put_varint(b, len);
	if (len)
		append(b, data, len);
}

void pp_pb_put_string(struct pp_buf *b, uint32_t field, const char *s)
{
	if (s)
		pp_pb_put_bytes(b, field, s, strlen(s));
}

void pp_pb_put_message(struct pp_buf *b, uint32_t field, const struct pp_buf *msg)
{
	pp_pb_put_bytes(b, field, msg->data, msg->len);
}

void pp_pb_put_map_entry(struct pp_buf *b, uint32_t field, const char *key, const char *value)
{
	struct pp_buf e = {0};
	pp_pb_put_string(&e, 1, key);
	pp_pb_put_string(&e, 2, value);
	pp_pb_put_message(b, field, &e);
	pp_buf_free(&e);
}

void pp_pb_reader_init(struct pp_pb_reader *r, const void *data, size_t len)
{
	r->p = data;
	r->end = r->p + (data ? len : 0);
}

static int read_varint(struct pp_pb_reader *r, uint64_t *out, struct pp_error *err)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < 10; i++) {
		if (r->p >= r->end)
			return pp_error_set(err, PP_EPROTO, "protobuf: truncated varint");
		uint8_t byte = *r->p++;
		/* The tenth byte holds bit 63 only. */
		if (i == 9 && byte > 1)
			return pp_error_set(err, PP_EPROTO, "protobuf: varint overflows 64 bits");
		v |= (uint64_t)(byte & 0x7f) << (7 * i);
		if (!(byte & 0x80)) {
			*out = v;
			return 0;
		}
	}
	return pp_error_set(err, PP_EPROTO, "protobuf: varint longer than 10 bytes");
}

static uint64_t read_le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;
	for (unsigned i = n; i-- > 0;)
		v = (v << 8) | p[i];
	return v;
}

int pp_pb_next(struct pp_pb_reader *r, struct pp_pb_field *f, struct pp_error *err)
{
	if (r->p >= r->end)
		return 0;
	uint64_t key;
	int rc = read_varint(r, &key, err);
	if (rc < 0)
		return rc;
	uint64_t num = key >> 3;
	if (num == 0 || num > PP_PB_MAX_FIELD)
		return pp_error_set(err, PP_EPROTO, "protobuf: invalid field number %llu",
				    (unsigned long long)num);
	memset(f, 0, sizeof(*f));
	f->num = (uint32_t)num;
	f->wire = (enum pp_pb_wire)(key & 7);
	size_t left;
	switch (key & 7) {
	case PP_PB_VARINT:
		if ((rc = read_varint(r, &f->u, err)) < 0)
			return rc;
		return 1;
	case PP_PB_FIXED64:
	case PP_PB_FIXED32: {
		unsigned n = (key & 7) == PP_PB_FIXED64 ? 8 : 4;
		if ((size_t)(r->end - r->p) < n)
			return pp_error_set(err, PP_EPROTO, "protobuf: truncated fixed%u field %u",
					    n * 8, f->num);
		f->u = read_le(r->p, n);
		r->p += n;
		return 1;
	}
	case PP_PB_LEN: {
		uint64_t len;
		if ((rc = read_varint(r, &len, err)) < 0)
			return rc;
		left = (size_t)(r->end - r->p);
		if (len > left)
			return pp_error_set(err, PP_EPROTO,
					    "protobuf: field %u claims %llu bytes, %zu left",
					    f->num, (unsigned long long)len, left);
		f->data = r->p;
		f->len = (size_t)len;
		r->p += len;
		return 1;
	}
	default:
		/* 3 and 4 are the deprecated groups; 6 and 7 do not exist. */
		return pp_error_set(err, PP_EPROTO,
				    "protobuf: unsupported wire type %u in field %u",
				    (unsigned)(key & 7), f->num);
	}
}

int pp_pb_string(const struct pp_pb_field *f, char **out, struct pp_error *err)
{
	if (f->wire != PP_PB_LEN)
		return pp_error_set(err, PP_EPROTO, "protobuf: field %u is not a string", f->num);
	if (f->len && memchr(f->data, 0, f->len))
		return pp_error_set(err, PP_EPROTO, "protobuf: string field %u holds a NUL byte",
				    f->num);
	free(*out);
	*out = pp_xstrndup(f->len ? (const char *)f->data : "", f->len);
	return 0;
}

int pp_pb_sub(const struct pp_pb_field *f, struct pp_pb_reader *out, struct pp_error *err)
{
	if (f->wire != PP_PB_LEN)
		return pp_error_set(err, PP_EPROTO, "protobuf: field %u is not a message", f->num);
	pp_pb_reader_init(out, f->data, f->len);
	return 0;
}

int pp_pb_map_entry(const struct pp_pb_field *f, const uint8_t **key, size_t *key_len,
		    const uint8_t **value, size_t *value_len, struct pp_error *err)
{
	struct pp_pb_reader r = {0};
	int rc = pp_pb_sub(f, &r, err);
	if (rc < 0)
		return rc;
	static const uint8_t empty[1];
	*key = *value = empty;
	*key_len = *value_len = 0;
	struct pp_pb_field e;
	while ((rc = pp_pb_next(&r, &e, err)) > 0) {
		if (e.num != 1 && e.num != 2)
			continue;
		if (e.wire != PP_PB_LEN)
			return pp_error_set(err, PP_EPROTO,
					    "protobuf: map entry field %u is not a string", e.num);
		if (e.num == 1) {
			*key = e.data;
			*key_len = e.len;
		} else {
			*value = e.data;
			*value_len = e.len;
		}
	}
	return rc;
}

int pp_pb_varint(const struct pp_pb_field *f, uint64_t *out, struct pp_error *err)
{
	if (f->wire != PP_PB_VARINT)
		return pp_error_set(err, PP_EPROTO, "protobuf: field %u is not a varint", f->num);
	*out = f->u;
	return 0;
}
