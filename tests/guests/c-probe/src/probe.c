/* Test guest `c-probe`: the C row of tests/languages.rs. Every language kata
 * has a template for ships the same probe (tests/guests/<lang>-probe/), so
 * one table-driven test shows the same sandbox guarantees in every language.
 *
 * Each poll reads config `probe` and returns one message (id
 * `probe-<now_ms>`, conversation and sender `probe`) whose text is:
 *
 * - http: GET config `url` -> `http: ok <status> <body>` or `http: err <error>`
 * - file: read config `path` -> `file: ok <n> bytes` or `file: err <error>`
 * - secret: GET `url` with `token={{secret:token}}` in the query and the
 *   header `Authorization: Bearer {{secret:token}}` -> `secret: ok <status>
 *   <body>` or `secret: err <error>`, also written to the log
 * - spin: burns CPU forever; bomb: allocates 1 MiB blocks forever
 * - anything else: `unknown probe <value>`
 *
 * vendor/kata is a copy of sdk/c/kata kept current by sdk/c/generate.sh. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kata.h"

/* The placeholder the host replaces with the secret `token`. */
#define PLACEHOLDER "{{secret:token}}"

static char *get(const char *what, const char *url, bool auth) {
  kata_header header = {"authorization", "Bearer " PLACEHOLDER};
  kata_response resp;
  kata_http_error err;
  if (kata_http_get(url, &header, auth ? 1 : 0, &resp, &err) == KATA_HTTP_OK) {
    char *text = kata_sprintf("%s: ok %u %.*s", what, resp.status, (int)resp.body_len, (const char *)resp.body);
    kata_response_free(&resp);
    return text;
  }
  char *text = kata_sprintf("%s: err %s", what, err.message);
  kata_http_error_free(&err);
  return text;
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return kata_sprintf("file: err %s", strerror(errno));
  char buf[4096];
  size_t total = 0, n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) total += n;
  int failed = ferror(f);
  int saved = errno;
  fclose(f);
  if (failed) return kata_sprintf("file: err %s", strerror(saved));
  return kata_sprintf("file: ok %zu bytes", total);
}

/* Where the memory bomb keeps its blocks, so nothing can be optimised away. */
static volatile unsigned char *volatile *blocks;

static char *run(const char *probe) {
  if (strcmp(probe, "http") == 0) {
    char *url = kata_config_or("url", "");
    char *text = get("http", url, false);
    free(url);
    return text;
  }
  if (strcmp(probe, "file") == 0) {
    char *path = kata_config_or("path", "");
    char *text = read_file(path);
    free(path);
    return text;
  }
  if (strcmp(probe, "secret") == 0) {
    char *url = kata_config_or("url", "");
    char *with_token = kata_sprintf("%s%stoken=" PLACEHOLDER, url, strchr(url, '?') ? "&" : "?");
    char *text = get("secret", with_token, true);
    kata_log_info("%s", text);
    free(with_token);
    free(url);
    return text;
  }
  if (strcmp(probe, "spin") == 0) {
    volatile uint64_t x = 0;
    for (;;) x = x * 6364136223846793005ULL + 1;
  }
  if (strcmp(probe, "bomb") == 0) {
    for (size_t n = 0;; n++) {
      volatile unsigned char *block = malloc(1 << 20);
      void *grown = realloc((void *)blocks, (n + 1) * sizeof *blocks);
      if (!block || !grown) abort(); /* the cap was hit: trap */
      block[(n * 7) % (1 << 20)] = 1;
      blocks = grown;
      blocks[n] = block;
    }
  }
  return kata_sprintf("unknown probe %s", probe);
}

void exports_kata_plugin_channel_describe(exports_kata_plugin_channel_channel_info_t *ret) {
  kata_str(&ret->name, "c-probe");
  kata_str(&ret->version, "0.1.0");
  ret->ingress.len = 0;
  ret->ingress.ptr = NULL;
  KATA_LIST_PUSH(&ret->ingress, EXPORTS_KATA_PLUGIN_CHANNEL_INGRESS_MODE_POLL);
}

bool exports_kata_plugin_channel_connect(exports_kata_plugin_channel_channel_error_t *err) {
  (void)err;
  return true;
}

bool exports_kata_plugin_channel_poll(plugin_string_t *cursor, exports_kata_plugin_channel_poll_result_t *ret,
                                      exports_kata_plugin_channel_channel_error_t *err) {
  (void)err;
  if (cursor) plugin_string_free(cursor);
  char *probe = kata_config_or("probe", "");
  char *text = run(probe);
  char *id = kata_sprintf("probe-%llu", (unsigned long long)kata_now_ms());
  memset(ret, 0, sizeof *ret);
  kata_plugin_types_message_t m;
  kata_message(&m, id, "probe", "probe", text);
  KATA_LIST_PUSH(&ret->messages, m);
  free(id);
  free(text);
  free(probe);
  return true;
}

bool exports_kata_plugin_channel_send(exports_kata_plugin_channel_outbound_message_t *message,
                                      exports_kata_plugin_channel_send_receipt_t *ret,
                                      exports_kata_plugin_channel_channel_error_t *err) {
  (void)err;
  memset(ret, 0, sizeof *ret);
  char *key = kata_cstr(&message->idempotency_key);
  kata_strf(&ret->id, "sent-%s", key);
  free(key);
  kata_plugin_types_outbound_message_free(message);
  return true;
}
