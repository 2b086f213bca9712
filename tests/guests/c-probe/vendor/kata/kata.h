/* kata.h: the kata SDK for plugins in C.
 *
 * A thin layer over the bindings kata generates for your plugin's world
 * (plugin.h, written by `kata plugin build` into build/bindings/): text,
 * logging, configuration, state, HTTP with {{secret:NAME}} placeholders,
 * and constructors for messages and errors. Everything else is the
 * generated API itself; see README.md for how WIT types look in C.
 *
 * Ownership, in one rule: what a kata_* function returns through a pointer
 * (char *, kata_response, kata_http_error, a filled plugin_string_t) is
 * malloc'd and yours to free; what you pass in stays yours. The values your
 * exports_* functions return are freed by the generated code after kata has
 * read them, so they must be malloc'd too: kata_str(), kata_strf(),
 * kata_message() and the error constructors do that for you.
 */
#ifndef KATA_SDK_H
#define KATA_SDK_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kata_json.h"
#include "plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KATA_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* ---- text ---- */

/* Set *out to a malloc'd copy of the C string s (NULL gives ""). */
void kata_str(plugin_string_t *out, const char *s);
/* Set *out to malloc'd printf-formatted text. */
void kata_strf(plugin_string_t *out, const char *fmt, ...) KATA_PRINTF(2, 3);
/* Set *out to none when s is NULL, else to a malloc'd copy of s. */
void kata_opt_str(plugin_option_string_t *out, const char *s);
/* A malloc'd, NUL-terminated copy of a WIT string (NULL gives NULL). */
char *kata_cstr(const plugin_string_t *s);
/* Whether the WIT string s holds exactly the C string c. */
bool kata_str_eq(const plugin_string_t *s, const char *c);
/* malloc'd printf-formatted text (like asprintf). */
char *kata_sprintf(const char *fmt, ...) KATA_PRINTF(1, 2);

/* ---- logging (the daemon's log, tagged with the plugin's name) ---- */

void kata_log(kata_plugin_types_log_level_t level, const char *fmt, ...) KATA_PRINTF(2, 3);
#define kata_log_debug(...) kata_log(KATA_PLUGIN_TYPES_LOG_LEVEL_DEBUG, __VA_ARGS__)
#define kata_log_info(...) kata_log(KATA_PLUGIN_TYPES_LOG_LEVEL_INFO, __VA_ARGS__)
#define kata_log_warn(...) kata_log(KATA_PLUGIN_TYPES_LOG_LEVEL_WARN, __VA_ARGS__)
#define kata_log_error(...) kata_log(KATA_PLUGIN_TYPES_LOG_LEVEL_ERROR, __VA_ARGS__)

/* ---- configuration ([plugins.NAME] config = { ... } in kata.toml) ---- */

/* The value of `key`, malloc'd; NULL when it is not set. */
char *kata_config(const char *key);
/* The value of `key`, or a copy of `fallback`; malloc'd either way. */
char *kata_config_or(const char *key, const char *fallback);

/* ---- state (private to the plugin, kept in the workspace's database) ---- */

/* Read `key`: true with *data (malloc'd; NULL when empty) and *len set, or
 * false when it was never set. */
bool kata_state_get(const char *key, uint8_t **data, size_t *len);
/* Store len bytes under `key`. On failure returns false and, when err is
 * not NULL, sets *err to kata's reason (malloc'd). */
bool kata_state_set(const char *key, const void *data, size_t len, char **err);
/* Remove `key` (not an error when it is not there). */
void kata_state_delete(const char *key);

/* The wall-clock time in milliseconds since the Unix epoch. */
uint64_t kata_now_ms(void);

/* ---- messages ---- */

/* Fill *m with a plain text message: a direct conversation that mentions
 * the agent, timestamp now, no thread, sender name, attachments or raw. All
 * strings are copied; free with kata_plugin_types_message_free (or let the
 * generated code do it when you return it). */
void kata_message(kata_plugin_types_message_t *m, const char *id, const char *conversation, const char *sender, const char *text);

/* Append `item` to a generated list type (any struct with ptr and len),
 * growing it with realloc. Start from a zeroed list. Evaluates its
 * arguments more than once; aborts when memory runs out. */
#define KATA_LIST_PUSH(list, item)                                                                   \
  do {                                                                                               \
    void *kata_grown_ = realloc((list)->ptr, ((list)->len + 1) * sizeof *(list)->ptr);               \
    if (!kata_grown_) abort();                                                                       \
    (list)->ptr = kata_grown_;                                                                       \
    (list)->ptr[(list)->len++] = (item);                                                             \
  } while (0)

/* ---- errors: each sets *err (strings malloc'd) and returns false, so an
 * export can `return kata_err_network(err, "HTTP %d", status);` ---- */

