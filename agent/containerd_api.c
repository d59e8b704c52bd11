/* containerd's gRPC API: request encoding and answer parsing for the calls
 * the containerd store makes.  Field numbers are those of containerd's
 * api/services/<service>/v1/<service>.proto and api/types/descriptor.proto. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prepull/containerd_api.h"
#include "prepull/error.h"
#include "prepull/grpc.h"
#include "prepull/log.h"
#include "prepull/protobuf.h"
#include "prepull/util.h"

#define SVC_INTROSPECTION "/containerd.services.introspection.v1.Introspection/"
#define SVC_CONTENT "/containerd.services.content.v1.Content/"
#define SVC_IMAGES "/containerd.services.images.v1.Images/"
#define SVC_LEASES "/containerd.services.leases.v1.Leases/"
#define SVC_SNAPSHOTS "/containerd.services.snapshots.v1.Snapshots/"
#define SVC_DIFF "/containerd.services.diff.v1.Diff/"

/* WriteContentRequest.action */
enum { WRITE_STAT = 0, WRITE_COMMIT = 2 };

/* Digests in messages are cut to "sha256:" + 12 hex, as elsewhere. */
#define SHORT_FMT "%.19s"

/* ------------------------------------------------------------ encoding */

static void put_labels(struct pp_buf *b, uint32_t field, const struct pp_ctd_label *labels,
		       size_t n)
{
	for (size_t i = 0; i < n; i++)
		pp_pb_put_map_entry(b, field, labels[i].key, labels[i].value);
}

/* containerd.types.Descriptor */
static void put_descriptor(struct pp_buf *b, uint32_t field, const char *media_type,
			   const char *digest, int64_t size)
{
	struct pp_buf d = {0};
	pp_pb_put_string(&d, 1, media_type);
	pp_pb_put_string(&d, 2, digest);
	pp_pb_put_uint(&d, 3, (uint64_t)size);
	pp_pb_put_message(b, field, &d);
	pp_buf_free(&d);
}

/* google.protobuf.FieldMask with one "labels.<key>" path per label. */
static void put_label_mask(struct pp_buf *b, uint32_t field, const struct pp_ctd_label *labels,
			   size_t n, const char *extra_path)
{
	struct pp_buf m = {0};
	if (extra_path)
		pp_pb_put_string(&m, 1, extra_path);
	for (size_t i = 0; i < n; i++) {
		cleanup_free char *path = pp_xasprintf("labels.%s", labels[i].key);
		pp_pb_put_string(&m, 1, path);
	}
	pp_pb_put_message(b, field, &m);
	pp_buf_free(&m);
}

/* ------------------------------------------------------------ introspection */

static void plugin_free(struct pp_ctd_plugin *p)
{
	free(p->id);
	free(p->root);
	free(p->init_err);
}

void pp_ctd_plugins_free(struct pp_ctd_plugin *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		plugin_free(&list[i]);
	free(list);
}

/* introspection.Plugin: id = 2, exports = 5 (map), init_err = 7. */
static int parse_plugin(struct pp_pb_reader *rd, struct pp_ctd_plugin *p, struct pp_error *err)
{
	struct pp_pb_field f;
	int r;
	while ((r = pp_pb_next(rd, &f, err)) > 0) {
		if (f.num == 2) {
			if ((r = pp_pb_string(&f, &p->id, err)) < 0)
				return r;
		} else if (f.num == 5) {
			const uint8_t *k, *v;
			size_t kl, vl;
			if ((r = pp_pb_map_entry(&f, &k, &kl, &v, &vl, err)) < 0)
				return r;
			if (kl == 4 && memcmp(k, "root", 4) == 0) {
				free(p->root);
				p->root = pp_xstrndup((const char *)v, vl);
			}
		} else if (f.num == 7) {
			/* google.rpc.Status {code = 1, message = 2} */
			struct pp_pb_reader st = {0};
			struct pp_pb_field g;
			if ((r = pp_pb_sub(&f, &st, err)) < 0)
				return r;
			while ((r = pp_pb_next(&st, &g, err)) > 0)
				if (g.num == 2 && (r = pp_pb_string(&g, &p->init_err, err)) < 0)
					return r;
			if (r < 0)
				return r;
			if (!p->init_err)
				p->init_err = pp_xstrdup("failed to initialise");
		}
	}
	return r;
}

