/* The docker store (not built yet). */
#include "prepull/error.h"
#include "prepull/store.h"

int pp_store_docker_open(struct pp_store **out, const char *socket, const struct pp_options *opts,
			 struct pp_error *err)
{
	return pp_error_set(err, PP_EUNSUPPORTED,
			    "the docker store is not implemented yet; use oci:DIR");
}
