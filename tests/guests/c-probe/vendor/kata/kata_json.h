/* kata_json: a small JSON reader and writer for kata plugins in C.
 *
 * Plain C17 with only the C library: it compiles natively (for your unit
 * tests) and for wasm32-wasi alike. The reader builds a tree you free with
 * one call; the writer appends to a growing buffer.
 *
 *     char *err = NULL;
 *     kata_json *doc = kata_json_parse(body, body_len, &err);
 *     if (!doc) { ... err says where and what; free(err); }
 *     const char *text = kata_json_string(kata_json_get(doc, "text"));
 *     ...
 *     kata_json_free(doc);   // every pointer into the tree dies with it
 *
 *     kata_buf b = {0};
 *     kata_buf_puts(&b, "{\"text\":");
 *     kata_buf_json_string(&b, text, strlen(text));
 *     kata_buf_puts(&b, "}");
 *     ... b.ptr (NUL-terminated), b.len ...
 *     kata_buf_free(&b);
 *
 * Limits: nesting up to KATA_JSON_MAX_DEPTH; numbers are doubles (integers
 * up to 2^53 are exact; keep bigger ids as strings, as most APIs do);
 * strings are decoded to UTF-8 (\u escapes included; a lone surrogate
 * becomes U+FFFD) and may contain NUL bytes (use the _len variants then).
 */
#ifndef KATA_JSON_H
#define KATA_JSON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* How deep arrays and objects may nest. */
#define KATA_JSON_MAX_DEPTH 128

typedef enum kata_json_type {
  KATA_JSON_NULL,
  KATA_JSON_BOOL,
  KATA_JSON_NUMBER,
  KATA_JSON_STRING,
  KATA_JSON_ARRAY,
  KATA_JSON_OBJECT,
} kata_json_type;

/* One JSON value. Read the fields directly or use the accessors below. */
typedef struct kata_json {
  kata_json_type type;
  bool boolean;              /* KATA_JSON_BOOL */
  double number;             /* KATA_JSON_NUMBER */
  char *string;              /* KATA_JSON_STRING: decoded, NUL-terminated */
  size_t string_len;         /* its length in bytes (without the NUL) */
  size_t len;                /* ARRAY and OBJECT: how many items */
  struct kata_json *items;   /* ARRAY and OBJECT: the values, in order */
  char **keys;               /* OBJECT: the keys, parallel to items */
} kata_json;

/* Parse `len` bytes of `text` (one JSON value, surrounding whitespace
 * allowed). Returns the tree, or NULL with *err (when err is not NULL) set to
 * a malloc'd message such as "at byte 12: expected ':'" that you free. */
kata_json *kata_json_parse(const char *text, size_t len, char **err);

/* Free a tree from kata_json_parse (NULL is fine). */
void kata_json_free(kata_json *v);

/* The member `key` of an object; NULL when v is not an object or has no such
 * key (the first one wins when a key repeats). */
const kata_json *kata_json_get(const kata_json *v, const char *key);

/* Item i of an array; NULL when v is not an array or i is out of range. */
const kata_json *kata_json_at(const kata_json *v, size_t i);

/* The text of a string value; NULL when v is NULL or not a string. */
const char *kata_json_string(const kata_json *v);

/* Whether v is a value of type t (false for NULL). */
bool kata_json_is(const kata_json *v, kata_json_type t);

/* A growing, always NUL-terminated byte buffer. Start with `kata_buf b = {0};`.
 * If memory runs out, `failed` is set and later appends do nothing. */
typedef struct kata_buf {
  char *ptr;
  size_t len;
  size_t cap;
  bool failed;
} kata_buf;

void kata_buf_append(kata_buf *b, const void *data, size_t n);
void kata_buf_puts(kata_buf *b, const char *s);
void kata_buf_printf(kata_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kata_buf_vprintf(kata_buf *b, const char *fmt, va_list ap);
/* `s` (n bytes) as a quoted, escaped JSON string; `null` when s is NULL. */
void kata_buf_json_string(kata_buf *b, const char *s, size_t n);
/* Hand the text over: returns b->ptr (malloc'd, yours to free; never NULL
 * unless memory ran out) and resets b. */
char *kata_buf_take(kata_buf *b);
void kata_buf_free(kata_buf *b);

#ifdef __cplusplus
}
#endif

#endif