int pp_ctd_plugins(struct pp_grpc *g, const char *filter, struct pp_ctd_plugin **out, size_t *n_out,
		   struct pp_error *err)
{
	struct pp_buf req = {0}, resp = {0};
	pp_pb_put_string(&req, 1, filter);
	int r = pp_grpc_unary(g, SVC_INTROSPECTION "Plugins", &req, &resp, NULL, err);
	pp_buf_free(&req);
	if (r < 0)
		return r;
	struct pp_ctd_plugin *list = NULL;
	size_t n = 0;
	struct pp_pb_reader rd = {0}, sub = {0};
	struct pp_pb_field f;
	pp_pb_reader_init(&rd, resp.data, resp.len);
	while ((r = pp_pb_next(&rd, &f, err)) > 0) {
		if (f.num != 1)
			continue;
		if ((r = pp_pb_sub(&f, &sub, err)) < 0)
			break;
		list = pp_xrealloc(list, (n + 1) * sizeof(*list));
		list[n] = (struct pp_ctd_plugin){0};
		r = parse_plugin(&sub, &list[n], err);
		n++;
		if (r < 0)
			break;
	}
	pp_buf_free(&resp);
	if (r < 0) {
		pp_ctd_plugins_free(list, n);
		return pp_error_wrap(err, "containerd Introspection.Plugins");
	}
	*out = list;
	*n_out = n;
	return 0;
}

/* ------------------------------------------------------------ content */

int pp_ctd_content_label(struct pp_grpc *g, const char *digest, const struct pp_ctd_label *labels,
			 size_t n, struct pp_error *err)
{
	/* UpdateRequest {info = 1 (Info {digest = 1, labels = 5}), update_mask = 2} */
	struct pp_buf info = {0}, req = {0}, resp = {0};
	pp_pb_put_string(&info, 1, digest);
	put_labels(&info, 5, labels, n);
	pp_pb_put_message(&req, 1, &info);
	put_label_mask(&req, 2, labels, n, NULL);
	int r = pp_grpc_unary(g, SVC_CONTENT "Update", &req, &resp, NULL, err);
	pp_buf_free(&info);
	pp_buf_free(&req);
	pp_buf_free(&resp);
	if (r < 0)
		return pp_error_wrap(err, "label " SHORT_FMT, digest);
	return 0;
}

int pp_ctd_content_register(struct pp_grpc *g, const char *digest, int64_t size,
			    const struct pp_ctd_label *labels, size_t n, struct pp_error *err)
{
	/* WriteContentRequest {action = 1, ref = 2, total = 3, expected = 4,
	 * offset = 5, labels = 7}.  With the shared content policy containerd
	 * finds the blob in its backend, reports offset == size on STAT and
	 * commits without a byte of data. */
	cleanup_free char *ref = pp_xasprintf("prepull-%s", digest);
	struct pp_buf stat_msg = {0}, commit = {0}, body = {0}, resp = {0};
	pp_pb_put_string(&stat_msg, 2, ref);
	pp_pb_put_uint(&stat_msg, 3, (uint64_t)size);
	pp_pb_put_string(&stat_msg, 4, digest);
	pp_pb_put_uint(&commit, 1, WRITE_COMMIT);
	pp_pb_put_string(&commit, 2, ref);
	pp_pb_put_uint(&commit, 3, (uint64_t)size);
	pp_pb_put_string(&commit, 4, digest);
	pp_pb_put_uint(&commit, 5, (uint64_t)size);
	put_labels(&commit, 7, labels, n);
	/* containerd answers each message in turn; both can go at once. */
	pp_grpc_frame(&body, stat_msg.data, stat_msg.len);
	pp_grpc_frame(&body, commit.data, commit.len);
	int code = 0;
	int r = pp_grpc_call(g, SVC_CONTENT "Write", &body, &resp, &code, err);
	pp_buf_free(&stat_msg);
	pp_buf_free(&commit);
	pp_buf_free(&body);
	pp_buf_free(&resp);
	if (r < 0 && code == PP_GRPC_ALREADY_EXISTS) {
		/* Already recorded in this namespace. */
		pp_error_clear(err);
		return n ? pp_ctd_content_label(g, digest, labels, n, err) : 0;
	}
	if (r < 0 && code == PP_GRPC_OUT_OF_RANGE) {
		/* The writer did not share the blob we placed: the content
		 * policy is "isolated", or the file vanished. */
		return pp_error_wrap(err,
				     "containerd did not take " SHORT_FMT " from its content store "
				     "without data (is content_sharing_policy \"isolated\"?)",
				     digest);
	}
	if (r < 0)
		return pp_error_wrap(err, "register " SHORT_FMT, digest);
	return 0;
}

