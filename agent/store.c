/* Choosing and opening a store from its spec. */
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "prepull/docker_api.h"
#include "prepull/error.h"
#include "prepull/log.h"
#include "prepull/options.h"
#include "prepull/store.h"
#include "prepull/util.h"

#define CONTAINERD_DEFAULT_SOCKET "/run/containerd/containerd.sock"

/* Something listens on this unix socket (a socket file alone may be left
 * over from a daemon that stopped). */
static bool socket_accepts(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return false;
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	bool ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

int pp_store_open(struct pp_store **out, const char *spec, const struct pp_options *opts,
		  struct pp_error *err)
{
	if (strncmp(spec, "oci:", 4) == 0) {
		if (!spec[4])
			return pp_error_set(err, PP_EUSAGE, "--store oci: needs a directory");
		return pp_store_oci_open(out, spec + 4, opts, err);
	}
	if (strcmp(spec, "auto") == 0) {
		/* A daemon that answers wins; an OCI layout needs none. */
		if (pp_docker_socket_answers(NULL))
			return pp_store_docker_open(out, NULL, opts, err);
		if (socket_accepts(CONTAINERD_DEFAULT_SOCKET))
			return pp_store_containerd_open(out, NULL, opts, err);
		cleanup_free char *dir = pp_xasprintf("%s/oci", opts->state_dir);
		return pp_store_oci_open(out, dir, opts, err);
	}
	if (strcmp(spec, "containerd") == 0)
		return pp_store_containerd_open(out, NULL, opts, err);
	if (strncmp(spec, "containerd:", 11) == 0)
		return pp_store_containerd_open(out, spec + 11, opts, err);
	if (strcmp(spec, "docker") == 0)
		return pp_store_docker_open(out, NULL, opts, err);
	if (strncmp(spec, "docker:", 7) == 0)
		return pp_store_docker_open(out, spec + 7, opts, err);
	return pp_error_set(err, PP_EUSAGE,
			    "--store %s: unknown store (expected oci:DIR, containerd[:SOCKET], "
			    "docker[:SOCKET] or auto)",
			    spec);
}

void pp_store_free(struct pp_store *s)
{
	if (!s)
		return;
	if (s->ops && s->ops->free)
		s->ops->free(s);
	free(s->desc);
	free(s->stage_dir);
	free(s);
}
