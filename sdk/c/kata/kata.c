/* kata.c: the kata SDK for plugins in C; see kata.h. */
#include "kata.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- text ---- */

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) abort();
  return p;
}

static void set_n(plugin_string_t *out, const char *s, size_t n) {
  if (!s || n == 0) {
    out->ptr = NULL;
    out->len = 0;
    return;
  }
  out->ptr = xmalloc(n);
  memcpy(out->ptr, s, n);
  out->len = n;
}

/* A WIT string that borrows s: for arguments of imported functions. */
static plugin_string_t borrow(const char *s) { return (plugin_string_t){(uint8_t *)s, s ? strlen(s) : 0}; }

void kata_str(plugin_string_t *out, const char *s) { set_n(out, s, s ? strlen(s) : 0); }

static char *vformat(const char *fmt, va_list ap) {
  kata_buf b = {0};
  kata_buf_vprintf(&b, fmt, ap);
  char *s = kata_buf_take(&b);
  if (!s) abort();
  return s;
}

static void vset(plugin_string_t *out, const char *fmt, va_list ap) {
  char *s = vformat(fmt, ap);
  size_t n = strlen(s);
  if (n == 0) {
    free(s);
    out->ptr = NULL;
    out->len = 0;
  } else {
    out->ptr = (uint8_t *)s;
    out->len = n;
  }
}

void kata_strf(plugin_string_t *out, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vset(out, fmt, ap);
  va_end(ap);
}

void kata_opt_str(plugin_option_string_t *out, const char *s) {
  out->is_some = s != NULL;
  if (s) kata_str(&out->val, s);
  else out->val = (plugin_string_t){0};
}

char *kata_cstr(const plugin_string_t *s) {
  if (!s) return NULL;
  char *c = xmalloc(s->len + 1);
  if (s->len) memcpy(c, s->ptr, s->len);
  c[s->len] = '\0';
  return c;
}

bool kata_str_eq(const plugin_string_t *s, const char *c) {
  size_t n = strlen(c);
  return s && s->len == n && (n == 0 || memcmp(s->ptr, c, n) == 0);
}

char *kata_sprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = vformat(fmt, ap);
  va_end(ap);
  return s;
}

/* ---- logging, configuration, state, time ---- */

void kata_log(kata_plugin_types_log_level_t level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = vformat(fmt, ap);
  va_end(ap);
  plugin_string_t text = borrow(s);
  kata_plugin_host_log(level, &text);
  free(s);
}

char *kata_config(const char *key) {
  plugin_string_t k = borrow(key), value;
  if (!kata_plugin_host_config_get(&k, &value)) return NULL;
  char *s = kata_cstr(&value);
  plugin_string_free(&value);
  return s;
}

char *kata_config_or(const char *key, const char *fallback) {
  char *s = kata_config(key);
  return s ? s : kata_sprintf("%s", fallback ? fallback : "");
}

bool kata_state_get(const char *key, uint8_t **data, size_t *len) {
  plugin_string_t k = borrow(key);
  plugin_list_u8_t value;
  *data = NULL;
  *len = 0;
  if (!kata_plugin_host_state_get(&k, &value)) return false;
  /* An empty list's pointer is not an allocation: hand out NULL. */
  if (value.len > 0) {
    *data = value.ptr;
    *len = value.len;
  }
  return true;
}

bool kata_state_set(const char *key, const void *data, size_t len, char **err) {
  plugin_string_t k = borrow(key), e;
  plugin_list_u8_t v = {(uint8_t *)data, data ? len : 0};
  if (kata_plugin_host_state_set(&k, &v, &e)) {
    if (err) *err = NULL;
    return true;
  }
  if (err) *err = kata_cstr(&e);
  plugin_string_free(&e);
  return false;
}

void kata_state_delete(const char *key) {
  plugin_string_t k = borrow(key);
  kata_plugin_host_state_delete(&k);
}

uint64_t kata_now_ms(void) { return kata_plugin_host_now_ms(); }

/* ---- messages ---- */

void kata_message(kata_plugin_types_message_t *m, const char *id, const char *conversation, const char *sender, const char *text) {
  memset(m, 0, sizeof *m);
  kata_str(&m->id, id);
  kata_str(&m->conversation, conversation);
  kata_str(&m->sender, sender);
  kata_str(&m->text, text);
  m->timestamp_ms = kata_now_ms();
  m->conversation_kind = KATA_PLUGIN_TYPES_CONVERSATION_KIND_DIRECT;
  m->mentioned = true;
}

