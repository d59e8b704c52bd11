/* Logging to stderr in a form journald keeps well: one line per event,
 * no colour unless stderr is a terminal.  The level is checked before
 * anything is formatted.  Every line is sanitised as it is written (see
 * pp_sanitize): control characters and invalid UTF-8 show as escapes. */
#ifndef PREPULL_LOG_H
#define PREPULL_LOG_H

enum pp_log_level { PP_LOG_ERROR = 0, PP_LOG_WARN, PP_LOG_INFO, PP_LOG_DEBUG };

extern int pp_log_level;

void pp_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define pp_log(level, ...)                                  \
	do {                                                \
		if ((level) <= pp_log_level)                \
			pp_log_write((level), __VA_ARGS__); \
	} while (0)

#define pp_error_log(...) pp_log(PP_LOG_ERROR, __VA_ARGS__)
#define pp_warn(...) pp_log(PP_LOG_WARN, __VA_ARGS__)
#define pp_info(...) pp_log(PP_LOG_INFO, __VA_ARGS__)
#define pp_debug(...) pp_log(PP_LOG_DEBUG, __VA_ARGS__)

#endif
