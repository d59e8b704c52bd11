/* docker's credential file: $DOCKER_CONFIG/config.json or
 * ~/.docker/config.json, its auths entries and which credential helper
 * (credHelpers, credsStore) applies to a registry.
 *
 * Nothing read from an auths entry or a helper's answer is ever put into an
 * error message or a log line: messages name the config file, the key and
 * the helper, never a value. */
#include "prepull/auth.h"

#include "auth_int.h"
#include "prepull/error.h"
#include "prepull/reference.h"
#include "prepull/util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pwd.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define HUB_CONFIG_KEY "https://index.docker.io/v1/"
#define CONFIG_SIZE_LIMIT (16 * 1024 * 1024)

/* ------------------------------------------------------------------ */
/* Secrets                                                             */
/* ------------------------------------------------------------------ */

void pp_auth_free_secret(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

void pp_auth_buf_free_secret(struct pp_buf *b)
{
	if (b->data)
		explicit_bzero(b->data, b->cap);
	pp_buf_free(b);
}

void pp_creds_free(struct pp_creds *c)
{
	if (!c)
		return;
	pp_auth_free_secret(c->username);
	pp_auth_free_secret(c->password);
	pp_auth_free_secret(c->identity_token);
	pp_auth_free_secret(c->registry_token);
	memset(c, 0, sizeof(*c));
}

char *pp_auth_dup_nonempty(const char *s)
{
	return s && *s ? pp_xstrdup(s) : NULL;
}

bool pp_auth_creds_empty(const struct pp_creds *c)
{
	return !c->username && !c->password && !c->identity_token && !c->registry_token;
}

/* ------------------------------------------------------------------ */
/* config.json                                                         */
/* ------------------------------------------------------------------ */

static char *config_path(struct pp_error *err)
{
	const char *dir = getenv("DOCKER_CONFIG");
	if (dir && *dir)
		return pp_xasprintf("%s/config.json", dir);
	const char *home = getenv("HOME");
	if (!home || !*home) {
		struct passwd *pw = getpwuid(getuid());
		home = pw ? pw->pw_dir : NULL;
	}
	if (!home || !*home) {
		pp_error_set(err, PP_ENOTFOUND, "no credentials: neither DOCKER_CONFIG nor HOME");
		return NULL;
	}
	return pp_xasprintf("%s/.docker/config.json", home);
}

/* Reads the whole file; PP_ENOTFOUND when it does not exist. */
static int read_config(struct pp_buf *out, const char *path, struct pp_error *err)
{
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return pp_error_set(err, PP_ENOTFOUND, "no credentials: %s does not exist",
					    path);
		return pp_error_errno(err, "open %s", path);
	}
	out->limit = CONFIG_SIZE_LIMIT;
	char chunk[8192];
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			explicit_bzero(chunk, sizeof(chunk));
			return pp_error_errno(err, "read %s", path);
		}
		if (n == 0)
			break;
		if (pp_buf_append(out, chunk, (size_t)n) < 0) {
			explicit_bzero(chunk, sizeof(chunk));
			return pp_error_set(err, PP_EPROTO, "%s: larger than %d MiB", path,
					    CONFIG_SIZE_LIMIT >> 20);
		}
	}
	explicit_bzero(chunk, sizeof(chunk));
	return 0;
}

/* jansson's own message may quote the text near the error ("near '...'",
 * "unable to decode byte 0x..."), which in a config file can be part of a
 * secret: say only what kind of error it is. */
static const char *json_error_kind(const json_error_t *je)
{
	switch (json_error_code(je)) {
	case json_error_premature_end_of_input:
		return "premature end of input";
	case json_error_end_of_input_expected:
		return "trailing data";
	case json_error_invalid_utf8:
		return "invalid UTF-8";
	case json_error_null_character:
	case json_error_null_byte_in_key:
		return "NUL character";
	case json_error_stack_overflow:
		return "nested too deeply";
	default:
		return "syntax error";
	}
}

/* host[:port] of a config key: strips "scheme://" and any path, as docker's
 * ConvertToHostname does. */
static char *key_host(const char *key)
{
	const char *p = key;
	if (strncasecmp(p, "http://", 7) == 0)
		p += 7;
	else if (strncasecmp(p, "https://", 8) == 0)
		p += 8;
	return pp_xstrndup(p, strcspn(p, "/"));
}

static bool is_hub_key(const char *key)
{
	return strcmp(key, HUB_CONFIG_KEY) == 0;
}

static bool host_matches(const char *key, const char *want_key)
{
	cleanup_free char *a = key_host(key);
	cleanup_free char *b = key_host(want_key);
	if (strcasecmp(a, b) == 0)
		return true;
	/* Other tools (podman, skopeo) store Docker Hub as "docker.io". */
	return is_hub_key(want_key) &&
	       (strcasecmp(a, "docker.io") == 0 || strcasecmp(a, "registry-1.docker.io") == 0);
}

static int get_string(const json_t *obj, const char *field, const char **out, const char *path,
		      const char *where, struct pp_error *err)
{
	*out = NULL;
	const json_t *v = json_object_get(obj, field);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return pp_error_set(err, PP_EPROTO, "%s: %s: \"%s\" is not a string", path, where,
				    field);
	*out = json_string_value(v);
	return 0;
}