/* ---- errors ---- */

static bool channel_err(kata_plugin_types_channel_error_t *err, uint8_t tag, const char *fmt, va_list ap) {
  memset(err, 0, sizeof *err);
  err->tag = tag;
  /* Every text case of the variant sits at the same place in the union. */
  vset(&err->val.fatal, fmt, ap);
  return false;
}

#define CHANNEL_ERR(name, TAG)                                             \
  bool kata_err_##name(kata_plugin_types_channel_error_t *err, const char *fmt, ...) { \
    va_list ap;                                                            \
    va_start(ap, fmt);                                                     \
    channel_err(err, TAG, fmt, ap);                                        \
    va_end(ap);                                                            \
    return false;                                                          \
  }

CHANNEL_ERR(auth_failed, KATA_PLUGIN_TYPES_CHANNEL_ERROR_AUTH_FAILED)
CHANNEL_ERR(network, KATA_PLUGIN_TYPES_CHANNEL_ERROR_NETWORK)
CHANNEL_ERR(invalid_config, KATA_PLUGIN_TYPES_CHANNEL_ERROR_INVALID_CONFIG)
CHANNEL_ERR(fatal, KATA_PLUGIN_TYPES_CHANNEL_ERROR_FATAL)

bool kata_err_rate_limited(kata_plugin_types_channel_error_t *err, uint64_t retry_after_ms) {
  memset(err, 0, sizeof *err);
  err->tag = KATA_PLUGIN_TYPES_CHANNEL_ERROR_RATE_LIMITED;
  err->val.rate_limited = retry_after_ms;
  return false;
}

bool kata_err_unsupported(kata_plugin_types_channel_error_t *err) {
  memset(err, 0, sizeof *err);
  err->tag = KATA_PLUGIN_TYPES_CHANNEL_ERROR_UNSUPPORTED;
  return false;
}

bool kata_tool_err_unknown_tool(kata_plugin_types_tool_error_t *err, const char *name) {
  memset(err, 0, sizeof *err);
  err->tag = KATA_PLUGIN_TYPES_TOOL_ERROR_UNKNOWN_TOOL;
  kata_str(&err->val.unknown_tool, name);
  return false;
}

#define TOOL_ERR(name, TAG)                                                 \
  bool kata_tool_err_##name(kata_plugin_types_tool_error_t *err, const char *fmt, ...) { \
    va_list ap;                                                             \
    va_start(ap, fmt);                                                      \
    memset(err, 0, sizeof *err);                                            \
    err->tag = TAG;                                                         \
    vset(&err->val.failed, fmt, ap);                                        \
    va_end(ap);                                                             \
    return false;                                                           \
  }

TOOL_ERR(invalid_args, KATA_PLUGIN_TYPES_TOOL_ERROR_INVALID_ARGS)
TOOL_ERR(failed, KATA_PLUGIN_TYPES_TOOL_ERROR_FAILED)

/* ---- HTTP ---- */

/* The most bytes blocking-write-and-flush takes in one call. */
#define WRITE_CHUNK 4096
/* How many bytes to ask for per read of a response body. */
#define READ_CHUNK 65536

static kata_http_result set_error(kata_http_error *err, kata_http_result kind, const char *fmt, ...) KATA_PRINTF(3, 4);
static kata_http_result set_error(kata_http_error *err, kata_http_result kind, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    err->kind = kind;
    err->message = vformat(fmt, ap);
    va_end(ap);
  }
  return kind;
}

static char *with_detail(const char *text, const plugin_option_string_t *detail) {
  if (detail->is_some && detail->val.len > 0) return kata_sprintf("%s (%.*s)", text, (int)detail->val.len, (const char *)detail->val.ptr);
  return kata_sprintf("%s", text);
}

static char *with_size(const char *text, const plugin_option_u64_t *n) {
  if (n->is_some) return kata_sprintf("%s (%llu bytes)", text, (unsigned long long)n->val);
  return kata_sprintf("%s", text);
}

