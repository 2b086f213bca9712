/* Native tests of kata_json: `make -C sdk/c test` (also run by kata's own tests). */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kata_json.h"

static kata_json *parse(const char *s) {
  char *err = NULL;
  kata_json *v = kata_json_parse(s, strlen(s), &err);
  if (!v) {
    fprintf(stderr, "parse(%s): %s\n", s, err);
    free(err);
  }
  return v;
}

static void refused(const char *s, const char *want) {
  char *err = NULL;
  kata_json *v = kata_json_parse(s, strlen(s), &err);
  assert(v == NULL);
  assert(err != NULL);
  if (!strstr(err, want)) {
    fprintf(stderr, "parse(%s): got %s, want %s\n", s, err, want);
    abort();
  }
  free(err);
}

int main(void) {
  kata_json *v = parse(" [{\"id\":\"7\",\"n\":-1.5e2,\"ok\":true,\"no\":null,\"list\":[1,[2,{}]]}, \"\\u00e9\\ud83d\\ude00\\n\"] ");
  assert(v && v->type == KATA_JSON_ARRAY && v->len == 2);
  const kata_json *o = kata_json_at(v, 0);
  assert(strcmp(kata_json_string(kata_json_get(o, "id")), "7") == 0);
  assert(kata_json_get(o, "n")->number == -150.0);
  assert(kata_json_get(o, "ok")->boolean);
  assert(kata_json_is(kata_json_get(o, "no"), KATA_JSON_NULL));
  assert(kata_json_get(o, "missing") == NULL && kata_json_get(v, "id") == NULL);
  assert(kata_json_at(kata_json_at(kata_json_get(o, "list"), 1), 1)->type == KATA_JSON_OBJECT);
  assert(kata_json_string(kata_json_get(o, "n")) == NULL);
  const kata_json *s = kata_json_at(v, 1);
  assert(strcmp(s->string, "\xc3\xa9\xf0\x9f\x98\x80\n") == 0 && s->string_len == 7);
  assert(kata_json_at(v, 2) == NULL);
  kata_json_free(v);

  v = parse("\"a\\u0000b\\ud800x\"");
  assert(v->string_len == 7 && memcmp(v->string, "a\0b\xef\xbf\xbdx", 7) == 0);
  kata_json_free(v);
  v = parse("0");
  assert(v->type == KATA_JSON_NUMBER && v->number == 0);
  kata_json_free(v);

  refused("", "unexpected end");
  refused("{", "expected a string key");
  refused("{\"a\" 1}", "expected ':'");
  refused("[1 2]", "expected ',' or ']'");
  refused("[1,]", "unexpected character");
  refused("01", "unexpected data after the value");
  refused("-", "bad number");
  refused("1.", "bad number");
  refused("\"abc", "unterminated string");
  refused("\"a\tb\"", "control character");
  refused("\"\\x\"", "bad escape");
  refused("tru", "unexpected character");
  refused("[1] x", "at byte 4");
  char deep[400];
  memset(deep, '[', sizeof deep - 1);
  deep[sizeof deep - 1] = 0;
  refused(deep, "nested too deeply");

  kata_buf b = {0};
  kata_buf_puts(&b, "{\"text\":");
  { const char *t = "say \"hi\"\n\\ \x01 \xc3\xa9"; kata_buf_json_string(&b, t, strlen(t)); }
  kata_buf_puts(&b, ",\"none\":");
  kata_buf_json_string(&b, NULL, 0);
  kata_buf_printf(&b, ",\"n\":%d}", 42);
  assert(strcmp(b.ptr, "{\"text\":\"say \\\"hi\\\"\\n\\\\ \\u0001 \xc3\xa9\",\"none\":null,\"n\":42}") == 0);
  v = parse(b.ptr);
  assert(strcmp(kata_json_string(kata_json_get(v, "text")), "say \"hi\"\n\\ \x01 \xc3\xa9") == 0);
  kata_json_free(v);
  char *taken = kata_buf_take(&b);
  assert(taken && b.ptr == NULL && b.len == 0);
  free(taken);
  taken = kata_buf_take(&b);
  assert(taken && taken[0] == 0);
  free(taken);
  kata_buf_free(&b);
  puts("kata_json: all tests passed");
  return 0;
}