/* ------------------------------------------------------------ snapshots */

int pp_ctd_content_delete(struct pp_grpc *g, const char *digest, struct pp_error *err)
{
	/* DeleteContentRequest {digest = 1} */
	struct pp_buf req = {0}, resp = {0};
	pp_pb_put_string(&req, 1, digest);
	int code = 0;
	int r = pp_grpc_unary(g, SVC_CONTENT "Delete", &req, &resp, &code, err);
	pp_buf_free(&req);
	pp_buf_free(&resp);
	if (r < 0 && code == PP_GRPC_NOT_FOUND) {
		pp_error_clear(err);
		r = 0;
	}
	return r;
}

int pp_ctd_snapshot_exists(struct pp_grpc *g, const char *snapshotter, const char *key,
			   struct pp_error *err)
{
	/* StatSnapshotRequest {snapshotter = 1, key = 2} */
	struct pp_buf req = {0}, resp = {0};
	pp_pb_put_string(&req, 1, snapshotter);
	pp_pb_put_string(&req, 2, key);
	int code = 0;
	int r = pp_grpc_unary(g, SVC_SNAPSHOTS "Stat", &req, &resp, &code, err);
	pp_buf_free(&req);
	pp_buf_free(&resp);
	if (r < 0 && code == PP_GRPC_NOT_FOUND) {
		pp_error_clear(err);
		return 0;
	}
	return r < 0 ? r : 1;
}

int pp_ctd_snapshot_list_active(struct pp_grpc *g, const char *snapshotter, char ***out,
				size_t *n_out, struct pp_error *err)
{
	/* ListSnapshotsRequest {snapshotter = 1} -> a stream of
	 * ListSnapshotsResponse {info = 1 (repeated Info {name = 1, kind = 3})} */
	struct pp_buf req = {0}, body = {0}, raw = {0};
	pp_pb_put_string(&req, 1, snapshotter);
	pp_grpc_frame(&body, req.data, req.len);
	int r = pp_grpc_call(g, SVC_SNAPSHOTS "List", &body, &raw, NULL, err);
	char **names = NULL;
	size_t n = 0, pos = 0;
	const uint8_t *msg;
	size_t len;
	while (r >= 0 && (r = pp_grpc_next_message(&raw, &pos, &msg, &len, err)) > 0) {
		struct pp_pb_reader rd = {0}, info = {0};
		struct pp_pb_field f, h;
		pp_pb_reader_init(&rd, msg, len);
		while (r >= 0 && (r = pp_pb_next(&rd, &f, err)) > 0) {
			if (f.num != 1 || (r = pp_pb_sub(&f, &info, err)) < 0)
				continue;
			char *name = NULL;
			uint64_t kind = 0;
			while (r >= 0 && (r = pp_pb_next(&info, &h, err)) > 0) {
				if (h.num == 1)
					r = pp_pb_string(&h, &name, err);
				else if (h.num == 3)
					r = pp_pb_varint(&h, &kind, err);
			}
			if (r >= 0 && name && kind == 2 /* ACTIVE */) {
				names = pp_xrealloc(names, (n + 1) * sizeof(*names));
				names[n++] = name;
				name = NULL;
			}
			free(name);
		}
	}
	pp_buf_free(&req);
	pp_buf_free(&body);
	pp_buf_free(&raw);
	if (r < 0) {
		pp_ctd_names_free(names, n);
		return r;
	}
	*out = names;
	*n_out = n;
	return 0;
}

