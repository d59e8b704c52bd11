/* A parser for the subset of TOML that containerd's hosts.toml files use
 * (Debian 12 packages no C TOML library).  It reads the whole text with a
 * cursor, so arrays may span lines, and fills a struct pp_hosts_file as it
 * goes; every error names the file and the line.  What it does not know
 * (keys, tables, numbers, dates) it skips, as containerd ignores keys it
 * does not use; what it cannot read (inline tables, multi-line strings) is
 * an error rather than a silent misreading. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prepull/error.h"
#include "prepull/hosts.h"
#include "prepull/log.h"
#include "prepull/util.h"

#define MAX_DEPTH 16 /* nested arrays: hosts.toml needs two */

enum tv_kind { TV_STRING, TV_BOOL, TV_ARRAY, TV_OTHER };

/* A parsed value, kept only until it is applied to the file. */
struct tval {
	enum tv_kind kind;
	char *s; /* TV_STRING */
	bool b;  /* TV_BOOL */
	struct tval *items;
	size_t n;
};

enum table_kind { T_TOP, T_HOST, T_HEADER, T_IGNORED };

struct parser {
	const char *name;
	const char *p, *end;
	int line;
	struct pp_error *err;
	struct pp_hosts_file *file;
	enum table_kind table;
	struct pp_hosts_entry *entry; /* the table's entry (T_TOP, T_HOST, T_HEADER) */
};

static int fail(struct parser *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct parser *ps, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return pp_error_set(ps->err, PP_EUSAGE, "%s:%d: %s", ps->name, ps->line, msg);
}

static void tval_free(struct tval *v)
{
	free(v->s);
	for (size_t i = 0; i < v->n; i++)
		tval_free(&v->items[i]);
	free(v->items);
	memset(v, 0, sizeof(*v));
}

static bool at_end(const struct parser *ps)
{
	return ps->p >= ps->end;
}

