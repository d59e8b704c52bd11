#include "prepull/reference.h"

#include "prepull/digest.h"
#include "prepull/error.h"
#include "prepull/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define DOCKER_HUB "docker.io"
#define DOCKER_HUB_LEGACY "index.docker.io"
#define DOCKER_HUB_API "registry-1.docker.io"
#define DOCKER_HUB_CONFIG_KEY "https://index.docker.io/v1/"
#define NAME_MAX_LEN 255
#define TAG_MAX_LEN 128

/* Sets a PP_EUSAGE error "invalid reference \"<input>\": <what>". */
static int ref_error(struct pp_error *err, const char *input, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int ref_error(struct pp_error *err, const char *input, const char *fmt, ...)
{
	char shown[160], what[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	pp_printable(shown, sizeof(shown), input);
	for (char *p = what; *p; p++)
		if (*p < 0x20 || *p >= 0x7f)
			*p = '?';
	return pp_error_set(err, PP_EUSAGE, "invalid reference \"%s\": %s", shown, what);
}

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_word(char c)
{
	return isascii((unsigned char)c) && (isalnum((unsigned char)c) || c == '_');
}

/* One path component: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* */
static bool path_component_ok(const char *s, size_t len)
{
	size_t i = 0;
	if (len == 0 || !is_lower_alnum(s[0]))
		return false;
	while (i < len) {
		while (i < len && is_lower_alnum(s[i]))
			i++;
		if (i == len)
			return true;
		/* a separator, then at least one alnum */
		if (s[i] == '.') {
			i++;
		} else if (s[i] == '_') {
			i++;
			if (i < len && s[i] == '_')
				i++;
		} else if (s[i] == '-') {
			while (i < len && s[i] == '-')
				i++;
		} else {
			return false;
		}
		if (i == len || !is_lower_alnum(s[i]))
			return false;
	}
	return true;
}

static int check_path(const char *input, const char *path, struct pp_error *err)
{
	for (const char *p = path; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			return ref_error(err, input, "repository name must be lowercase");
	const char *c = path;
	for (;;) {
		const char *slash = strchr(c, '/');
		size_t len = slash ? (size_t)(slash - c) : strlen(c);
		if (len == 0)
			return ref_error(err, input, "empty path component in repository name");
		if (!path_component_ok(c, len))
			return ref_error(err, input,
					 "invalid repository name component \"%.*s\" (allowed: "
					 "a-z 0-9 separated by '.', '_', '__' or '-')",
					 len > 64 ? 64 : (int)len, c);
		if (!slash)
			return 0;
		c = slash + 1;
	}
}

/* DNS label: [a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])? */
static bool label_ok(const char *s, size_t len)
{
	if (len == 0 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[len - 1]))
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isascii((unsigned char)s[i]) || !(isalnum((unsigned char)s[i]) || s[i] == '-'))
			return false;
	return true;
}

static bool port_ok(const char *s, size_t len)
{
	if (len == 0 || len > 5)
		return false;
	unsigned v = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	return v <= 65535;
}

/* host[:port] where host is a DNS name, an IPv4 address or [IPv6]. */
static int check_domain(const char *input, const char *d, struct pp_error *err)
{
	const char *host_end;
	if (d[0] == '[') {
		const char *close = strchr(d, ']');
		if (!close)
			return ref_error(err, input, "unterminated '[' in registry address");
		size_t alen = (size_t)(close - d - 1);
		char addr[INET6_ADDRSTRLEN + 1];
		struct in6_addr a6;
		if (alen == 0 || alen >= sizeof(addr))
			return ref_error(err, input, "invalid IPv6 registry address");
		memcpy(addr, d + 1, alen);
		addr[alen] = '\0';
		if (inet_pton(AF_INET6, addr, &a6) != 1)
			return ref_error(err, input, "invalid IPv6 registry address \"%s\"", addr);
		host_end = close + 1;
		if (*host_end != '\0' && *host_end != ':')
			return ref_error(err, input, "unexpected characters after ']'");
	} else {
		host_end = d + strcspn(d, ":");
		const char *l = d;
		for (;;) {
			const char *dot = memchr(l, '.', (size_t)(host_end - l));
			const char *lend = dot ? dot : host_end;
			if (!label_ok(l, (size_t)(lend - l)))
				return ref_error(err, input, "invalid registry host \"%.*s\"",
						 (int)(host_end - d), d);
			if (!dot)
				break;
			l = dot + 1;
		}
	}
	if (*host_end == ':' && !port_ok(host_end + 1, strlen(host_end + 1)))
		return ref_error(err, input, "invalid registry port \"%s\"", host_end + 1);
	return 0;
}

static bool tag_ok(const char *t)
{
	size_t len = strlen(t);
	if (len == 0 || len > TAG_MAX_LEN || !is_word(t[0]))
		return false;
	for (size_t i = 1; i < len; i++)
		if (!is_word(t[i]) && t[i] != '.' && t[i] != '-')
			return false;
	return true;
}

static bool is_hex64(const char *s)
{
	size_t i = 0;
	for (; s[i]; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return i == 64;
}

/* The first component is a registry when docker would take it for one. */
static bool looks_like_domain(const char *first, size_t len)
{
	if (len == 9 && memcmp(first, "localhost", 9) == 0)
		return true;
	for (size_t i = 0; i < len; i++)
		if (first[i] == '.' || first[i] == ':' || (first[i] >= 'A' && first[i] <= 'Z'))
			return true;
	return false;
}

void pp_ref_free(struct pp_ref *ref)
{
	if (!ref)
		return;
	free(ref->domain);
	free(ref->path);
	free(ref->tag);
	free(ref->digest);
	free(ref->full);
	memset(ref, 0, sizeof(*ref));
}

int pp_ref_parse(struct pp_ref *out, const char *s, struct pp_error *err)
{
	struct pp_ref r = {0};
	cleanup_free char *name = NULL;
	int ret;

	memset(out, 0, sizeof(*out));
	if (!s || !*s)
		return pp_error_set(err, PP_EUSAGE, "invalid reference \"\": empty");

	const char *at = strchr(s, '@');
	if (at) {
		struct pp_error derr = {0};
		ret = pp_digest_validate(at + 1, &derr);
		if (ret < 0)
			return ref_error(err, s, "%s", derr.msg);
		r.digest = pp_xstrdup(at + 1);
		name = pp_xstrndup(s, (size_t)(at - s));
	} else {
		name = pp_xstrdup(s);
	}

	/* The tag's colon is the last ':' after the last '/', so that
	 * host:port/x is not read as a tag. */
	char *last_slash = strrchr(name, '/');
	char *colon = strrchr(last_slash ? last_slash : name, ':');
	if (colon) {
		*colon = '\0';
		if (!tag_ok(colon + 1)) {
			ret = ref_error(
				err, s,
				"invalid tag \"%.64s\" (want [A-Za-z0-9_][A-Za-z0-9_.-], at "
				"most 128 characters)",
				colon + 1);
			goto fail;
		}
		r.tag = pp_xstrdup(colon + 1);
	}
	if (!*name) {
		ret = ref_error(err, s, "missing repository name");
		goto fail;
	}
	if (!r.tag && !r.digest && is_hex64(name)) {
		ret = ref_error(err, s,
				"cannot use a 64-character hex string as a name "
				"(it looks like an image ID)");
		goto fail;
	}

	char *slash = strchr(name, '/');
	if (slash && looks_like_domain(name, (size_t)(slash - name))) {
		*slash = '\0';
		ret = check_domain(s, name, err);
		if (ret < 0)
			goto fail;
		r.domain = pp_xstrdup(strcmp(name, DOCKER_HUB_LEGACY) == 0 ? DOCKER_HUB : name);
		r.path = pp_xstrdup(slash + 1);
	} else {
		r.domain = pp_xstrdup(DOCKER_HUB);
		r.path = pp_xstrdup(name);
	}
	ret = check_path(s, r.path, err);
	if (ret < 0)
		goto fail;
	if (strcmp(r.domain, DOCKER_HUB) == 0 && !strchr(r.path, '/')) {
		char *p = pp_xasprintf("library/%s", r.path);
		free(r.path);
		r.path = p;
	}
	if (strlen(r.domain) + 1 + strlen(r.path) > NAME_MAX_LEN) {
		ret = ref_error(err, s, "repository name must not be longer than %d characters",
				NAME_MAX_LEN);
		goto fail;
	}
	if (!r.tag && !r.digest)
		r.tag = pp_xstrdup("latest");

	r.full = pp_xasprintf("%s/%s%s%s%s%s", r.domain, r.path, r.tag ? ":" : "",
			      r.tag ? r.tag : "", r.digest ? "@" : "", r.digest ? r.digest : "");
	*out = r;
	return 0;

fail:
	pp_ref_free(&r);
	return ret;
}

char *pp_ref_name(const struct pp_ref *ref)
{
	return pp_xasprintf("%s/%s", ref->domain, ref->path);
}

const char *pp_ref_api_host(const struct pp_ref *ref)
{
	return strcmp(ref->domain, DOCKER_HUB) == 0 ? DOCKER_HUB_API : ref->domain;
}

bool pp_domain_is_local(const char *domain)
{
	char host[INET6_ADDRSTRLEN + 1];
	size_t len;

	if (!domain)
		return false;
	if (domain[0] == '[') {
		const char *close = strchr(domain, ']');
		if (!close || (close[1] != '\0' && close[1] != ':'))
			return false;
		domain++;
		len = (size_t)(close - domain);
	} else if (strchr(domain, ':') != strrchr(domain, ':')) {
		len = strlen(domain); /* bare IPv6 address, no port possible */
	} else {
		len = strcspn(domain, ":");
	}
	if (len == 0 || len >= sizeof(host))
		return false;
	memcpy(host, domain, len);
	host[len] = '\0';

	if (strcasecmp(host, "localhost") == 0)
		return true;
	struct in_addr a4;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	struct in6_addr a6;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6) ||
		       (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
	return false;
}

const char *pp_domain_config_key(const char *domain)
{
	if (strcmp(domain, DOCKER_HUB) == 0 || strcmp(domain, DOCKER_HUB_LEGACY) == 0)
		return DOCKER_HUB_CONFIG_KEY;
	return domain;
}