char *kata_http_describe_error_code(const wasi_http_types_error_code_t *code) {
  const char *s;
  switch (code->tag) {
    case WASI_HTTP_TYPES_ERROR_CODE_DNS_TIMEOUT: s = "the DNS lookup timed out"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_DNS_ERROR: return with_detail("the host name could not be resolved", &code->val.dns_error.rcode);
    case WASI_HTTP_TYPES_ERROR_CODE_DESTINATION_NOT_FOUND: s = "the host was not found"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_DESTINATION_UNAVAILABLE: s = "the host is unavailable"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_DESTINATION_IP_PROHIBITED: s = "the destination address is not allowed"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_DESTINATION_IP_UNROUTABLE: s = "the destination address cannot be reached"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_CONNECTION_REFUSED: s = "the server refused the connection"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_CONNECTION_TERMINATED: s = "the connection was closed unexpectedly"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_CONNECTION_TIMEOUT: s = "connecting timed out"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_CONNECTION_READ_TIMEOUT: s = "the server stopped sending (read timeout)"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_CONNECTION_WRITE_TIMEOUT: s = "the server stopped taking data (write timeout)"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_CONNECTION_LIMIT_REACHED:
      s = "too many requests or connections (a rate or connection limit was reached)";
      break;
    case WASI_HTTP_TYPES_ERROR_CODE_TLS_PROTOCOL_ERROR: s = "the TLS handshake failed"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_TLS_CERTIFICATE_ERROR: s = "the server's TLS certificate was not accepted"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_TLS_ALERT_RECEIVED:
      return with_detail("the server ended TLS with an alert", &code->val.tls_alert_received.alert_message);
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_DENIED: s = "the request was denied by the workspace policy (kata.toml)"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_LENGTH_REQUIRED: s = "the server requires a Content-Length"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_BODY_SIZE:
      return with_size("the request body does not match its declared size", &code->val.http_request_body_size);
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_METHOD_INVALID: s = "the request method is invalid"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_URI_INVALID: s = "the request URL is invalid"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_URI_TOO_LONG: s = "the request URL is too long"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_HEADER_SECTION_SIZE:
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_HEADER_SIZE: s = "the request headers are too large"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_TRAILER_SECTION_SIZE:
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_TRAILER_SIZE: s = "the request trailers are too large"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_RESPONSE_INCOMPLETE: s = "the response ended before it was complete"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_RESPONSE_HEADER_SECTION_SIZE:
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_RESPONSE_HEADER_SIZE: s = "the response headers are too large"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_RESPONSE_BODY_SIZE:
      return with_size("the response body is larger than allowed (limits.max_response) or than it said",
                       &code->val.http_response_body_size);
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_RESPONSE_TRAILER_SECTION_SIZE:
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_RESPONSE_TRAILER_SIZE: s = "the response trailers are too large"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_RESPONSE_TRANSFER_CODING:
      return with_detail("the response uses a transfer coding that is not supported", &code->val.http_response_transfer_coding);
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_RESPONSE_CONTENT_CODING:
      return with_detail("the response uses a content coding that is not supported", &code->val.http_response_content_coding);
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_RESPONSE_TIMEOUT: s = "the server did not answer in time"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_UPGRADE_FAILED: s = "the protocol upgrade failed"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_PROTOCOL_ERROR: s = "the HTTP exchange broke the protocol"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_LOOP_DETECTED: s = "a request loop was detected"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_CONFIGURATION_ERROR: s = "the HTTP client is misconfigured"; break;
    case WASI_HTTP_TYPES_ERROR_CODE_INTERNAL_ERROR: return with_detail("the HTTP client failed internally", &code->val.internal_error);
    default: s = "unknown HTTP error"; break;
  }
  return kata_sprintf("%s", s);
}

/* An error code the host returned (owned): classify, describe, free it. */
static kata_http_result code_error(kata_http_error *err, wasi_http_types_error_code_t *code, const char *url) {
  kata_http_result r;
  if (code->tag == WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_DENIED) {
    r = set_error(err, KATA_HTTP_DENIED, "request to %s was denied by the workspace policy", url);
  } else {
    char *text = kata_http_describe_error_code(code);
    r = set_error(err, KATA_HTTP_TRANSPORT, "request to %s failed: %s", url, text);
    free(text);
  }
  wasi_http_types_error_code_free(code);
  return r;
}

