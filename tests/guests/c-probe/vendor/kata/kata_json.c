/* kata_json: see kata_json.h. */
#include "kata_json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- buffer ---- */

static bool buf_reserve(kata_buf *b, size_t extra) {
  if (b->failed) return false;
  if (extra > SIZE_MAX - b->len - 1) {
    b->failed = true;
    return false;
  }
  size_t need = b->len + extra + 1;
  if (need <= b->cap) return true;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  char *p = realloc(b->ptr, cap);
  if (!p) {
    b->failed = true;
    return false;
  }
  b->ptr = p;
  b->cap = cap;
  return true;
}

void kata_buf_append(kata_buf *b, const void *data, size_t n) {
  if (!buf_reserve(b, n)) return;
  if (n) memcpy(b->ptr + b->len, data, n);
  b->len += n;
  b->ptr[b->len] = '\0';
}

void kata_buf_puts(kata_buf *b, const char *s) { kata_buf_append(b, s, strlen(s)); }

void kata_buf_vprintf(kata_buf *b, const char *fmt, va_list ap) {
  va_list again;
  va_copy(again, ap);
  int n = vsnprintf(NULL, 0, fmt, again);
  va_end(again);
  if (n < 0) {
    b->failed = true;
    return;
  }
  if (!buf_reserve(b, (size_t)n)) return;
  vsnprintf(b->ptr + b->len, (size_t)n + 1, fmt, ap);
  b->len += (size_t)n;
}

void kata_buf_printf(kata_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  kata_buf_vprintf(b, fmt, ap);
  va_end(ap);
}

void kata_buf_json_string(kata_buf *b, const char *s, size_t n) {
  if (!s) {
    kata_buf_puts(b, "null");
    return;
  }
  kata_buf_append(b, "\"", 1);
  size_t start = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    const char *esc = NULL;
    char hex[7];
    switch (c) {
      case '"': esc = "\\\""; break;
      case '\\': esc = "\\\\"; break;
      case '\n': esc = "\\n"; break;
      case '\r': esc = "\\r"; break;
      case '\t': esc = "\\t"; break;
      case '\b': esc = "\\b"; break;
      case '\f': esc = "\\f"; break;
      default:
        if (c < 0x20) {
          snprintf(hex, sizeof hex, "\\u%04x", c);
          esc = hex;
        }
    }
    if (esc) {
      kata_buf_append(b, s + start, i - start);
      kata_buf_puts(b, esc);
      start = i + 1;
    }
  }
  kata_buf_append(b, s + start, n - start);
  kata_buf_append(b, "\"", 1);
}

char *kata_buf_take(kata_buf *b) {
  if (!b->ptr && !b->failed) kata_buf_append(b, "", 0);
  char *p = b->failed ? NULL : b->ptr;
  if (b->failed) free(b->ptr);
  *b = (kata_buf){0};
  return p;
}

void kata_buf_free(kata_buf *b) {
  free(b->ptr);
  *b = (kata_buf){0};
}

/* ---- reader ---- */

typedef struct parser {
  const char *s;
  size_t len;
  size_t pos;
  int depth;
  char *err;
} parser;

static bool fail(parser *p, const char *what) {
  if (!p->err) {
    kata_buf b = {0};
    kata_buf_printf(&b, "at byte %zu: %s", p->pos, what);
    p->err = kata_buf_take(&b);
  }
  return false;
}

static void skip_ws(parser *p) {
  while (p->pos < p->len) {
    char c = p->s[p->pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    p->pos++;
  }
}

static void free_contents(kata_json *v) {
  free(v->string);
  for (size_t i = 0; i < v->len; i++) {
    free_contents(&v->items[i]);
    if (v->keys) free(v->keys[i]);
  }
  free(v->items);
  free(v->keys);
  *v = (kata_json){0};
}

static bool literal(parser *p, const char *word) {
  size_t n = strlen(word);
  if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0) return fail(p, "unexpected character");
  p->pos += n;
  return true;
}

static int hex4(parser *p) {
  if (p->len - p->pos < 4) return -1;
  int v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p->s[p->pos + i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= c - '0';
    else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
    else return -1;
  }
  p->pos += 4;
  return v;
}