static void skip_ws(struct parser *ps)
{
	while (!at_end(ps) && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\r'))
		ps->p++;
}

/* Spaces, then a comment if there is one; stops at the newline. */
static void skip_ws_comment(struct parser *ps)
{
	skip_ws(ps);
	if (!at_end(ps) && *ps->p == '#')
		while (!at_end(ps) && *ps->p != '\n')
			ps->p++;
}

/* Inside an array: spaces, comments and newlines. */
static void skip_blank(struct parser *ps)
{
	for (;;) {
		skip_ws_comment(ps);
		if (at_end(ps) || *ps->p != '\n')
			return;
		ps->p++;
		ps->line++;
	}
}

/* The rest of the line must be empty (a comment at most). */
static int expect_eol(struct parser *ps, const char *after)
{
	skip_ws_comment(ps);
	if (at_end(ps))
		return 0;
	if (*ps->p != '\n')
		return fail(ps, "unexpected '%c' after %s", *ps->p >= 0x20 ? *ps->p : '?', after);
	ps->p++;
	ps->line++;
	return 0;
}

static bool is_bare(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

static void put_utf8(struct pp_buf *b, unsigned long cp)
{
	char u[4];
	size_t n;
	if (cp < 0x80) {
		u[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (char)(0xc0 | (cp >> 6));
		u[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (char)(0xe0 | (cp >> 12));
		u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		u[0] = (char)(0xf0 | (cp >> 18));
		u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	pp_buf_append(b, u, n);
}

/* A \uXXXX or \UXXXXXXXX escape, the cursor after the letter. */
static int unicode_escape(struct parser *ps, int digits, struct pp_buf *b)
{
	unsigned long cp = 0;
	for (int i = 0; i < digits; i++) {
		int h = at_end(ps) ? -1 : pp_hex_value(*ps->p);
		if (h < 0)
			return fail(ps, "\\%c needs %d hex digits", digits == 4 ? 'u' : 'U',
				    digits);
		cp = cp * 16 + (unsigned long)h;
		ps->p++;
	}
	/* A NUL would cut the C string short; surrogates are not characters. */
	if (cp == 0 || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return fail(ps, "\\%c escape names no usable character", digits == 4 ? 'u' : 'U');
	put_utf8(b, cp);
	return 0;
}

/* A basic ("...") or literal ('...') string on one line. */
static int parse_string(struct parser *ps, char **out)
{
	char quote = *ps->p;
	if (ps->end - ps->p >= 3 && ps->p[1] == quote && ps->p[2] == quote)
		return fail(ps, "multi-line strings are not supported");
	ps->p++;
	struct pp_buf b = {0};
	int r = 0;
	for (;;) {
		if (at_end(ps) || *ps->p == '\n') {
			r = fail(ps, "unterminated string");
			break;
		}
		unsigned char c = (unsigned char)*ps->p;
		if (c == (unsigned char)quote) {
			ps->p++;
			break;
		}
		if ((c < 0x20 && c != '\t') || c == 0x7f) {
			r = fail(ps, "control character in a string");
			break;
		}
		if (c != '\\' || quote == '\'') {
			pp_buf_append(&b, ps->p++, 1);
			continue;
		}
		ps->p++;
		char e = at_end(ps) ? '\0' : *ps->p++;
		const char *plain = NULL;
		switch (e) {
		case 'b':
			plain = "\b";
			break;
		case 't':
			plain = "\t";
			break;
		case 'n':
			plain = "\n";
			break;
		case 'f':
			plain = "\f";
			break;
		case 'r':
			plain = "\r";
			break;
		case 'e':
			plain = "\x1b";
			break;
		case '"':
			plain = "\"";
			break;
		case '\\':
			plain = "\\";
			break;
		case 'u':
			r = unicode_escape(ps, 4, &b);
			break;
		case 'U':
			r = unicode_escape(ps, 8, &b);
			break;
		default:
			r = fail(ps, "unknown escape '\\%c' in a string", e >= 0x20 ? e : '?');
		}
		if (r < 0)
			break;
		if (plain)
			pp_buf_append(&b, plain, 1);
	}
	if (r < 0) {
		pp_buf_free(&b);
		return r;
	}
	pp_buf_append(&b, "", 1);
	*out = (char *)b.data;
	return 0;
}

/* A dotted key: bare or quoted parts joined by dots.  *out is a
 * NULL-terminated array the caller frees with free_parts. */
static void free_parts(char **parts)
{
	for (size_t i = 0; parts && parts[i]; i++)
		free(parts[i]);
	free(parts);
}

static int parse_key(struct parser *ps, char ***out, size_t *n_out)
{
	char **parts = NULL;
	size_t n = 0;
	for (;;) {
		skip_ws(ps);
		char *part = NULL;
		if (!at_end(ps) && (*ps->p == '"' || *ps->p == '\'')) {
			int r = parse_string(ps, &part);
			if (r < 0) {
				free_parts(parts);
				return r;
			}
		} else {
			const char *s = ps->p;
			while (!at_end(ps) && is_bare(*ps->p))
				ps->p++;
			if (ps->p == s) {
				free_parts(parts);
				return fail(ps, "expected a key");
			}
			part = pp_xstrndup(s, (size_t)(ps->p - s));
		}
		parts = pp_xrealloc(parts, (n + 2) * sizeof(*parts));
		parts[n++] = part;
		parts[n] = NULL;
		skip_ws(ps);
		if (at_end(ps) || *ps->p != '.')
			break;
		ps->p++;
	}
	*out = parts;
	*n_out = n;
	return 0;
}

static int parse_value(struct parser *ps, struct tval *out, int depth);

static int parse_array(struct parser *ps, struct tval *out, int depth)
{
	if (depth >= MAX_DEPTH)
		return fail(ps, "arrays nested more than %d deep", MAX_DEPTH);
	ps->p++; /* '[' */
	out->kind = TV_ARRAY;
	for (;;) {
		skip_blank(ps);
		if (!at_end(ps) && *ps->p == ']') {
			ps->p++;
			return 0;
		}
		struct tval item = {0};
		int r = parse_value(ps, &item, depth + 1);
		if (r < 0) {
			tval_free(&item); /* an array may have failed half-way */
			return r;
		}
		out->items = pp_xrealloc(out->items, (out->n + 1) * sizeof(*out->items));
		out->items[out->n++] = item;
		skip_blank(ps);
		if (!at_end(ps) && *ps->p == ',') {
			ps->p++;
			continue;
		}
		if (!at_end(ps) && *ps->p == ']') {
			ps->p++;
			return 0;
		}
		return fail(ps, "expected ',' or ']' in an array");
	}
}

static int parse_value(struct parser *ps, struct tval *out, int depth)
{
	memset(out, 0, sizeof(*out));
	if (at_end(ps) || *ps->p == '\n' || *ps->p == '#')
		return fail(ps, "expected a value");
	char c = *ps->p;
	if (c == '"' || c == '\'') {
		out->kind = TV_STRING;
		return parse_string(ps, &out->s);
	}
	if (c == '[')
		return parse_array(ps, out, depth);
	if (c == '{')
		return fail(ps, "inline tables are not supported");
	/* Booleans, and numbers or dates, which no key here uses: a word. */
	const char *s = ps->p;
	while (!at_end(ps) && (is_bare(*ps->p) || *ps->p == '+' || *ps->p == '.' || *ps->p == ':'))
		ps->p++;
	size_t len = (size_t)(ps->p - s);
	if (len == 0)
		return fail(ps, "expected a value, got '%c'", c >= 0x20 ? c : '?');
	if (len == 4 && memcmp(s, "true", 4) == 0) {
		out->kind = TV_BOOL;
		out->b = true;
	} else if (len == 5 && memcmp(s, "false", 5) == 0) {
		out->kind = TV_BOOL;
	} else {
		out->kind = TV_OTHER;
	}
	return 0;
}

/* ---- applying keys to the file ---- */

static bool string_list(const struct tval *v, char ***out, size_t *n)
{
	if (v->kind == TV_STRING) {
		*out = pp_xrealloc(*out, (*n + 1) * sizeof(**out));
		(*out)[(*n)++] = pp_xstrdup(v->s);
		return true;
	}
	if (v->kind != TV_ARRAY)
		return false;
	for (size_t i = 0; i < v->n; i++)
		if (v->items[i].kind != TV_STRING)
			return false;
	for (size_t i = 0; i < v->n; i++)
		string_list(&v->items[i], out, n);
	return true;
}

static int set_capabilities(struct parser *ps, struct pp_hosts_entry *h, const struct tval *v)
{
	if (v->kind != TV_ARRAY)
		return fail(ps, "\"capabilities\": expected an array of strings");
	h->caps = 0;
	for (size_t i = 0; i < v->n; i++) {
		const struct tval *c = &v->items[i];
		if (c->kind != TV_STRING)
			return fail(ps, "\"capabilities\": expected an array of strings");
		if (strcmp(c->s, "pull") == 0)
			h->caps |= PP_CAP_PULL;
		else if (strcmp(c->s, "resolve") == 0)
			h->caps |= PP_CAP_RESOLVE;
		else if (strcmp(c->s, "push") == 0)
			h->caps |= PP_CAP_PUSH;
		else
			return fail(ps, "unknown capability \"%.100s\" (pull, resolve or push)",
				    c->s);
	}
	return 0;
}

static void add_client(struct pp_hosts_entry *h, const char *cert, const char *key)
{
	h->clients = pp_xrealloc(h->clients, (h->n_clients + 1) * sizeof(*h->clients));
	h->clients[h->n_clients++] =
		(struct pp_hosts_client){pp_xstrdup(cert), key && *key ? pp_xstrdup(key) : NULL};
}

/* "cert", ["cert", ...] or [["cert", "key"], ...]. */
static int set_client(struct parser *ps, struct pp_hosts_entry *h, const struct tval *v)
{
	static const char what[] =
		"\"client\": expected a path, or an array of paths or of [cert, key] pairs";
	if (v->kind == TV_STRING) {
		add_client(h, v->s, NULL);
		return 0;
	}
	if (v->kind != TV_ARRAY)
		return fail(ps, what);
	for (size_t i = 0; i < v->n; i++) {
		const struct tval *c = &v->items[i];
		if (c->kind == TV_STRING) {
			add_client(h, c->s, NULL);
			continue;
		}
		if (c->kind != TV_ARRAY || c->n < 1 || c->n > 2 || c->items[0].kind != TV_STRING ||
		    (c->n == 2 && c->items[1].kind != TV_STRING))
			return fail(ps, what);
		add_client(h, c->items[0].s, c->n == 2 ? c->items[1].s : NULL);
	}
	return 0;
}

static int set_header(struct parser *ps, struct pp_hosts_entry *h, const char *name,
		      const struct tval *v)
{
	struct pp_hosts_header hd = {pp_xstrdup(name), NULL, 0};
	if (!*name || strpbrk(name, ":\r\n") || !string_list(v, &hd.values, &hd.n_values)) {
		for (size_t i = 0; i < hd.n_values; i++)
			free(hd.values[i]);
		free(hd.values);
		free(hd.name);
		return fail(ps,
			    "header \"%.100s\": expected a name and a string or an array "
			    "of strings",
			    name);
	}
	for (size_t i = 0; i < hd.n_values; i++) {
		if (strpbrk(hd.values[i], "\r\n")) {
			for (size_t j = 0; j < hd.n_values; j++)
				free(hd.values[j]);
			free(hd.values);
			free(hd.name);
			return fail(ps, "header \"%.100s\": a value may not hold a newline", name);
		}
	}
	if (hd.n_values == 0) { /* x = []: no header line to send */
		free(hd.values);
		free(hd.name);
		return 0;
	}
	h->headers = pp_xrealloc(h->headers, (h->n_headers + 1) * sizeof(*h->headers));
	h->headers[h->n_headers++] = hd;
	return 0;
}

static int want_bool(struct parser *ps, const char *key, const struct tval *v, bool *out)
{
	if (v->kind != TV_BOOL)
		return fail(ps, "\"%s\": expected true or false", key);
	*out = v->b;
	return 0;
}

static int apply(struct parser *ps, char **key, size_t n_key, const struct tval *v)
{
	if (ps->table == T_IGNORED)
		return 0;
	if (ps->table == T_HEADER) {
		if (n_key != 1) {
			pp_debug("%s:%d: dotted header key ignored", ps->name, ps->line);
			return 0;
		}
		return set_header(ps, ps->entry, key[0], v);
	}
	struct pp_hosts_entry *h = ps->entry;
	const char *k = key[0];
	if (n_key != 1) {
		pp_debug("%s:%d: dotted key \"%s\" ignored", ps->name, ps->line, k);
	} else if (strcmp(k, "server") == 0 && ps->table == T_TOP) {
		if (v->kind != TV_STRING || !*v->s)
			return fail(ps, "\"server\": expected a URL string");
		free(ps->file->server);
		ps->file->server = pp_xstrdup(v->s);
	} else if (strcmp(k, "capabilities") == 0) {
		return set_capabilities(ps, h, v);
	} else if (strcmp(k, "ca") == 0) {
		if (!string_list(v, &h->ca, &h->n_ca))
			return fail(ps, "\"ca\": expected a path or an array of paths");
	} else if (strcmp(k, "client") == 0) {
		return set_client(ps, h, v);
	} else if (strcmp(k, "skip_verify") == 0) {
		return want_bool(ps, k, v, &h->skip_verify);
	} else if (strcmp(k, "override_path") == 0) {
		return want_bool(ps, k, v, &h->override_path);
	} else {
		pp_debug("%s:%d: unknown key \"%.100s\" ignored", ps->name, ps->line, k);
	}
	return 0;
}

/* [name]: the top-level header table, a host, a host's header table, or
 * a table this file does not use. */
static int enter_table(struct parser *ps, char **key, size_t n)
{
	struct pp_hosts_file *f = ps->file;
	ps->table = T_IGNORED;
	ps->entry = NULL;
	if (n == 1 && strcmp(key[0], "header") == 0) {
		ps->table = T_HEADER;
		ps->entry = &f->top;
		return 0;
	}
	if (strcmp(key[0], "host") != 0 || n < 2 || n > 3 ||
	    (n == 3 && strcmp(key[2], "header") != 0)) {
		pp_debug("%s:%d: table [%s…] ignored", ps->name, ps->line, key[0]);
		return 0;
	}
	if (!*key[1])
		return fail(ps, "[host.\"\"]: a host needs a URL");
	struct pp_hosts_entry *h = NULL;
	for (size_t i = 0; i < f->n_hosts; i++)
		if (strcmp(f->hosts[i].url, key[1]) == 0)
			h = &f->hosts[i];
	if (n == 2) {
		if (h)
			return fail(ps, "[host.\"%.200s\"] is defined twice", key[1]);
		f->hosts = pp_xrealloc(f->hosts, (f->n_hosts + 1) * sizeof(*f->hosts));
		h = &f->hosts[f->n_hosts++];
		memset(h, 0, sizeof(*h));
		h->url = pp_xstrdup(key[1]);
		h->caps = PP_CAP_ALL;
		ps->table = T_HOST;
	} else {
		if (!h)
			return fail(ps, "[host.\"%.200s\".header] comes before its host's table",
				    key[1]);
		ps->table = T_HEADER;
	}
	ps->entry = h;
	return 0;
}

static int parse_table_line(struct parser *ps)
{
	bool array = ps->end - ps->p >= 2 && ps->p[1] == '[';
	ps->p += array ? 2 : 1;
	char **key = NULL;
	size_t n = 0;
	int r = parse_key(ps, &key, &n);
	if (r < 0)
		return r;
	if (array) {
		if (ps->end - ps->p < 2 || ps->p[0] != ']' || ps->p[1] != ']')
			r = fail(ps, "expected ']]' after the table name");
		else
			ps->p += 2;
		/* hosts.toml has no arrays of tables: skip what follows. */
		if (r == 0)
			pp_debug("%s:%d: array of tables [[%s…]] ignored", ps->name, ps->line,
				 key[0]);
		ps->table = T_IGNORED;
	} else if (at_end(ps) || *ps->p != ']') {
		r = fail(ps, "expected ']' after the table name");
	} else {
		ps->p++;
		r = enter_table(ps, key, n);
	}
	free_parts(key);
	return r < 0 ? r : expect_eol(ps, "the table name");
}

static int parse_key_value(struct parser *ps)
{
	char **key = NULL;
	size_t n = 0;
	int r = parse_key(ps, &key, &n);
	if (r < 0)
		return r;
	struct tval v = {0};
	skip_ws(ps);
	if (at_end(ps) || *ps->p != '=') {
		r = fail(ps, "expected '=' after key");
	} else {
		ps->p++;
		skip_ws(ps);
		int line = ps->line; /* an array may end lines later: name its start */
		r = parse_value(ps, &v, 0);
		if (r == 0) {
			int end_line = ps->line;
			ps->line = line;
			r = apply(ps, key, n, &v);
			ps->line = end_line;
		}
		if (r == 0)
			r = expect_eol(ps, "the value");
	}
	tval_free(&v);
	free_parts(key);
	return r;
}

int pp_hosts_parse(struct pp_hosts_file *out, const char *name, const char *text, size_t len,
		   struct pp_error *err)
{
	struct parser ps = {name, text, text + len, 1, err, out, T_TOP, &out->top};
	memset(out, 0, sizeof(*out));
	out->top.caps = PP_CAP_ALL;
	int r = 0;
	/* A UTF-8 byte order mark is allowed at the start. */
	if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
		ps.p += 3;
	while (r == 0) {
		skip_ws_comment(&ps);
		if (at_end(&ps))
			break;
		if (*ps.p == '\n') {
			ps.p++;
			ps.line++;
		} else if (*ps.p == '[') {
			r = parse_table_line(&ps);
		} else {
			r = parse_key_value(&ps);
		}
	}
	if (r < 0)
		pp_hosts_file_free(out);
	return r;
}

void pp_hosts_entry_free(struct pp_hosts_entry *h)
{
	free(h->url);
	for (size_t i = 0; i < h->n_ca; i++)
		free(h->ca[i]);
	free(h->ca);
	for (size_t i = 0; i < h->n_clients; i++) {
		free(h->clients[i].cert);
		free(h->clients[i].key);
	}
	free(h->clients);
	for (size_t i = 0; i < h->n_headers; i++) {
		for (size_t j = 0; j < h->headers[i].n_values; j++)
			free(h->headers[i].values[j]);
		free(h->headers[i].values);
		free(h->headers[i].name);
	}
	free(h->headers);
	memset(h, 0, sizeof(*h));
}

void pp_hosts_file_free(struct pp_hosts_file *f)
{
	free(f->server);
	pp_hosts_entry_free(&f->top);
	for (size_t i = 0; i < f->n_hosts; i++)
		pp_hosts_entry_free(&f->hosts[i]);
	free(f->hosts);
	memset(f, 0, sizeof(*f));
}
