#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <isa-l/igzip_lib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <zstd.h>

#include "prepull/digest.h"
#include "prepull/error.h"
#include "prepull/unpack.h"
#include "prepull/util.h"

/* ------------------------------------------------------------ fixtures */

/* A tar built in memory with libarchive's pax writer. */
struct tarb {
	struct archive *a;
	unsigned char *buf;
	size_t cap, used;
};

static void tb_init(struct tarb *t)
{
	t->cap = 8 << 20;
	t->buf = pp_xmalloc(t->cap);
	t->used = 0;
	t->a = archive_write_new();
	archive_write_set_format_pax_restricted(t->a);
	archive_write_set_bytes_in_last_block(t->a, 1);
	assert_int_equal(archive_write_open_memory(t->a, t->buf, t->cap, &t->used), ARCHIVE_OK);
}

static void tb_add(struct tarb *t, mode_t type, const char *name, int mode, const char *data,
		   const char *link)
{
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_perm(e, (mode_t)mode);
	archive_entry_set_uid(e, 1234);
	archive_entry_set_gid(e, 5678);
	archive_entry_set_mtime(e, 1600000000, 0);
	if (type == 0) { /* hardlink */
		archive_entry_set_filetype(e, AE_IFREG);
		archive_entry_set_hardlink(e, link);
		archive_entry_set_size(e, 0);
	} else {
		archive_entry_set_filetype(e, type);
		if (type == AE_IFLNK)
			archive_entry_set_symlink(e, link);
		archive_entry_set_size(e, data ? (la_int64_t)strlen(data) : 0);
	}
	assert_int_equal(archive_write_header(t->a, e), ARCHIVE_OK);
	if (data && type == AE_IFREG)
		assert_int_equal(archive_write_data(t->a, data, strlen(data)),
				 (la_ssize_t)strlen(data));
	archive_entry_free(e);
}

static void tb_end(struct tarb *t)
{
	assert_int_equal(archive_write_close(t->a), ARCHIVE_OK);
	archive_write_free(t->a);
}

/* gzip of in, cut into `members` members at arbitrary points (not on tar
 * block boundaries). */
static unsigned char *gzip_members(const unsigned char *in, size_t len, int members, size_t *outlen)
{
	size_t cap = len * 2 + 1024 * (size_t)members;
	unsigned char *out = pp_xmalloc(cap);
	size_t used = 0, off = 0;
	for (int m = 0; m < members; m++) {
		size_t part = m == members - 1 ? len - off : len / (size_t)members + 37;
		struct isal_zstream s;
		isal_deflate_init(&s);
		s.gzip_flag = IGZIP_GZIP;
		s.level = 0;
		s.end_of_stream = 1;
		s.next_in = (uint8_t *)in + off;
		s.avail_in = (uint32_t)part;
		s.next_out = out + used;
		s.avail_out = (uint32_t)(cap - used);
		while (s.internal_state.state != ZSTATE_END)
			assert_int_equal(isal_deflate(&s), COMP_OK);
		used = cap - s.avail_out;
		off += part;
	}
	*outlen = used;
	return out;
}

static unsigned char *zstd_frames(const unsigned char *in, size_t len, int frames, size_t *outlen)
{
	size_t cap = ZSTD_compressBound(len) + 64 * (size_t)frames;
	unsigned char *out = pp_xmalloc(cap);
	size_t used = 0, off = 0;
	for (int f = 0; f < frames; f++) {
		size_t part = f == frames - 1 ? len - off : len / (size_t)frames + 11;
		size_t r = ZSTD_compress(out + used, cap - used, in + off, part, 3);
		assert_false(ZSTD_isError(r));
		used += r;
		off += part;
	}
	*outlen = used;
	return out;
}

/* gzip of in at ISA-L's level 1 (real compression: a run of zeros becomes a
 * few bytes), one member; with `end` false the stream is left open after a
 * sync flush (a layer whose rest has not arrived). */