/* A stream error (owned) as text, preferring the HTTP error code behind it. */
static char *stream_error_text(wasi_io_streams_stream_error_t *e) {
  if (e->tag == WASI_IO_STREAMS_STREAM_ERROR_CLOSED) return kata_sprintf("the connection closed");
  wasi_io_error_own_error_t io = e->val.last_operation_failed;
  wasi_http_types_error_code_t code;
  char *text;
  if (wasi_http_types_http_error_code(wasi_io_error_borrow_error(io), &code)) {
    text = kata_http_describe_error_code(&code);
    wasi_http_types_error_code_free(&code);
  } else {
    plugin_string_t debug;
    wasi_io_error_method_error_to_debug_string(wasi_io_error_borrow_error(io), &debug);
    text = kata_sprintf("I/O error: %.*s", (int)debug.len, (const char *)debug.ptr);
    plugin_string_free(&debug);
  }
  wasi_io_error_error_drop_own(io);
  return text;
}

/* The URL without its query and fragment (safe in errors and logs). */
static char *url_shown(const char *url) {
  size_t n = strcspn(url, "?#");
  return kata_sprintf("%.*s", (int)n, url);
}

typedef struct url_parts {
  char *scheme;
  char *authority;
  char *path_with_query;
} url_parts;

static void url_parts_free(url_parts *u) {
  free(u->scheme);
  free(u->authority);
  free(u->path_with_query);
}

/* Split a URL without decoding or encoding anything, so {{secret:NAME}}
 * placeholders pass through unchanged. NULL, or the reason it is invalid. */
static const char *split_url(const char *url, url_parts *out) {
  *out = (url_parts){0};
  for (const char *c = url; *c; c++) {
    if (isspace((unsigned char)*c) || iscntrl((unsigned char)*c)) return "contains whitespace or control characters";
  }
  const char *sep = strstr(url, "://");
  if (!sep) return "expected scheme://host/path";
  if (sep == url || !isalpha((unsigned char)url[0])) return "bad scheme";
  for (const char *c = url; c < sep; c++) {
    if (!isalnum((unsigned char)*c) && *c != '+' && *c != '-' && *c != '.') return "bad scheme";
  }
  const char *rest = sep + 3;
  size_t alen = strcspn(rest, "/?#");
  if (alen == 0) return "missing host";
  const char *tail = rest + alen;
  size_t tlen = strcspn(tail, "#");
  out->scheme = kata_sprintf("%.*s", (int)(sep - url), url);
  out->authority = kata_sprintf("%.*s", (int)alen, rest);
  out->path_with_query = kata_sprintf("%s%.*s", tail[0] == '/' ? "" : "/", (int)tlen, tail);
  return NULL;
}

static bool has_header(const kata_request *req, const char *name) {
  for (size_t i = 0; i < req->headers_len; i++) {
    if (strcasecmp(req->headers[i].name, name) == 0) return true;
  }
  return false;
}

static wasi_http_types_method_t method_of(const char *m) {
  static const char *const names[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"};
  static const uint8_t tags[] = {WASI_HTTP_TYPES_METHOD_GET,     WASI_HTTP_TYPES_METHOD_HEAD,    WASI_HTTP_TYPES_METHOD_POST,
                                 WASI_HTTP_TYPES_METHOD_PUT,     WASI_HTTP_TYPES_METHOD_DELETE,  WASI_HTTP_TYPES_METHOD_CONNECT,
                                 WASI_HTTP_TYPES_METHOD_OPTIONS, WASI_HTTP_TYPES_METHOD_TRACE,   WASI_HTTP_TYPES_METHOD_PATCH};
  wasi_http_types_method_t out = {0};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    if (strcmp(m, names[i]) == 0) {
      out.tag = tags[i];
      return out;
    }
  }
  out.tag = WASI_HTTP_TYPES_METHOD_OTHER;
  out.val.other = borrow(m);
  return out;
}

/* Write data (if any) to the request body and finish it; NULL or the error. */
static char *write_body(wasi_http_types_own_outgoing_body_t body, const uint8_t *data, size_t len) {
  char *problem = NULL;
  if (data) {
    wasi_http_types_own_output_stream_t stream;
    if (!wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body), &stream)) {
      wasi_http_types_outgoing_body_drop_own(body);
      return kata_sprintf("request body stream unavailable");
    }
    for (size_t off = 0; off < len && !problem; off += WRITE_CHUNK) {
      size_t n = len - off < WRITE_CHUNK ? len - off : WRITE_CHUNK;
      plugin_list_u8_t chunk = {(uint8_t *)data + off, n};
      wasi_io_streams_stream_error_t e;
      if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(wasi_io_streams_borrow_output_stream(stream), &chunk, &e)) {
        problem = stream_error_text(&e);
      }
    }
    /* The stream is a child of the body: drop it before finishing. */
    wasi_io_streams_output_stream_drop_own(stream);
  }
  wasi_http_types_error_code_t code;
  if (!wasi_http_types_static_outgoing_body_finish(body, NULL, &code)) {
    if (!problem) problem = kata_http_describe_error_code(&code);
    wasi_http_types_error_code_free(&code);
  }
  return problem;
}

