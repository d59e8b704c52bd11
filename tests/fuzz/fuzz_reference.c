/* libFuzzer target for the image reference parser and domain helpers. */
#include "prepull/error.h"
#include "prepull/reference.h"
#include "prepull/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 4096)
		return 0;
	char *s = pp_xstrndup((const char *)data, size);
	struct pp_ref ref;
	struct pp_error err = {0};

	if (pp_ref_parse(&ref, s, &err) == 0) {
		/* Whatever parses must parse again to itself. */
		struct pp_ref again;
		if (pp_ref_parse(&again, ref.full, &err) != 0 || strcmp(again.full, ref.full) != 0)
			abort();
		pp_ref_free(&again);
		char *name = pp_ref_name(&ref);
		if (strncmp(ref.full, name, strlen(name)) != 0)
			abort();
		free(name);
		(void)pp_ref_api_host(&ref);
		(void)pp_domain_config_key(ref.domain);
		(void)pp_domain_is_local(ref.domain);
		pp_ref_free(&ref);
	} else if (err.code != PP_EUSAGE || strlen(err.msg) >= sizeof(err.msg)) {
		abort();
	}
	(void)pp_domain_is_local(s);
	free(s);
	return 0;
}