static unsigned char *gzip_fast(const unsigned char *in, size_t len, bool end, size_t *outlen)
{
	size_t cap = len + len / 8 + 65536;
	unsigned char *out = pp_xmalloc(cap);
	unsigned char *lvl = pp_xmalloc(ISAL_DEF_LVL1_DEFAULT);
	struct isal_zstream s;
	isal_deflate_init(&s);
	s.gzip_flag = IGZIP_GZIP;
	s.level = 1;
	s.level_buf = lvl;
	s.level_buf_size = ISAL_DEF_LVL1_DEFAULT;
	s.end_of_stream = end;
	s.flush = end ? NO_FLUSH : SYNC_FLUSH;
	s.next_in = (uint8_t *)in;
	s.avail_in = (uint32_t)len;
	s.next_out = out;
	s.avail_out = (uint32_t)cap;
	do
		assert_int_equal(isal_deflate(&s), COMP_OK);
	while (end ? s.internal_state.state != ZSTATE_END : s.avail_in > 0);
	*outlen = cap - s.avail_out;
	free(lvl);
	return out;
}

/* A tar of one regular file `name` holding data[0, n) (or, with `size`
 * larger than n, only the start of a longer file: no end blocks). */
static unsigned char *tar_of(const char *name, const unsigned char *data, size_t n, size_t size,
			     size_t *len)
{
	size_t cap = n + 65536;
	unsigned char *buf = pp_xmalloc(cap);
	size_t used = 0;
	struct archive *a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	archive_write_set_bytes_in_last_block(a, 1);
	assert_int_equal(archive_write_open_memory(a, buf, cap, &used), ARCHIVE_OK);
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_size(e, (la_int64_t)size);
	assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
	archive_entry_free(e);
	size_t hdr = used;
	if (size > n) {
		archive_write_free(a); /* the header alone is in buf */
		memcpy(buf + hdr, data, n);
		*len = hdr + n;
		return buf;
	}
	assert_int_equal(archive_write_data(a, data, n), (la_ssize_t)n);
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
	*len = used;
	return buf;
}

static char tmpl[] = "/tmp/prepull-test-unpack.XXXXXX";
static char *top; /* per-test scratch: top/root is the target */

static int setup(void **state)
{
	strcpy(tmpl + strlen(tmpl) - 6, "XXXXXX");
	top = mkdtemp(tmpl);
	assert_non_null(top);
	char *r = pp_xasprintf("%s/root", top);
	assert_int_equal(mkdir(r, 0755), 0);
	free(r);
	return 0;
}

static int teardown(void **state)
{
	char *cmd = pp_xasprintf("rm -rf '%s'", top);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	return 0;
}

static char *at(const char *rel)
{
	return pp_xasprintf("%s/%s", top, rel);
}

/* Feeds data in random pieces of 1..max bytes; returns finish's result. */
static int apply_opts(const unsigned char *data, size_t len, struct pp_unpack_opts *o,
		      unsigned seed, size_t max, struct pp_error *err,
		      enum pp_unpack_refusal *refusal)
{
	char *root = at("root");
	o->root = root;
	struct pp_unpack *u = NULL;
	int rc = pp_unpack_new(&u, o, err);
	assert_int_equal(rc, 0);
	srand(seed);
	size_t off = 0;
	while (rc == 0 && off < len) {
		size_t n = 1 + (size_t)rand() % max;
		if (n > len - off)
			n = len - off;
		rc = pp_unpack_feed(u, data + off, n, err);
		off += n;
	}
	if (rc == 0)
		rc = pp_unpack_finish(u, err);
	if (refusal)
		*refusal = pp_unpack_refused(u);
	pp_unpack_free(u);
	free(root);
	return rc;
}

static int apply(const unsigned char *data, size_t len, enum pp_unpack_compression c,
		 const char *diff_id, struct pp_error *err)
{
	struct pp_unpack_opts o = {.compression = c, .diff_id = diff_id};
	return apply_opts(data, len, &o, 42, 3000, err, NULL);
}

static void assert_file(const char *rel, const char *content, int mode)
{
	char *p = at(rel);
	struct stat st;
	if (lstat(p, &st) < 0)
		fail_msg("%s: %s", p, strerror(errno));
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, mode);
	char buf[256] = {0};
	int fd = open(p, O_RDONLY);
	assert_true(fd >= 0);
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	assert_true(n >= 0);
	assert_string_equal(buf, content);
	free(p);
}

static bool exists(const char *rel)
{
	char *p = at(rel);
	struct stat st;
	bool r = lstat(p, &st) == 0;
	free(p);
	return r;
}

/* ------------------------------------------------------------ tests */