/* Read status, headers and the whole body of an incoming response (owned). */
static kata_http_result read_response(wasi_http_types_own_incoming_response_t response, const char *url, size_t limit,
                                      kata_response *resp, kata_http_error *err) {
  wasi_http_types_borrow_incoming_response_t r = wasi_http_types_borrow_incoming_response(response);
  memset(resp, 0, sizeof *resp);
  resp->status = wasi_http_types_method_incoming_response_status(r);

  wasi_http_types_own_headers_t fields = wasi_http_types_method_incoming_response_headers(r);
  wasi_http_types_list_tuple2_field_name_field_value_t entries;
  wasi_http_types_method_fields_entries(wasi_http_types_borrow_fields(fields), &entries);
  wasi_http_types_fields_drop_own(fields);
  if (entries.len) {
    resp->headers = xmalloc(entries.len * sizeof *resp->headers);
    for (size_t i = 0; i < entries.len; i++) {
      resp->headers[i].name = kata_cstr(&entries.ptr[i].f0);
      resp->headers[i].value = kata_sprintf("%.*s", (int)entries.ptr[i].f1.len, (const char *)entries.ptr[i].f1.ptr);
    }
    resp->headers_len = entries.len;
  }
  wasi_http_types_list_tuple2_field_name_field_value_free(&entries);

  kata_http_result result = KATA_HTTP_OK;
  wasi_http_types_own_incoming_body_t body;
  if (!wasi_http_types_method_incoming_response_consume(r, &body)) {
    result = set_error(err, KATA_HTTP_TRANSPORT, "request to %s failed: response body already consumed", url);
  } else {
    wasi_http_types_own_input_stream_t stream;
    if (!wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(body), &stream)) {
      result = set_error(err, KATA_HTTP_TRANSPORT, "request to %s failed: response body stream unavailable", url);
    } else {
      kata_buf b = {0};
      for (;;) {
        plugin_list_u8_t chunk;
        wasi_io_streams_stream_error_t e;
        if (!wasi_io_streams_method_input_stream_blocking_read(wasi_io_streams_borrow_input_stream(stream), READ_CHUNK, &chunk, &e)) {
          if (e.tag != WASI_IO_STREAMS_STREAM_ERROR_CLOSED) {
            char *text = stream_error_text(&e);
            result = set_error(err, KATA_HTTP_TRANSPORT, "request to %s failed: %s", url, text);
            free(text);
          }
          break;
        }
        bool over = b.len + chunk.len > limit;
        if (!over) kata_buf_append(&b, chunk.ptr, chunk.len);
        plugin_list_u8_free(&chunk);
        if (over) {
          result = set_error(err, KATA_HTTP_BODY_TOO_LARGE, "response from %s is larger than %zu bytes", url, limit);
          break;
        }
      }
      wasi_io_streams_input_stream_drop_own(stream);
      if (b.failed) result = set_error(err, KATA_HTTP_TRANSPORT, "request to %s failed: out of memory for the body", url);
      if (result == KATA_HTTP_OK) {
        resp->body_len = b.len;
        resp->body = (uint8_t *)kata_buf_take(&b);
      }
      kata_buf_free(&b);
    }
    wasi_http_types_future_trailers_drop_own(wasi_http_types_static_incoming_body_finish(body));
  }
  wasi_http_types_incoming_response_drop_own(response);
  if (result != KATA_HTTP_OK) kata_response_free(resp);
  return result;
}