void pp_ctd_names_free(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

int pp_ctd_snapshot_usage(struct pp_grpc *g, const char *snapshotter, const char *key,
			  int64_t *size, struct pp_error *err)
{
	/* UsageRequest {snapshotter = 1, key = 2} -> UsageResponse {size = 1, inodes = 2} */
	struct pp_buf req = {0}, resp = {0};
	pp_pb_put_string(&req, 1, snapshotter);
	pp_pb_put_string(&req, 2, key);
	int r = pp_grpc_unary(g, SVC_SNAPSHOTS "Usage", &req, &resp, NULL, err);
	*size = 0;
	struct pp_pb_reader rd = {0};
	struct pp_pb_field f;
	pp_pb_reader_init(&rd, resp.data, resp.len);
	while (r >= 0 && (r = pp_pb_next(&rd, &f, err)) > 0) {
		uint64_t v;
		if (f.num == 1 && (r = pp_pb_varint(&f, &v, err)) >= 0)
			*size = (int64_t)v;
	}
	pp_buf_free(&req);
	pp_buf_free(&resp);
	return r < 0 ? r : 0;
}

void pp_ctd_snapshot_remove(struct pp_grpc *g, const char *snapshotter, const char *key)
{
	/* RemoveSnapshotRequest {snapshotter = 1, key = 2} */
	struct pp_buf req = {0}, resp = {0};
	struct pp_error e = {0};
	pp_pb_put_string(&req, 1, snapshotter);
	pp_pb_put_string(&req, 2, key);
	if (pp_grpc_unary(g, SVC_SNAPSHOTS "Remove", &req, &resp, NULL, &e) < 0)
		pp_warn("remove snapshot %s: %s", key, e.msg);
	pp_buf_free(&req);
	pp_buf_free(&resp);
}

int pp_ctd_snapshot_prepare(struct pp_grpc *g, const char *snapshotter, const char *key,
			    const char *parent, const struct pp_ctd_label *labels, size_t n,
			    struct pp_buf *mounts, int *code, struct pp_error *err)
{
	/* PrepareSnapshotRequest {snapshotter = 1, key = 2, parent = 3, labels = 4} */
	struct pp_buf req = {0};
	pp_pb_put_string(&req, 1, snapshotter);
	pp_pb_put_string(&req, 2, key);
	pp_pb_put_string(&req, 3, parent);
	put_labels(&req, 4, labels, n);
	int r = pp_grpc_unary(g, SVC_SNAPSHOTS "Prepare", &req, mounts, code, err);
	pp_buf_free(&req);
	return r;
}

int pp_ctd_snapshot_commit(struct pp_grpc *g, const char *snapshotter, const char *name,
			   const char *key, const struct pp_ctd_label *labels, size_t n, int *code,
			   struct pp_error *err)
{
	/* CommitSnapshotRequest {snapshotter = 1, name = 2, key = 3, labels = 4} */
	struct pp_buf req = {0}, resp = {0};
	pp_pb_put_string(&req, 1, snapshotter);
	pp_pb_put_string(&req, 2, name);
	pp_pb_put_string(&req, 3, key);
	put_labels(&req, 4, labels, n);
	int r = pp_grpc_unary(g, SVC_SNAPSHOTS "Commit", &req, &resp, code, err);
	pp_buf_free(&req);
	pp_buf_free(&resp);
	return r;
}

/* ------------------------------------------------------------ diff */

/* Copies the raw Mount messages of a PrepareSnapshotResponse (field 1)
 * into an ApplyRequest as its mounts (field 2). */
static int mounts_for_apply(const struct pp_buf *prepared, struct pp_buf *out, struct pp_error *err)
{
	struct pp_pb_reader rd = {0};
	struct pp_pb_field f;
	int r;
	size_t n = 0;
	pp_pb_reader_init(&rd, prepared->data, prepared->len);
	while ((r = pp_pb_next(&rd, &f, err)) > 0) {
		if (f.num != 1)
			continue;
		if (f.wire != PP_PB_LEN)
			return pp_error_set(err, PP_EPROTO, "Prepare: mount is not a message");
		pp_pb_put_bytes(out, 2, f.data, f.len);
		n++;
	}
	if (r < 0)
		return r;
	if (n == 0)
		return pp_error_set(err, PP_EPROTO, "Prepare returned no mounts");
	return 0;
}

/* One Mount {type = 1, source = 2, target = 3, options = 4 (repeated)}. */
struct mount {
	char *type;
	char *source;
	char **options;
	size_t n_options;
};

static void mount_free(struct mount *m)
{
	free(m->type);
	free(m->source);
	for (size_t i = 0; i < m->n_options; i++)
		free(m->options[i]);
	free(m->options);
}

static int parse_mount(const struct pp_pb_field *f, struct mount *m, struct pp_error *err)
{
	struct pp_pb_reader rd = {0};
	struct pp_pb_field g;
	int r = pp_pb_sub(f, &rd, err);
	while (r >= 0 && (r = pp_pb_next(&rd, &g, err)) > 0) {
		if (g.num == 1)
			r = pp_pb_string(&g, &m->type, err);
		else if (g.num == 2)
			r = pp_pb_string(&g, &m->source, err);
		else if (g.num == 4) {
			m->options = pp_xrealloc(m->options, (m->n_options + 1) * sizeof(char *));
			m->options[m->n_options] = NULL;
			r = pp_pb_string(&g, &m->options[m->n_options++], err);
		}
	}
	return r;
}

/* The value of option "name=value", or NULL. */
static const char *option(const struct mount *m, const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; i < m->n_options; i++)
		if (strncmp(m->options[i], name, n) == 0 && m->options[i][n] == '=')
			return m->options[i] + n + 1;
	return NULL;
}