/* Decodes one auths entry. */
static int creds_from_entry(struct pp_creds *out, const json_t *entry, const char *path,
			    const char *key, struct pp_error *err)
{
	cleanup_free char *where = pp_xasprintf("auths[\"%s\"]", key);
	if (!json_is_object(entry))
		return pp_error_set(err, PP_EPROTO, "%s: %s is not an object", path, where);

	const char *auth, *user, *pass, *idtok, *regtok;
	int r;
	if ((r = get_string(entry, "auth", &auth, path, where, err)) < 0 ||
	    (r = get_string(entry, "username", &user, path, where, err)) < 0 ||
	    (r = get_string(entry, "password", &pass, path, where, err)) < 0 ||
	    (r = get_string(entry, "identitytoken", &idtok, path, where, err)) < 0 ||
	    (r = get_string(entry, "registrytoken", &regtok, path, where, err)) < 0)
		return r;

	struct pp_creds c = {0};
	if (auth && *auth) {
		/* As docker: "auth" overrides username/password. */
		size_t n;
		char *plain = pp_auth_b64_decode(auth, &n);
		if (!plain)
			return pp_error_set(err, PP_EPROTO, "%s: %s: \"auth\" is not valid base64",
					    path, where);
		char *colon = memchr(plain, ':', n);
		size_t pl = colon ? n - (size_t)(colon + 1 - plain) : 0;
		while (colon && pl > 0 && colon[pl] == '\0')
			pl--;
		if (!colon || colon == plain || memchr(plain, '\0', (size_t)(colon - plain)) ||
		    memchr(colon + 1, '\0', pl)) {
			explicit_bzero(plain, n);
			free(plain);
			return pp_error_set(err, PP_EPROTO,
					    "%s: %s: \"auth\" does not decode to \"user:password\"",
					    path, where);
		}
		c.username = pp_xstrndup(plain, (size_t)(colon - plain));
		c.password = pp_xstrndup(colon + 1, pl);
		explicit_bzero(plain, n);
		free(plain);
	} else {
		c.username = pp_auth_dup_nonempty(user);
		c.password = pp_auth_dup_nonempty(pass);
	}
	c.identity_token = pp_auth_dup_nonempty(idtok);
	c.registry_token = pp_auth_dup_nonempty(regtok);
	if (pp_auth_creds_empty(&c)) {
		pp_creds_free(&c);
		return pp_error_set(err, PP_ENOTFOUND, "no credentials: %s: %s is empty", path,
				    where);
	}
	*out = c;
	return 0;
}

static int lookup_auths(struct pp_creds *out, const json_t *root, const char *path, const char *key,
			struct pp_error *err)
{
	const json_t *auths = json_object_get(root, "auths");
	if (auths && !json_is_null(auths) && !json_is_object(auths))
		return pp_error_set(err, PP_EPROTO, "%s: \"auths\" is not an object", path);
	if (!auths || json_is_null(auths))
		return pp_error_set(err, PP_ENOTFOUND, "no credentials for %s in %s", key, path);

	const json_t *entry = json_object_get(auths, key);
	if (entry)
		return creds_from_entry(out, entry, path, key, err);
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)auths, k, v)
	{
		if (host_matches(k, key))
			return creds_from_entry(out, v, path, k, err);
	}
	return pp_error_set(err, PP_ENOTFOUND, "no credentials for %s in %s", key, path);
}

/* credHelpers[key] overrides credsStore.  NULL when neither applies. */
static int configured_helper(const char **out, const json_t *root, const char *key,
			     const char *path, struct pp_error *err)
{
	*out = NULL;
	const json_t *helpers = json_object_get(root, "credHelpers");
	if (helpers && !json_is_null(helpers)) {
		if (!json_is_object(helpers))
			return pp_error_set(err, PP_EPROTO, "%s: \"credHelpers\" is not an object",
					    path);
		const json_t *h = json_object_get(helpers, key);
		if (h && !json_is_string(h))
			return pp_error_set(err, PP_EPROTO,
					    "%s: credHelpers[\"%s\"] is not a string", path, key);
		if (h && *json_string_value(h)) {
			*out = json_string_value(h);
			return 0;
		}
	}
	const char *store;
	int r = get_string(root, "credsStore", &store, path, "top level", err);
	if (r < 0)
		return r;
	if (store && *store)
		*out = store;
	return 0;
}

int pp_creds_lookup(struct pp_creds *out, const char *domain, struct pp_error *err)
{
	memset(out, 0, sizeof(*out));
	if (!domain || !*domain)
		return pp_error_set(err, PP_EUSAGE, "credentials lookup without a registry");
	const char *key = strcasecmp(domain, "index.docker.io") == 0 ? HUB_CONFIG_KEY
								     : pp_domain_config_key(domain);
	cleanup_free char *path = config_path(err);
	if (!path)
		return PP_ENOTFOUND;

	struct pp_buf text = {0};
	int r = read_config(&text, path, err);
	if (r < 0)
		goto done;
	if (!text.data || !text.data[strspn(text.data, " \t\r\n")]) {
		/* docker accepts an empty config file as "no settings". */
		r = pp_error_set(err, PP_ENOTFOUND, "no credentials: %s is empty", path);
		goto done;
	}
	json_error_t je;
	json_t *root = json_loadb(text.data, text.len, 0, &je);
	if (!root) {
		r = pp_error_set(err, PP_EPROTO, "%s: malformed JSON at line %d column %d: %s",
				 path, je.line, je.column, json_error_kind(&je));
		goto done;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		r = pp_error_set(err, PP_EPROTO, "%s: not a JSON object", path);
		goto done;
	}

	const char *helper;
	r = configured_helper(&helper, root, key, path, err);
	if (r == 0) {
		if (helper) {
			/* When a helper applies, auths is not consulted. */
			cleanup_free char *h = pp_xstrdup(helper);
			json_decref(root);
			root = NULL;
			r = pp_auth_creds_from_helper(out, h, key, err);
		} else {
			r = lookup_auths(out, root, path, key, err);
		}
	}
	json_decref(root);
done:
	pp_auth_buf_free_secret(&text);
	return r;
}