kata_http_result kata_http_send(const kata_request *req, kata_response *resp, kata_http_error *err) {
  if (err) *err = (kata_http_error){0};
  memset(resp, 0, sizeof *resp);
  const char *url = req->url ? req->url : "";
  char *shown = url_shown(url);
  kata_http_result result;
  url_parts parts;
  const char *invalid = split_url(url, &parts);
  if (invalid) {
    result = set_error(err, KATA_HTTP_INVALID_URL, "invalid URL %s: %s", shown, invalid);
    goto out;
  }

  /* Headers, with content-length for a body unless given. */
  size_t n = req->headers_len;
  wasi_http_types_tuple2_field_name_field_value_t *list = xmalloc((n + 1) * sizeof *list);
  char length[32];
  for (size_t i = 0; i < n; i++) {
    list[i].f0 = borrow(req->headers[i].name);
    list[i].f1 = (wasi_http_types_field_value_t){(uint8_t *)req->headers[i].value, strlen(req->headers[i].value)};
  }
  if (req->body && !has_header(req, "content-length")) {
    snprintf(length, sizeof length, "%zu", req->body_len);
    list[n].f0 = borrow("content-length");
    list[n].f1 = (wasi_http_types_field_value_t){(uint8_t *)length, strlen(length)};
    n++;
  }
  wasi_http_types_list_tuple2_field_name_field_value_t entries = {list, n};
  wasi_http_types_own_fields_t headers;
  wasi_http_types_header_error_t herr;
  bool headers_ok = wasi_http_types_static_fields_from_list(&entries, &headers, &herr);
  free(list);
  if (!headers_ok) {
    result = set_error(err, KATA_HTTP_INVALID_REQUEST, "invalid request: invalid header (a bad or forbidden name or value)");
    goto out_parts;
  }

  wasi_http_types_own_outgoing_request_t request = wasi_http_types_constructor_outgoing_request(headers);
  wasi_http_types_borrow_outgoing_request_t r = wasi_http_types_borrow_outgoing_request(request);
  const char *method_name = req->method ? req->method : "GET";
  wasi_http_types_method_t method = method_of(method_name);
  wasi_http_types_scheme_t scheme = {0};
  if (strcasecmp(parts.scheme, "http") == 0) scheme.tag = WASI_HTTP_TYPES_SCHEME_HTTP;
  else if (strcasecmp(parts.scheme, "https") == 0) scheme.tag = WASI_HTTP_TYPES_SCHEME_HTTPS;
  else {
    scheme.tag = WASI_HTTP_TYPES_SCHEME_OTHER;
    scheme.val.other = borrow(parts.scheme);
  }
  plugin_string_t authority = borrow(parts.authority), path = borrow(parts.path_with_query);
  const char *rejected = NULL;
  if (!wasi_http_types_method_outgoing_request_set_method(r, &method)) {
    wasi_http_types_outgoing_request_drop_own(request);
    result = set_error(err, KATA_HTTP_INVALID_REQUEST, "invalid request: bad method %s", method_name);
    goto out_parts;
  }
  if (!wasi_http_types_method_outgoing_request_set_scheme(r, &scheme)) rejected = "scheme";
  else if (!wasi_http_types_method_outgoing_request_set_authority(r, &authority)) rejected = "host";
  else if (!wasi_http_types_method_outgoing_request_set_path_with_query(r, &path)) rejected = "path";
  if (rejected) {
    wasi_http_types_outgoing_request_drop_own(request);
    result = set_error(err, KATA_HTTP_INVALID_URL, "invalid URL %s: the host rejected the %s", shown, rejected);
    goto out_parts;
  }
  wasi_http_types_own_outgoing_body_t body;
  if (!wasi_http_types_method_outgoing_request_body(r, &body)) {
    wasi_http_types_outgoing_request_drop_own(request);
    result = set_error(err, KATA_HTTP_INVALID_REQUEST, "invalid request: request body already taken");
    goto out_parts;
  }

  wasi_http_types_own_request_options_t options;
  bool has_options = req->timeout_ms > 0;
  if (has_options) {
    options = wasi_http_types_constructor_request_options();
    wasi_http_types_borrow_request_options_t o = wasi_http_types_borrow_request_options(options);
    wasi_http_types_duration_t nanos = req->timeout_ms > UINT64_MAX / 1000000 ? UINT64_MAX : req->timeout_ms * 1000000;
    /* Hosts may not support these options; then their defaults apply. */
    (void)wasi_http_types_method_request_options_set_first_byte_timeout(o, &nanos);
    (void)wasi_http_types_method_request_options_set_between_bytes_timeout(o, &nanos);
  }

  wasi_http_types_own_future_incoming_response_t future;
  wasi_http_types_error_code_t code;
  if (!wasi_http_outgoing_handler_handle(request, has_options ? &options : NULL, &future, &code)) {
    wasi_http_types_outgoing_body_drop_own(body);
    result = code_error(err, &code, shown);
    goto out_parts;
  }

  /* Write the body after `handle` so a large body streams instead of
   * filling a buffer nobody reads yet. If the host refused the request, the
   * write fails; the response future then says why, so check it first. */
  char *written = write_body(body, req->body, req->body_len);

  wasi_http_types_own_pollable_t ready = wasi_http_types_method_future_incoming_response_subscribe(wasi_http_types_borrow_future_incoming_response(future));
  wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
  wasi_io_poll_pollable_drop_own(ready);
  wasi_http_types_result_result_own_incoming_response_error_code_void_t got;
  bool some = wasi_http_types_method_future_incoming_response_get(wasi_http_types_borrow_future_incoming_response(future), &got);
  wasi_http_types_future_incoming_response_drop_own(future);
  if (!some) {
    result = set_error(err, KATA_HTTP_TRANSPORT, "request to %s failed: response not ready after waiting", shown);
  } else if (got.is_err) {
    result = set_error(err, KATA_HTTP_TRANSPORT, "request to %s failed: response already taken", shown);
  } else if (got.val.ok.is_err) {
    result = code_error(err, &got.val.ok.val.err, shown);
  } else if (written) {
    wasi_http_types_incoming_response_drop_own(got.val.ok.val.ok);
    result = set_error(err, KATA_HTTP_TRANSPORT, "request to %s failed: %s", shown, written);
  } else {
    size_t limit = req->max_body ? req->max_body : KATA_HTTP_MAX_BODY;
    result = read_response(got.val.ok.val.ok, shown, limit, resp, err);
  }
  free(written);

out_parts:
  url_parts_free(&parts);
out:
  free(shown);
  return result;
}

