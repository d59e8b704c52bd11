/* libFuzzer target for the protobuf reader and the gRPC frame walker: the
 * bytes containerd sends back are read with them.  Every length-delimited
 * field is also read as a string, a map entry and a nested message, as the
 * containerd store does with the fields it knows. */
#include "prepull/error.h"
#include "prepull/grpc.h"
#include "prepull/protobuf.h"
#include "prepull/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_error(int r, const struct pp_error *err)
{
	if (r != PP_EPROTO || err->code != r || !err->msg[0])
		abort();
}

static void walk(const uint8_t *data, size_t size, int depth)
{
	struct pp_pb_reader r;
	struct pp_pb_field f;
	struct pp_error err = {0};
	int rc;
	pp_pb_reader_init(&r, data, size);
	while ((rc = pp_pb_next(&r, &f, &err)) > 0) {
		if (f.num == 0 || f.num > PP_PB_MAX_FIELD)
			abort();
		if (f.wire != PP_PB_LEN)
			continue;
		/* The field lies inside the input. */
		if (f.len > size || (f.len && (f.data < data || f.data + f.len > data + size)))
			abort();
		char *s = NULL;
		if (pp_pb_string(&f, &s, &err) == 0) {
			if (strlen(s) != f.len)
				abort();
			free(s);
		}
		const uint8_t *k, *v;
		size_t kl, vl;
		if (pp_pb_map_entry(&f, &k, &kl, &v, &vl, &err) == 0 && (kl > f.len || vl > f.len))
			abort();
		if (depth < 8)
			walk(f.data, f.len, depth + 1);
	}
	if (rc < 0)
		check_error(rc, &err);
	else if (r.p != r.end)
		abort(); /* a clean end consumed everything */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 65536)
		return 0;
	walk(data, size, 0);

	/* The same bytes as a gRPC response body. */
	struct pp_buf body = {0};
	pp_buf_append(&body, data, size);
	struct pp_error err = {0};
	size_t pos = 0, total = 0;
	const uint8_t *msg;
	size_t len;
	int rc;
	while ((rc = pp_grpc_next_message(&body, &pos, &msg, &len, &err)) > 0) {
		if (pos > body.len || len > body.len)
			abort();
		total += 5 + len;
		walk(msg, len, 4);
	}
	if (rc < 0)
		check_error(rc, &err);
	else if (total != body.len)
		abort();
	pp_buf_free(&body);
	return 0;
}