static void basic_layer(struct tarb *t)
{
	tb_init(t);
	tb_add(t, AE_IFDIR, "a/", 0750, NULL, NULL);
	tb_add(t, AE_IFREG, "a/f", 04755, "hello\n", NULL);
	tb_add(t, AE_IFLNK, "a/s", 0777, NULL, "f");
	tb_add(t, 0, "a/h", 0644, NULL, "a/f");
	tb_add(t, AE_IFIFO, "a/p", 0600, NULL, NULL);
	/* A long name: PAX path record. */
	tb_add(t, AE_IFREG,
	       "a/long-name-0123456789012345678901234567890123456789012345678901234567"
	       "890123456789012345678901234567890123456789",
	       0600, "long\n", NULL);
	/* A file before its directory's entry: the entry's mode wins. */
	tb_add(t, AE_IFREG, "late/x", 0644, "x\n", NULL);
	tb_add(t, AE_IFDIR, "late", 0700, NULL, NULL);
	tb_end(t);
}

static void check_basic(void)
{
	assert_file("root/a/f", "hello\n", 04755);
	char *f = at("root/a/f"), *h = at("root/a/h"), *s = at("root/a/s"), *a = at("root/a"),
	     *p = at("root/a/p"), *late = at("root/late");
	struct stat st, st2;
	assert_int_equal(lstat(f, &st), 0);
	assert_int_equal(st.st_uid, 1234);
	assert_int_equal(st.st_gid, 5678);
	assert_int_equal(st.st_mtim.tv_sec, 1600000000);
	assert_int_equal(st.st_nlink, 2);
	assert_int_equal(lstat(h, &st2), 0);
	assert_int_equal(st.st_ino, st2.st_ino);
	char target[64] = {0};
	assert_int_equal(readlink(s, target, sizeof(target)), 1);
	assert_string_equal(target, "f");
	assert_int_equal(lstat(a, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0750);
	assert_int_equal(st.st_mtim.tv_sec, 1600000000);
	assert_int_equal(lstat(p, &st), 0);
	assert_true(S_ISFIFO(st.st_mode));
	assert_int_equal(lstat(late, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_file("root/late/x", "x\n", 0644);
	assert_file("root/a/long-name-0123456789012345678901234567890123456789012345678901234567"
		    "890123456789012345678901234567890123456789",
		    "long\n", 0600);
	free(f), free(h), free(s), free(a), free(p), free(late);
}

static void test_plain(void **state)
{
	struct tarb t;
	basic_layer(&t);
	char d[PP_DIGEST_STR_LEN + 1];
	pp_sha256_digest(t.buf, t.used, d);
	struct pp_error err = {0};
	int rc = apply(t.buf, t.used, PP_UNPACK_TAR, d, &err);
	if (rc)
		fail_msg("%s", err.msg);
	check_basic();
	/* Padding after the end-of-archive blocks (tar's 10 KiB records) is
	 * part of the diffID: libarchive stops reading before it. */
	memset(t.buf + t.used, 0, 9216);
	pp_sha256_digest(t.buf, t.used + 9216, d);
	rc = apply(t.buf, t.used + 9216, PP_UNPACK_TAR, d, &err);
	if (rc)
		fail_msg("padded: %s", err.msg);
	free(t.buf);
}

static void test_gzip_single_and_multi(void **state)
{
	struct tarb t;
	basic_layer(&t);
	char d[PP_DIGEST_STR_LEN + 1];
	pp_sha256_digest(t.buf, t.used, d);
	for (int members = 1; members <= 3; members += 2) {
		size_t gl;
		unsigned char *gz = gzip_members(t.buf, t.used, members, &gl);
		struct pp_error err = {0};
		for (unsigned seed = 1; seed <= 3; seed++) {
			struct pp_unpack_opts o = {.compression = PP_UNPACK_GZIP, .diff_id = d};
			/* Tiny pieces cut the gzip headers and trailers too. */
			int rc = apply_opts(gz, gl, &o, seed, seed == 1 ? 3 : 5000, &err, NULL);
			if (rc)
				fail_msg("%d members, seed %u: %s", members, seed, err.msg);
			check_basic();
		}
		free(gz);
	}
	free(t.buf);
}

static void test_zstd_multi_frame(void **state)
{
	struct tarb t;
	basic_layer(&t);
	char d[PP_DIGEST_STR_LEN + 1];
	pp_sha256_digest(t.buf, t.used, d);
	size_t zl;
	unsigned char *z = zstd_frames(t.buf, t.used, 3, &zl);
	struct pp_error err = {0};
	struct pp_unpack_opts o = {.compression = PP_UNPACK_ZSTD, .diff_id = d};
	int rc = apply_opts(z, zl, &o, 7, 2, &err, NULL);
	if (rc)
		fail_msg("%s", err.msg);
	check_basic();
	free(z);
	free(t.buf);
}

static void test_diff_id_mismatch(void **state)
{
	struct tarb t;
	basic_layer(&t);
	struct pp_error err = {0};
	size_t gl;
	unsigned char *gz = gzip_members(t.buf, t.used, 2, &gl);
	const char *wrong =
		"sha256:0000000000000000000000000000000000000000000000000000000000000000";
	assert_int_equal(apply(gz, gl, PP_UNPACK_GZIP, wrong, &err), PP_EDIGEST);
	assert_non_null(strstr(err.msg, "sha256:000000000000"));
	free(gz);
	free(t.buf);
}

static void test_bad_streams(void **state)
{
	struct tarb t;
	basic_layer(&t);
	char d[PP_DIGEST_STR_LEN + 1];
	pp_sha256_digest(t.buf, t.used, d);
	struct pp_error err = {0};
	size_t gl;
	unsigned char *gz = gzip_members(t.buf, t.used, 1, &gl);

	/* Truncated: the last member never ends. */
	assert_int_equal(apply(gz, gl - 5, PP_UNPACK_GZIP, d, &err), PP_EPROTO);
	assert_non_null(strstr(err.msg, "truncated"));
	/* Trailing bytes that are not a gzip member. */
	unsigned char *junk = pp_xmalloc(gl + 4096);
	memcpy(junk, gz, gl);
	memset(junk + gl, 'j', 16);
	assert_int_equal(apply(junk, gl + 16, PP_UNPACK_GZIP, d, &err), PP_EPROTO);
	/* A flipped byte in the middle: the CRC (or the deflate stream) says so. */
	memcpy(junk, gz, gl);
	junk[gl / 2] ^= 0x55;
	assert_true(apply(junk, gl, PP_UNPACK_GZIP, d, &err) < 0);
	/* Nothing at all. */
	assert_int_equal(apply(gz, 0, PP_UNPACK_GZIP, d, &err), PP_EPROTO);
	assert_non_null(strstr(err.msg, "empty"));
	assert_int_equal(apply(gz, 0, PP_UNPACK_ZSTD, d, &err), PP_EPROTO);
	/* Not a tar. */
	memset(junk, 'x', 2048);
	pp_sha256_digest(junk, 2048, d);
	assert_true(apply(junk, 2048, PP_UNPACK_TAR, d, &err) < 0);
	free(junk);
	free(gz);
	free(t.buf);
}

static void test_zstd_window_refused(void **state)
{
	/* A frame header asking for a 256 MiB window (exponent 18 -> 2^28),
	 * then an empty last raw block. */
	static const unsigned char frame[] = {0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x90, 0x01, 0x00, 0x00};
	struct pp_error err = {0};
	enum pp_unpack_refusal why = PP_UNPACK_REFUSED_NONE;
	struct pp_unpack_opts o = {
		.compression = PP_UNPACK_ZSTD,
		.diff_id =
			"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"};
	assert_int_equal(apply_opts(frame, sizeof(frame), &o, 1, 4, &err, &why), PP_EUNSUPPORTED);
	assert_int_equal(why, PP_UNPACK_REFUSED_ZSTD_WINDOW);
	assert_non_null(strstr(err.msg, "128 MiB"));
}

/* Nothing outside the root may be created, changed or followed. */
static void test_hostile_names(void **state)
{
	char *victim = at("victim");
	FILE *f = fopen(victim, "w");
	assert_non_null(f);
	fputs("precious\n", f);
	fclose(f);

	struct tarb t;
	tb_init(&t);
	tb_add(&t, AE_IFREG, "../dotdot", 0644, "1\n", NULL);
	tb_add(&t, AE_IFREG, "/abs", 0644, "2\n", NULL);
	tb_add(&t, AE_IFREG, "a/../../../up", 0644, "3\n", NULL);
	/* A symlink to the host's root, then a file "through" it. */
	tb_add(&t, AE_IFLNK, "toroot", 0777, NULL, "/");
	tb_add(&t, AE_IFREG, "toroot/through-abs", 0644, "4\n", NULL);
	/* A symlink out of the root, then a file and a dir through it. */
	tb_add(&t, AE_IFLNK, "out", 0777, NULL, "../..");
	tb_add(&t, AE_IFREG, "out/through-rel", 0644, "5\n", NULL);
	tb_add(&t, AE_IFDIR, "out/dir", 0755, NULL, NULL);
	/* A symlink to the victim, then a regular file with the same name:
	 * it must replace the link, not write through it. */
	tb_add(&t, AE_IFLNK, "tovictim", 0777, NULL, "../victim");
	tb_add(&t, AE_IFREG, "tovictim", 0644, "6\n", NULL);
	/* A hardlink to a symlink pointing out: links the symlink itself. */
	tb_add(&t, AE_IFLNK, "sl", 0777, NULL, "../victim");
	tb_add(&t, 0, "hl-to-sl", 0644, NULL, "sl");
	tb_end(&t);
	char d[PP_DIGEST_STR_LEN + 1];
	pp_sha256_digest(t.buf, t.used, d);
	struct pp_error err = {0};
	int rc = apply(t.buf, t.used, PP_UNPACK_TAR, d, &err);
	if (rc)
		fail_msg("%s", err.msg);
	assert_file("root/dotdot", "1\n", 0644);
	assert_file("root/abs", "2\n", 0644);
	assert_file("root/up", "3\n", 0644);
	assert_file("root/through-abs", "4\n", 0644);
	assert_file("root/through-rel", "5\n", 0644);
	assert_true(exists("root/dir"));
	assert_file("root/tovictim", "6\n", 0644);
	assert_file("victim", "precious\n", 0644);
	struct stat st;
	assert_int_equal(lstat(victim, &st), 0);
	assert_int_equal(st.st_nlink, 1);
	char *hl = at("root/hl-to-sl");
	assert_int_equal(lstat(hl, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	free(hl);
	/* The scratch dir holds exactly what it held. */
	DIR *dir = opendir(top);
	struct dirent *de;
	int n = 0;
	while ((de = readdir(dir))) {
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	}
	closedir(dir);
	assert_int_equal(n, 2); /* root, victim */
	assert_false(exists("dotdot") || exists("abs") || exists("up") || exists("dir"));
	assert_int_equal(lstat("/through-abs", &st), -1);
	free(t.buf);

	/* A hardlink whose target is outside: confined to the root, where no
	 * such file exists, so the layer fails; the victim is untouched. */
	tb_init(&t);
	tb_add(&t, 0, "hl", 0644, NULL, "../victim");
	tb_end(&t);
	pp_sha256_digest(t.buf, t.used, d);
	assert_true(apply(t.buf, t.used, PP_UNPACK_TAR, d, &err) < 0);
	assert_non_null(strstr(err.msg, "hardlink"));
	assert_int_equal(lstat(victim, &st), 0);
	assert_int_equal(st.st_nlink, 1);
	assert_false(exists("root/hl"));
	free(t.buf);
	free(victim);
}

static void test_whiteouts_and_lowers(void **state)
{
	/* A lower layer: p (0710, 11:22) holding a file; gone, a file. */
	char *lower = at("lower"), *p = at("lower/p"), *gone = at("lower/gone");
	assert_int_equal(mkdir(lower, 0755), 0);
	assert_int_equal(mkdir(p, 0700), 0);
	assert_int_equal(chmod(p, 0710), 0);
	assert_int_equal(chown(p, 11, 22), 0);
	assert_int_equal(lsetxattr(p, "user.kept", "v", 1, 0), 0);
	FILE *f = fopen(gone, "w");
	assert_non_null(f);
	fclose(f);

	struct tarb t;
	tb_init(&t);
	tb_add(&t, AE_IFREG, ".wh.gone", 0644, NULL, NULL);
	tb_add(&t, AE_IFDIR, "opq", 0755, NULL, NULL);
	tb_add(&t, AE_IFREG, "opq/.wh..wh..opq", 0644, NULL, NULL);
	tb_add(&t, AE_IFREG, "p/q/f", 0644, "pq\n", NULL);
	tb_end(&t);
	char d[PP_DIGEST_STR_LEN + 1];
	pp_sha256_digest(t.buf, t.used, d);
	const char *lowers[] = {lower, NULL};
	for (int userx = 0; userx < 2; userx++) {
		struct pp_error err = {0};
		struct pp_unpack_opts o = {.compression = PP_UNPACK_TAR,
					   .diff_id = d,
					   .lowers = lowers,
					   .whiteout = userx ? PP_WHITEOUT_OVERLAY_USERXATTR
							     : PP_WHITEOUT_OVERLAY};
		char *cmd = pp_xasprintf("rm -rf '%s/root' && mkdir '%s/root'", top, top);
		assert_int_equal(system(cmd), 0);
		free(cmd);
		int rc = apply_opts(t.buf, t.used, &o, 3, 100, &err, NULL);
		if (rc)
			fail_msg("%s", err.msg);
		char *w = at("root/gone"), *o1 = at("root/opq"), *rp = at("root/p"),
		     *rq = at("root/p/q");
		struct stat st;
		assert_int_equal(lstat(w, &st), 0);
		assert_true(S_ISCHR(st.st_mode));
		assert_int_equal(st.st_rdev, makedev(0, 0));
		assert_int_equal(st.st_uid, 1234); /* as the whiteout entry, as containerd */
		assert_false(exists("root/.wh.gone"));
		assert_false(exists("root/opq/.wh..wh..opq"));
		char v[8] = {0};
		assert_int_equal(lgetxattr(o1,
					   userx ? "user.overlay.opaque" : "trusted.overlay.opaque",
					   v, sizeof(v)),
				 1);
		assert_string_equal(v, "y");
		/* The missing parent took the lower's attributes; below it, the
		 * defaults. */
		assert_int_equal(lstat(rp, &st), 0);
		assert_int_equal(st.st_mode & 07777, 0710);
		assert_int_equal(st.st_uid, 11);
		assert_int_equal(st.st_gid, 22);
		memset(v, 0, sizeof(v));
		assert_int_equal(lgetxattr(rp, "user.kept", v, sizeof(v)), 1);
		assert_int_equal(lstat(rq, &st), 0);
		assert_int_equal(st.st_mode & 07777, 0755);
		assert_int_equal(st.st_uid, 0);
		assert_file("root/p/q/f", "pq\n", 0644);
		free(w), free(o1), free(rp), free(rq);
	}
	free(t.buf);
	free(lower), free(p), free(gone);
}

/* A layer many times the size of both rings: noise (the input ring wraps
 * many times, slots fill from many inputs) then zeros (one input fills
 * many slots), in each compression, fed in random pieces. */
static void test_big_layer(void **state)
{
	size_t noise = 6 << 20, zeros = 24 << 20, n = noise + zeros;
	unsigned char *data = pp_xcalloc(1, n);
	uint32_t x = 2463534242u;
	for (size_t i = 0; i < noise; i++) {
		x ^= x << 13, x ^= x >> 17, x ^= x << 5;
		data[i] = (unsigned char)x;
	}
	char want[PP_DIGEST_STR_LEN + 1], d[PP_DIGEST_STR_LEN + 1];
	pp_sha256_digest(data, n, want);
	size_t tl;
	unsigned char *tar = tar_of("big", data, n, n, &tl);
	pp_sha256_digest(tar, tl, d);
	size_t gl, zl;
	unsigned char *gz = gzip_fast(tar, tl, true, &gl);
	unsigned char *z = zstd_frames(tar, tl, 2, &zl);
	const struct {
		enum pp_unpack_compression c;
		const unsigned char *buf;
		size_t len;
	} cases[] = {{PP_UNPACK_TAR, tar, tl}, {PP_UNPACK_GZIP, gz, gl}, {PP_UNPACK_ZSTD, z, zl}};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct pp_error err = {0};
		struct pp_unpack_opts o = {.compression = cases[i].c, .diff_id = d};
		int rc = apply_opts(cases[i].buf, cases[i].len, &o, (unsigned)i + 1, 700000, &err,
				    NULL);
		if (rc)
			fail_msg("compression %d: %s", (int)cases[i].c, err.msg);
		char *p = at("root/big");
		int fd = open(p, O_RDONLY);
		assert_true(fd >= 0);
		struct pp_sha256 *h = pp_sha256_new();
		static unsigned char buf[1 << 16];
		size_t total = 0;
		ssize_t r;
		while ((r = read(fd, buf, sizeof(buf))) > 0) {
			pp_sha256_update(h, buf, (size_t)r);
			total += (size_t)r;
		}
		close(fd);
		char got[PP_DIGEST_STR_LEN + 1];
		pp_sha256_final(h, got);
		pp_sha256_free(h);
		assert_int_equal(total, n);
		assert_string_equal(got, want);
		unlink(p);
		free(p);
	}
	free(gz), free(z), free(tar), free(data);
}

/* The tar is bad from its first block while the inflater still has work:
 * the applier's failure stops it, whether it waits for a free slot (all the
 * input is there) or for input (the rest never comes). */
static void test_applier_fails_first(void **state)
{
	size_t n = 32 << 20;
	unsigned char *junk = pp_xmalloc(n);
	memset(junk, 'x', n);
	char d[PP_DIGEST_STR_LEN + 1];
	pp_sha256_digest(junk, n, d);
	size_t gl;
	unsigned char *gz = gzip_fast(junk, n, true, &gl);
	struct pp_error err = {0};
	assert_int_equal(apply(gz, gl, PP_UNPACK_GZIP, d, &err), PP_EPROTO);

	/* Half of it, and no finish() until the applier has given up. */
	char *root = at("root");
	struct pp_unpack_opts o = {.root = root, .compression = PP_UNPACK_GZIP, .diff_id = d};
	struct pp_unpack *u;
	assert_int_equal(pp_unpack_new(&u, &o, &err), 0);
	int rc = pp_unpack_feed(u, gz, gl / 2, &err);
	double t0 = pp_now();
	while (rc == 0 && pp_unpack_writable(u) > 0 && pp_now() - t0 < 10)
		usleep(1000);
	assert_int_equal(pp_unpack_writable(u), 0);
	assert_int_equal(pp_unpack_finish(u, &err), PP_EPROTO);
	assert_non_null(strstr(err.msg, "tar"));
	pp_unpack_free(u);
	free(root), free(gz), free(junk);
}

/* The inflater fails (a corrupt gzip member) after it has passed on many
 * good slots: the applier applies them, then reports the inflater's error,
 * not a tar one. */
static void test_inflater_fails_late(void **state)
{
	size_t n = 8 << 20;
	unsigned char *data = pp_xmalloc(n);
	for (size_t i = 0; i < n; i++)
		data[i] = (unsigned char)(i * 7 + i / 4096);
	size_t tl;
	unsigned char *tar = tar_of("f", data, n, n, &tl);
	char d[PP_DIGEST_STR_LEN + 1];
	pp_sha256_digest(tar, tl, d);
	size_t gl;
	unsigned char *gz = gzip_fast(tar, tl, true, &gl);
	gz[gl - 6] ^= 0xff; /* the CRC */
	struct pp_error err = {0};
	assert_int_equal(apply(gz, gl, PP_UNPACK_GZIP, d, &err), PP_EPROTO);
	assert_non_null(strstr(err.msg, "gzip stream is corrupt"));
	free(gz), free(tar), free(data);
}

static void test_free_mid_stream(void **state)
{
	/* A big layer fed halfway, then freed: returns, nothing hangs. */
	size_t n = 8 << 20;
	unsigned char *big = pp_xcalloc(1, n);
	char *root = at("root");
	struct pp_unpack_opts o = {
		.root = root,
		.compression = PP_UNPACK_TAR,
		.diff_id =
			"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"};
	struct pp_unpack *u;
	struct pp_error err = {0};
	assert_int_equal(pp_unpack_new(&u, &o, &err), 0);
	/* A header for a 1 GiB file, then some of its data. */
	struct archive *a = archive_write_new();
	size_t used = 0;
	archive_write_set_format_pax_restricted(a);
	archive_write_open_memory(a, big, n, &used);
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, "huge");
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_size(e, 1 << 30);
	assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
	archive_entry_free(e);
	size_t hdr = used;
	archive_write_free(a);
	assert_int_equal(pp_unpack_feed(u, big, hdr + (4 << 20), &err), 0);
	double t0 = pp_now();
	pp_unpack_free(u);
	assert_true(pp_now() - t0 < 2.0);
	free(root);
	free(big);

	/* The same through gzip, with the inflater far ahead: 64 MiB of a
	 * 1 GiB file's zeros in a few KiB fill every slot at once. */
	size_t zn = 64 << 20, tl, gl;
	unsigned char *zeros = pp_xcalloc(1, zn);
	unsigned char *tar = tar_of("huge", zeros, zn, (size_t)1 << 30, &tl);
	unsigned char *gz = gzip_fast(tar, tl, false, &gl);
	root = at("root");
	o.root = root;
	o.compression = PP_UNPACK_GZIP;
	assert_int_equal(pp_unpack_new(&u, &o, &err), 0);
	assert_int_equal(pp_unpack_feed(u, gz, gl, &err), 0);
	usleep(20000);
	t0 = pp_now();
	pp_unpack_free(u);
	assert_true(pp_now() - t0 < 2.0);
	free(root), free(gz), free(tar), free(zeros);
}

static void test_writable_and_misuse(void **state)
{
	struct tarb t;
	basic_layer(&t);
	char d[PP_DIGEST_STR_LEN + 1];
	pp_sha256_digest(t.buf, t.used, d);
	char *root = at("root");
	struct pp_unpack_opts o = {.root = root, .compression = PP_UNPACK_TAR, .diff_id = d};
	struct pp_unpack *u;
	struct pp_error err = {0};
	assert_int_equal(pp_unpack_new(&u, &o, &err), 0);
	size_t w = pp_unpack_writable(u);
	assert_true(w >= t.used); /* an empty ring takes a small layer at once */
	assert_int_equal(pp_unpack_feed(u, t.buf, t.used, &err), 0);
	assert_int_equal(pp_unpack_finish(u, &err), 0);
	assert_int_equal(pp_unpack_writable(u), 0);
	assert_int_equal(pp_unpack_feed(u, t.buf, 1, &err), PP_EUSAGE);
	assert_int_equal(pp_unpack_finish(u, &err), 0); /* the result stays */
	struct pp_unpack_stats st;
	pp_unpack_stats(u, &st);
	assert_int_equal(st.compressed, t.used);
	assert_int_equal(st.uncompressed, t.used);
	assert_int_equal(st.entries, 8);
	assert_string_equal(st.diff_id, d);
	pp_unpack_free(u);
	free(root);
	free(t.buf);
}

static void test_media_types(void **state)
{
	enum pp_unpack_compression c;
	struct pp_error err = {0};
	assert_int_equal(
		pp_unpack_compression_of("application/vnd.oci.image.layer.v1.tar+gzip", &c, &err),
		0);
	assert_int_equal(c, PP_UNPACK_GZIP);
	assert_int_equal(
		pp_unpack_compression_of("application/vnd.oci.image.layer.v1.tar+zstd", &c, &err),
		0);
	assert_int_equal(c, PP_UNPACK_ZSTD);
	assert_int_equal(
		pp_unpack_compression_of("application/vnd.oci.image.layer.v1.tar", &c, &err), 0);
	assert_int_equal(c, PP_UNPACK_TAR);
	assert_int_equal(pp_unpack_compression_of(
				 "application/vnd.docker.image.rootfs.diff.tar.gzip", &c, &err),
			 0);
	assert_int_equal(c, PP_UNPACK_GZIP);
	assert_int_equal(
		pp_unpack_compression_of("application/vnd.oci.image.layer.v1.tar+bzip2", &c, &err),
		PP_EUNSUPPORTED);
	assert_int_equal(pp_unpack_compression_of(NULL, &c, &err), PP_EUNSUPPORTED);
}

static void test_bad_options(void **state)
{
	struct pp_unpack *u = (void *)1;
	struct pp_error err = {0};
	struct pp_unpack_opts o = {.root = "/nonexistent/prepull", .diff_id = "sha256:00"};
	assert_int_equal(pp_unpack_new(&u, &o, &err), PP_EPROTO);
	assert_null(u);
	o.diff_id = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
	assert_int_equal(pp_unpack_new(&u, &o, &err), PP_ENOTFOUND);
	assert_null(u);
	o.root = NULL;
	assert_int_equal(pp_unpack_new(&u, &o, &err), PP_EUSAGE);
	pp_unpack_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_plain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gzip_single_and_multi, setup, teardown),
		cmocka_unit_test_setup_teardown(test_zstd_multi_frame, setup, teardown),
		cmocka_unit_test_setup_teardown(test_diff_id_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_streams, setup, teardown),
		cmocka_unit_test_setup_teardown(test_zstd_window_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostile_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_whiteouts_and_lowers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_big_layer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_applier_fails_first, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inflater_fails_late, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_mid_stream, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writable_and_misuse, setup, teardown),
		cmocka_unit_test(test_media_types),
		cmocka_unit_test(test_bad_options),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
