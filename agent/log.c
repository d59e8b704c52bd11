#include "prepull/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "prepull/sanitize.h"
#include "prepull/util.h"

int pp_log_level = PP_LOG_INFO;

static const char *const level_names[] = {"error", "warning", "info", "debug"};

void pp_log_write(int level, const char *fmt, ...)
{
	/* One fprintf per line so concurrent writers never interleave mid-line. */
	char line[2048], shown[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (level < 0 || level > PP_LOG_DEBUG)
		level = PP_LOG_DEBUG;
	/* A line may quote a server's words: no escape sequence or broken
	 * UTF-8 reaches the terminal or the journal. */
	fprintf(stderr, "prepull: %s: %s\n", level_names[level],
		pp_sanitize(shown, sizeof(shown), line, sizeof(line)));
}
