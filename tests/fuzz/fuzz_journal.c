/* libFuzzer target for the chunk journal reader. */
#include "prepull/error.h"
#include "prepull/journal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 65536)
		return 0;
	struct pp_journal j;
	struct pp_error err = {0};
	if (pp_journal_parse(&j, (const char *)data, size, &err) == 0) {
		/* Whatever is accepted must describe chunks inside the blob, of
		 * a blob whose size is not negative, and valid digests. */
		if (j.size < 0 || j.chunk_size <= 0 || j.n_chunks > PP_JOURNAL_MAX_CHUNKS ||
		    (int64_t)j.n_chunks * j.chunk_size < j.size)
			abort();
		for (size_t i = 0; i < j.n_chunks; i++) {
			if (j.chunks[i].part_len < 0 || j.chunks[i].part_len > j.chunk_size)
				abort();
			if (j.chunks[i].done[0] && pp_digest_validate(j.chunks[i].done, NULL) != 0)
				abort();
			if (j.chunks[i].part_len > 0 &&
			    pp_digest_validate(j.chunks[i].part, NULL) != 0)
				abort();
		}
		pp_journal_free(&j);
	}
	return 0;
}