kata_http_result kata_http_get(const char *url, const kata_header *headers, size_t headers_len, kata_response *resp,
                               kata_http_error *err) {
  kata_request req = {.method = "GET", .url = url, .headers = headers, .headers_len = headers_len};
  return kata_http_send(&req, resp, err);
}

const char *kata_response_header_get(const kata_response *resp, const char *name) {
  for (size_t i = 0; i < resp->headers_len; i++) {
    if (strcasecmp(resp->headers[i].name, name) == 0) return resp->headers[i].value;
  }
  return NULL;
}

void kata_response_free(kata_response *resp) {
  for (size_t i = 0; i < resp->headers_len; i++) {
    free(resp->headers[i].name);
    free(resp->headers[i].value);
  }
  free(resp->headers);
  free(resp->body);
  memset(resp, 0, sizeof *resp);
}

void kata_http_error_free(kata_http_error *err) {
  free(err->message);
  err->message = NULL;
}

/* ---- defaults for the optional exports (your own definitions win) ---- */

#ifdef KATA_WORLD_CHANNEL
__attribute__((weak)) bool exports_kata_plugin_channel_subscribe(exports_kata_plugin_channel_subscription_t *ret,
                                                                 exports_kata_plugin_channel_channel_error_t *err) {
  (void)ret;
  return kata_err_unsupported(err);
}

__attribute__((weak)) bool exports_kata_plugin_channel_on_frame(exports_kata_plugin_channel_frame_t *frame,
                                                                exports_kata_plugin_channel_frame_result_t *ret,
                                                                exports_kata_plugin_channel_channel_error_t *err) {
  (void)ret;
  kata_plugin_types_frame_free(frame);
  return kata_err_unsupported(err);
}

__attribute__((weak)) void exports_kata_plugin_channel_disconnect(void) {}
#endif

#ifdef KATA_WORLD_SERVICE
__attribute__((weak)) void exports_kata_plugin_service_stop(void) {}
#endif

bool kata_err_from_http(kata_plugin_types_channel_error_t *out, const kata_http_error *e) {
  const char *m = e->message ? e->message : "HTTP request failed";
  switch (e->kind) {
    case KATA_HTTP_DENIED: return kata_err_invalid_config(out, "%s: grant its host in kata.toml [plugins.NAME] network", m);
    case KATA_HTTP_TRANSPORT: return kata_err_network(out, "%s", m);
    case KATA_HTTP_INVALID_URL: return kata_err_invalid_config(out, "%s", m);
    default: return kata_err_fatal(out, "%s", m);
  }
}