static bool has_flag(const struct mount *m, const char *name)
{
	for (size_t i = 0; i < m->n_options; i++)
		if (strcmp(m->options[i], name) == 0)
			return true;
	return false;
}

int pp_ctd_mounts_layout(const struct pp_buf *prepared, struct pp_ctd_layout *out,
			 struct pp_error *err)
{
	struct pp_pb_reader rd = {0};
	struct pp_pb_field f;
	struct mount m = {0};
	size_t n = 0;
	int r;
	*out = (struct pp_ctd_layout){0};
	pp_pb_reader_init(&rd, prepared->data, prepared->len);
	while ((r = pp_pb_next(&rd, &f, err)) > 0) {
		if (f.num != 1)
			continue;
		if (n++ > 0) {
			r = pp_error_set(err, PP_EUNSUPPORTED, "more than one mount");
			goto done;
		}
		if ((r = parse_mount(&f, &m, err)) < 0)
			goto done;
	}
	if (r < 0)
		goto done;
	const char *upper = NULL;
	if (m.type && strcmp(m.type, "bind") == 0 && m.source) {
		upper = m.source; /* the first layer: the snapshot's own directory */
	} else if (m.type && strcmp(m.type, "overlay") == 0 && (upper = option(&m, "upperdir"))) {
		const char *lower = option(&m, "lowerdir");
		size_t k = 0;
		out->lowers = pp_xcalloc(1, sizeof(char *));
		for (const char *p = lower; p && *p;) {
			const char *colon = strchr(p, ':');
			size_t len = colon ? (size_t)(colon - p) : strlen(p);
			out->lowers = pp_xrealloc(out->lowers, (k + 2) * sizeof(char *));
			out->lowers[k++] = pp_xstrndup(p, len);
			out->lowers[k] = NULL;
			p = colon ? colon + 1 : p + len;
		}
		out->userxattr = has_flag(&m, "userxattr");
	} else {
		r = pp_error_set(err, PP_EUNSUPPORTED, "a %s mount with no directory to write into",
				 m.type ? m.type : "typeless");
		goto done;
	}
	out->dir = pp_xstrdup(upper);
	r = 0;
done:
	mount_free(&m);
	if (r < 0)
		pp_ctd_layout_free(out);
	return r;
}

void pp_ctd_layout_free(struct pp_ctd_layout *l)
{
	for (size_t i = 0; l->lowers && l->lowers[i]; i++)
		free(l->lowers[i]);
	free(l->lowers);
	free(l->dir);
	*l = (struct pp_ctd_layout){0};
}