static void put_utf8(kata_buf *b, uint32_t cp) {
  char u[4];
  size_t n;
  if (cp < 0x80) {
    u[0] = (char)cp;
    n = 1;
  } else if (cp < 0x800) {
    u[0] = (char)(0xC0 | (cp >> 6));
    u[1] = (char)(0x80 | (cp & 0x3F));
    n = 2;
  } else if (cp < 0x10000) {
    u[0] = (char)(0xE0 | (cp >> 12));
    u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[2] = (char)(0x80 | (cp & 0x3F));
    n = 3;
  } else {
    u[0] = (char)(0xF0 | (cp >> 18));
    u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[3] = (char)(0x80 | (cp & 0x3F));
    n = 4;
  }
  kata_buf_append(b, u, n);
}

/* At the opening quote. */
static bool parse_string(parser *p, char **out, size_t *out_len) {
  kata_buf b = {0};
  p->pos++;
  for (;;) {
    if (p->pos >= p->len) {
      kata_buf_free(&b);
      return fail(p, "unterminated string");
    }
    unsigned char c = (unsigned char)p->s[p->pos];
    if (c == '"') {
      p->pos++;
      break;
    }
    if (c < 0x20) {
      kata_buf_free(&b);
      return fail(p, "control character in string");
    }
    if (c != '\\') {
      size_t start = p->pos;
      while (p->pos < p->len && p->s[p->pos] != '"' && p->s[p->pos] != '\\' && (unsigned char)p->s[p->pos] >= 0x20) p->pos++;
      kata_buf_append(&b, p->s + start, p->pos - start);
      continue;
    }
    p->pos++;
    if (p->pos >= p->len) {
      kata_buf_free(&b);
      return fail(p, "unterminated string");
    }
    char e = p->s[p->pos++];
    switch (e) {
      case '"': kata_buf_append(&b, "\"", 1); break;
      case '\\': kata_buf_append(&b, "\\", 1); break;
      case '/': kata_buf_append(&b, "/", 1); break;
      case 'b': kata_buf_append(&b, "\b", 1); break;
      case 'f': kata_buf_append(&b, "\f", 1); break;
      case 'n': kata_buf_append(&b, "\n", 1); break;
      case 'r': kata_buf_append(&b, "\r", 1); break;
      case 't': kata_buf_append(&b, "\t", 1); break;
      case 'u': {
        int hi = hex4(p);
        if (hi < 0) {
          kata_buf_free(&b);
          return fail(p, "bad \\u escape");
        }
        uint32_t cp = (uint32_t)hi;
        if (hi >= 0xD800 && hi <= 0xDBFF) {
          /* A pair only if a low surrogate follows; else U+FFFD. */
          size_t save = p->pos;
          int lo = -1;
          if (p->len - p->pos >= 2 && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u') {
            p->pos += 2;
            lo = hex4(p);
          }
          if (lo >= 0xDC00 && lo <= 0xDFFF) {
            cp = 0x10000 + (((uint32_t)hi - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
          } else {
            p->pos = save;
            cp = 0xFFFD;
          }
        } else if (hi >= 0xDC00 && hi <= 0xDFFF) {
          cp = 0xFFFD;
        }
        put_utf8(&b, cp);
        break;
      }
      default:
        p->pos--;
        kata_buf_free(&b);
        return fail(p, "bad escape in string");
    }
  }
  if (b.failed) {
    kata_buf_free(&b);
    return fail(p, "out of memory");
  }
  *out_len = b.len;
  *out = kata_buf_take(&b);
  return *out != NULL || fail(p, "out of memory");
}

static bool digits(parser *p) {
  size_t start = p->pos;
  while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
  return p->pos > start;
}

static bool parse_number(parser *p, kata_json *out) {
  size_t start = p->pos;
  if (p->s[p->pos] == '-') p->pos++;
  if (p->pos < p->len && p->s[p->pos] == '0') {
    p->pos++;
  } else if (!digits(p)) {
    return fail(p, "bad number");
  }
  if (p->pos < p->len && p->s[p->pos] == '.') {
    p->pos++;
    if (!digits(p)) return fail(p, "bad number");
  }
  if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
    p->pos++;
    if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
    if (!digits(p)) return fail(p, "bad number");
  }
  size_t n = p->pos - start;
  char small[64];
  char *text = n < sizeof small ? small : malloc(n + 1);
  if (!text) return fail(p, "out of memory");
  memcpy(text, p->s + start, n);
  text[n] = '\0';
  out->type = KATA_JSON_NUMBER;
  out->number = strtod(text, NULL);
  if (text != small) free(text);
  return true;
}

static bool parse_value(parser *p, kata_json *out);

static bool push(parser *p, kata_json *parent, size_t *cap, kata_json *item, char *key) {
  if (parent->len == *cap) {
    size_t ncap = *cap ? *cap * 2 : 4;
    kata_json *items = realloc(parent->items, ncap * sizeof *items);
    if (!items) return fail(p, "out of memory");
    parent->items = items;
    if (parent->type == KATA_JSON_OBJECT) {
      char **keys = realloc(parent->keys, ncap * sizeof *keys);
      if (!keys) return fail(p, "out of memory");
      parent->keys = keys;
    }
    *cap = ncap;
  }
  parent->items[parent->len] = *item;
  if (parent->type == KATA_JSON_OBJECT) parent->keys[parent->len] = key;
  parent->len++;
  return true;
}

/* Arrays and objects: at '[' or '{'. */
static bool parse_container(parser *p, kata_json *out, bool object) {
  if (++p->depth > KATA_JSON_MAX_DEPTH) return fail(p, "nested too deeply");
  out->type = object ? KATA_JSON_OBJECT : KATA_JSON_ARRAY;
  char close = object ? '}' : ']';
  size_t cap = 0;
  p->pos++;
  skip_ws(p);
  if (p->pos < p->len && p->s[p->pos] == close) {
    p->pos++;
    p->depth--;
    return true;
  }
  for (;;) {
    char *key = NULL;
    size_t key_len = 0;
    if (object) {
      skip_ws(p);
      if (p->pos >= p->len || p->s[p->pos] != '"') return fail(p, "expected a string key");
      if (!parse_string(p, &key, &key_len)) return false;
      skip_ws(p);
      if (p->pos >= p->len || p->s[p->pos] != ':') {
        free(key);
        return fail(p, "expected ':'");
      }
      p->pos++;
    }
    kata_json item = {0};
    if (!parse_value(p, &item) || !push(p, out, &cap, &item, key)) {
      free_contents(&item);
      free(key);
      return false;
    }
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == ',') {
      p->pos++;
      continue;
    }
    if (p->pos < p->len && p->s[p->pos] == close) {
      p->pos++;
      p->depth--;
      return true;
    }
    return fail(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
  }
}

static bool parse_value(parser *p, kata_json *out) {
  skip_ws(p);
  if (p->pos >= p->len) return fail(p, "unexpected end of input");
  char c = p->s[p->pos];
  switch (c) {
    case '{': return parse_container(p, out, true);
    case '[': return parse_container(p, out, false);
    case '"':
      out->type = KATA_JSON_STRING;
      return parse_string(p, &out->string, &out->string_len);
    case 't':
      out->type = KATA_JSON_BOOL;
      out->boolean = true;
      return literal(p, "true");
    case 'f':
      out->type = KATA_JSON_BOOL;
      return literal(p, "false");
    case 'n':
      out->type = KATA_JSON_NULL;
      return literal(p, "null");
    default:
      if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, out);
      return fail(p, "unexpected character");
  }
}

