/* libFuzzer target for the hosts.toml parser. */
#include "prepull/error.h"
#include "prepull/hosts.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 16384)
		return 0;
	struct pp_hosts_file f;
	struct pp_error err = {0};
	if (pp_hosts_parse(&f, "hosts.toml", (const char *)data, size, &err) == 0) {
		/* What parsed is whole: every host has a URL, every header a name. */
		for (size_t i = 0; i < f.n_hosts; i++) {
			if (!f.hosts[i].url || (f.hosts[i].caps & ~PP_CAP_ALL))
				abort();
			for (size_t j = 0; j < f.hosts[i].n_headers; j++)
				if (!f.hosts[i].headers[j].name ||
				    f.hosts[i].headers[j].n_values == 0)
					abort();
		}
		pp_hosts_file_free(&f);
	} else if (err.code != PP_EUSAGE || strncmp(err.msg, "hosts.toml:", 11) != 0 ||
		   f.n_hosts != 0 || f.server) {
		abort();
	}
	return 0;
}
