/* Asks containerd's CRI plugin what kubelet would ask before deciding to
 * pull, over the socket with prepull's own gRPC client:
 *
 *   cri_tool SOCKET status IMAGE   runtime.v1.ImageService/ImageStatus
 *   cri_tool SOCKET list           runtime.v1.ImageService/ListImages
 *
 * Prints one JSON value: the image {"id", "repo_tags", "repo_digests",
 * "size"} (null when the CRI does not know it), or an array of them.
 * Exit 1 with a message on a failed call. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "prepull/error.h"
#include "prepull/grpc.h"
#include "prepull/protobuf.h"
#include "prepull/util.h"

#define SVC "/runtime.v1.ImageService/"

/* Image {id = 1, repo_tags = 2, repo_digests = 3, size = 4} as JSON. */
static json_t *image_json(const struct pp_pb_field *f, struct pp_error *err)
{
	struct pp_pb_reader rd = {0};
	struct pp_pb_field g;
	if (pp_pb_sub(f, &rd, err) < 0)
		return NULL;
	json_t *img = json_pack("{s:s, s:[], s:[], s:I}", "id", "", "repo_tags", "repo_digests",
				"size", (json_int_t)0);
	int r;
	while ((r = pp_pb_next(&rd, &g, err)) > 0) {
		char *s = NULL;
		uint64_t v;
		if ((g.num == 1 || g.num == 2 || g.num == 3) && pp_pb_string(&g, &s, err) == 0) {
			if (g.num == 1)
				json_object_set_new(img, "id", json_string(s));
			else
				json_array_append_new(
					json_object_get(img,
							g.num == 2 ? "repo_tags" : "repo_digests"),
					json_string(s));
		} else if (g.num == 4 && pp_pb_varint(&g, &v, err) == 0) {
			json_object_set_new(img, "size", json_integer((json_int_t)v));
		}
		free(s);
	}
	if (r < 0) {
		json_decref(img);
		return NULL;
	}
	return img;
}

/* The Image messages (field 1) of a response, or of its first field's. */
static json_t *images(const struct pp_buf *resp, struct pp_error *err)
{
	json_t *list = json_array();
	struct pp_pb_reader rd = {0};
	struct pp_pb_field f;
	int r;
	pp_pb_reader_init(&rd, resp->data, resp->len);
	while ((r = pp_pb_next(&rd, &f, err)) > 0) {
		if (f.num != 1)
			continue;
		json_t *img = image_json(&f, err);
		if (!img) {
			json_decref(list);
			return NULL;
		}
		json_array_append_new(list, img);
	}
	if (r < 0) {
		json_decref(list);
		return NULL;
	}
	return list;
}

int main(int argc, char **argv)
{
	if (argc < 3 || (strcmp(argv[2], "status") == 0 && argc != 4)) {
		fprintf(stderr, "usage: cri_tool SOCKET status IMAGE | cri_tool SOCKET list\n");
		return 2;
	}
	struct pp_error err = {0};
	struct pp_grpc *g = NULL;
	if (pp_grpc_new(&g, argv[1], &err) < 0) {
		fprintf(stderr, "cri_tool: %s\n", err.msg);
		return 1;
	}
	struct pp_buf req = {0}, spec = {0}, resp = {0};
	const char *method;
	if (strcmp(argv[2], "status") == 0) {
		/* ImageStatusRequest {image = 1 ImageSpec {image = 1}} */
		pp_pb_put_string(&spec, 1, argv[3]);
		pp_pb_put_message(&req, 1, &spec);
		method = SVC "ImageStatus";
	} else {
		method = SVC "ListImages"; /* ListImagesRequest {}: no filter */
	}
	int rc = 1;
	json_t *out = NULL;
	if (pp_grpc_unary(g, method, &req, &resp, NULL, &err) == 0 && (out = images(&resp, &err))) {
		if (strcmp(argv[2], "status") == 0) {
			json_t *first = json_incref(json_array_get(out, 0));
			json_decref(out);
			out = first ? first : json_null();
		}
		char *s = json_dumps(out, JSON_COMPACT | JSON_ENCODE_ANY);
		printf("%s\n", s);
		free(s);
		rc = 0;
	} else {
		fprintf(stderr, "cri_tool: %s\n", err.msg);
	}
	json_decref(out);
	pp_buf_free(&req);
	pp_buf_free(&spec);
	pp_buf_free(&resp);
	pp_grpc_free(g);
	return rc;
}
