/* libFuzzer target for the Content-Range parser. */
#include "prepull/error.h"
#include "prepull/registry.h"
#include "prepull/util.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 512)
		return 0;
	char *s = pp_xstrndup((const char *)data, size);
	int64_t start = -1, end = -1, total = -1;
	struct pp_error err = {0};
	if (pp_parse_content_range(s, &start, &end, &total, &err) == 0) {
		/* What parses is a real range: ordered, inside the total when known. */
		if (start < 0 || end < start || (total >= 0 && end >= total) || total < -1)
			abort();
	}
	free(s);
	return 0;
}
