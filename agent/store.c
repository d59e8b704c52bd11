/* Choosing and opening a store from its spec. */
#include <string.h>

#include "prepull/error.h"
#include "prepull/log.h"
#include "prepull/options.h"
#include "prepull/store.h"
#include "prepull/util.h"

int pp_store_open(struct pp_store **out, const char *spec, const struct pp_options *opts,
		  struct pp_error *err)
{
	if (strncmp(spec, "oci:", 4) == 0) {
		if (!spec[4])
			return pp_error_set(err, PP_EUSAGE, "--store oci: needs a directory");
		return pp_store_oci_open(out, spec + 4, opts, err);
	}
	if (strcmp(spec, "auto") == 0) {
		/* The docker and containerd stores are not built yet: an OCI layout
		 * under the state dir is what auto can offer today. */
		cleanup_free char *dir = pp_xasprintf("%s/oci", opts->state_dir);
		return pp_store_oci_open(out, dir, opts, err);
	}
	if (strncmp(spec, "containerd", 10) == 0 || strncmp(spec, "docker", 6) == 0)
		return pp_error_set(err, PP_EUNSUPPORTED,
				    "--store %s: this store is not implemented yet; use oci:DIR",
				    spec);
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