bool kata_err_auth_failed(kata_plugin_types_channel_error_t *err, const char *fmt, ...) KATA_PRINTF(2, 3);
bool kata_err_rate_limited(kata_plugin_types_channel_error_t *err, uint64_t retry_after_ms);
bool kata_err_network(kata_plugin_types_channel_error_t *err, const char *fmt, ...) KATA_PRINTF(2, 3);
bool kata_err_invalid_config(kata_plugin_types_channel_error_t *err, const char *fmt, ...) KATA_PRINTF(2, 3);
bool kata_err_unsupported(kata_plugin_types_channel_error_t *err);
bool kata_err_fatal(kata_plugin_types_channel_error_t *err, const char *fmt, ...) KATA_PRINTF(2, 3);

bool kata_tool_err_unknown_tool(kata_plugin_types_tool_error_t *err, const char *name);
bool kata_tool_err_invalid_args(kata_plugin_types_tool_error_t *err, const char *fmt, ...) KATA_PRINTF(2, 3);
bool kata_tool_err_failed(kata_plugin_types_tool_error_t *err, const char *fmt, ...) KATA_PRINTF(2, 3);

/* ---- HTTP over wasi:http ----
 *
 * Only hosts granted to the plugin in kata.toml (`network`) are reachable;
 * others fail with KATA_HTTP_DENIED. Write secrets as {{secret:NAME}} in the
 * URL or a header value: they pass through untouched and the host fills them
 * in for granted hosts only; the plugin never sees the value. */

/* The default limit on a response body: 16 MiB. */
#define KATA_HTTP_MAX_BODY ((size_t)16 << 20)

typedef struct kata_header {
  const char *name;
  const char *value;
} kata_header;

typedef struct kata_request {
  const char *method;          /* "GET" when NULL */
  const char *url;             /* scheme://host[:port]/path?query */
  const kata_header *headers;  /* headers_len of them */
  size_t headers_len;
  const void *body;            /* no body when NULL; content-length is added */
  size_t body_len;
  uint64_t timeout_ms;         /* 0: the host's limits */
  size_t max_body;             /* 0: KATA_HTTP_MAX_BODY */
} kata_request;

typedef struct kata_response_header {
  char *name;                  /* lowercase */
  char *value;
} kata_response_header;

typedef struct kata_response {
  uint16_t status;
  kata_response_header *headers;
  size_t headers_len;
  uint8_t *body;               /* NUL-terminated for convenience; body_len bytes */
  size_t body_len;
} kata_response;

typedef enum kata_http_result {
  KATA_HTTP_OK = 0,
  KATA_HTTP_INVALID_URL,       /* the URL cannot be split into scheme, host and path */
  KATA_HTTP_INVALID_REQUEST,   /* a bad method or header */
  KATA_HTTP_DENIED,            /* the workspace policy refused the destination */
  KATA_HTTP_TRANSPORT,         /* DNS, connect, TLS, timeout, a broken body */
  KATA_HTTP_BODY_TOO_LARGE,    /* the response body is over max_body */
} kata_http_result;

typedef struct kata_http_error {
  kata_http_result kind;
  /* malloc'd: e.g. "request to https://x.example/api was denied by the
   * workspace policy" or "request to http://127.0.0.1:1/ failed: the server
   * refused the connection" (URLs shown without their query). */
  char *message;
} kata_http_error;

/* Send a request and read the whole response. Any HTTP status is
 * KATA_HTTP_OK (look at resp->status); errors are failures to get a
 * response at all, described in *err (when not NULL). Free resp with
 * kata_response_free after KATA_HTTP_OK, err with kata_http_error_free. */
kata_http_result kata_http_send(const kata_request *req, kata_response *resp, kata_http_error *err);
/* GET url with the given headers. */
kata_http_result kata_http_get(const char *url, const kata_header *headers, size_t headers_len, kata_response *resp,
                               kata_http_error *err);
/* The first value of header `name` (case-insensitive), or NULL. */
const char *kata_response_header_get(const kata_response *resp, const char *name);
void kata_response_free(kata_response *resp);
void kata_http_error_free(kata_http_error *err);

/* An HTTP failure as the channel error kata acts on: denied → invalid-config
 * (telling the user to grant the host), transport → network (retried),
 * invalid URL → invalid-config, the rest → fatal. Returns false. */
bool kata_err_from_http(kata_plugin_types_channel_error_t *out, const kata_http_error *e);

/* A wasi:http error code as a short sentence, e.g. "the server refused the
 * connection" (malloc'd). */
char *kata_http_describe_error_code(const wasi_http_types_error_code_t *code);

#ifdef __cplusplus
}
#endif

#endif