kata_json *kata_json_parse(const char *text, size_t len, char **err) {
  parser p = {.s = text ? text : "", .len = text ? len : 0};
  kata_json *root = calloc(1, sizeof *root);
  if (!root) {
    if (err) *err = NULL;
    return NULL;
  }
  bool ok = parse_value(&p, root);
  if (ok) {
    skip_ws(&p);
    if (p.pos != p.len) ok = fail(&p, "unexpected data after the value");
  }
  if (!ok) {
    kata_json_free(root);
    if (err) *err = p.err;
    else free(p.err);
    return NULL;
  }
  if (err) *err = NULL;
  return root;
}

void kata_json_free(kata_json *v) {
  if (!v) return;
  free_contents(v);
  free(v);
}

const kata_json *kata_json_get(const kata_json *v, const char *key) {
  if (!v || v->type != KATA_JSON_OBJECT || !key) return NULL;
  for (size_t i = 0; i < v->len; i++) {
    if (strcmp(v->keys[i], key) == 0) return &v->items[i];
  }
  return NULL;
}

const kata_json *kata_json_at(const kata_json *v, size_t i) {
  if (!v || v->type != KATA_JSON_ARRAY || i >= v->len) return NULL;
  return &v->items[i];
}

const char *kata_json_string(const kata_json *v) { return v && v->type == KATA_JSON_STRING ? v->string : NULL; }

bool kata_json_is(const kata_json *v, kata_json_type t) { return v && v->type == t; }