/* ApplyResponse.applied (1) .digest (2) */
static int applied_digest(const struct pp_buf *resp, char **out, struct pp_error *err)
{
	struct pp_pb_reader rd = {0}, sub = {0};
	struct pp_pb_field f, g;
	int r;
	pp_pb_reader_init(&rd, resp->data, resp->len);
	while ((r = pp_pb_next(&rd, &f, err)) > 0) {
		if (f.num != 1)
			continue;
		if ((r = pp_pb_sub(&f, &sub, err)) < 0)
			return r;
		while ((r = pp_pb_next(&sub, &g, err)) > 0)
			if (g.num == 2 && (r = pp_pb_string(&g, out, err)) < 0)
				return r;
		if (r < 0)
			return r;
	}
	return r;
}

int pp_ctd_diff_apply(struct pp_grpc *g, const char *media_type, const char *digest, int64_t size,
		      const struct pp_buf *mounts, char **diff_id, struct pp_error *err)
{
	/* ApplyRequest {diff = 1 (Descriptor), mounts = 2} */
	struct pp_buf req = {0}, resp = {0};
	*diff_id = NULL;
	put_descriptor(&req, 1, media_type, digest, size);
	int r = mounts_for_apply(mounts, &req, err);
	if (r == 0)
		r = pp_grpc_unary(g, SVC_DIFF "Apply", &req, &resp, NULL, err);
	if (r == 0)
		r = applied_digest(&resp, diff_id, err);
	pp_buf_free(&req);
	pp_buf_free(&resp);
	return r;
}

/* ------------------------------------------------------------ images */

int pp_ctd_image_put(struct pp_grpc *g, const char *name, const struct pp_ctd_label *labels,
		     size_t n, const char *media_type, const char *digest, int64_t size,
		     struct pp_error *err)
{
	/* Image {name = 1, labels = 2, target = 3}; CreateImageRequest
	 * {image = 1}; UpdateImageRequest {image = 1, update_mask = 2}. */
	struct pp_buf image = {0}, req = {0}, resp = {0};
	pp_pb_put_string(&image, 1, name);
	put_labels(&image, 2, labels, n);
	put_descriptor(&image, 3, media_type, digest, size);
	pp_pb_put_message(&req, 1, &image);
	int code = 0;
	int r = pp_grpc_unary(g, SVC_IMAGES "Create", &req, &resp, &code, err);
	if (r < 0 && code == PP_GRPC_ALREADY_EXISTS) {
		pp_error_clear(err);
		pp_buf_free(&req);
		pp_pb_put_message(&req, 1, &image);
		put_label_mask(&req, 2, labels, n, "target");
		r = pp_grpc_unary(g, SVC_IMAGES "Update", &req, &resp, NULL, err);
	}
	pp_buf_free(&image);
	pp_buf_free(&req);
	pp_buf_free(&resp);
	if (r < 0)
		return pp_error_wrap(err, "image record %s", name);
	return 0;
}

/* ------------------------------------------------------------ leases */

int pp_ctd_lease_create(struct pp_grpc *g, const char *id, const struct pp_ctd_label *labels,
			size_t n, struct pp_error *err)
{
	/* CreateRequest {id = 1, labels = 3} */
	struct pp_buf req = {0}, resp = {0};
	pp_pb_put_string(&req, 1, id);
	put_labels(&req, 3, labels, n);
	int r = pp_grpc_unary(g, SVC_LEASES "Create", &req, &resp, NULL, err);
	pp_buf_free(&req);
	pp_buf_free(&resp);
	return r;
}

int pp_ctd_lease_delete(struct pp_grpc *g, const char *id, struct pp_error *err)
{
	/* DeleteRequest {id = 1} */
	struct pp_buf req = {0}, resp = {0};
	pp_pb_put_string(&req, 1, id);
	int r = pp_grpc_unary(g, SVC_LEASES "Delete", &req, &resp, NULL, err);
	pp_buf_free(&req);
	pp_buf_free(&resp);
	return r;
}
