#include "sessionbox.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void sb_put(sb_buf *b, const void *bytes, size_t len) {
  if (len == 0) return;
  if (b->len + len > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 64;
    while (cap < b->len + len) cap *= 2;
    uint8_t *p = realloc(b->ptr, cap);
    if (!p) abort();
    b->ptr = p;
    b->cap = cap;
  }
  memcpy(b->ptr + b->len, bytes, len);
  b->len += len;
}

void sb_buf_free(sb_buf *b) {
  free(b->ptr);
  b->ptr = NULL;
  b->len = b->cap = 0;
}

static void put_cstr(sb_buf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void put_u64(sb_buf *b, uint64_t v) {
  char digits[20];
  size_t n = 0;
  do {
    digits[sizeof digits - 1 - n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  sb_put(b, digits + sizeof digits - n, n);
}

static const char *const CAPABILITIES[] = {"logger", "session", "timers",
                                           "calls", "websockets", "http"};
static const char *const PHASES[] = {"running", "terminating", "terminated"};

static void put_refusal(sb_buf *b, const sb_refusal_t *r) {
  put_cstr(b, r->capability < 6 ? CAPABILITIES[r->capability] : "?");
  put_cstr(b, " refused in ");
  put_cstr(b, r->phase < 3 ? PHASES[r->phase] : "?");
  put_cstr(b, ": ");
  sb_put(b, r->reason.ptr, r->reason.len);
}

static void vappendf(sb_buf *b, const char *fmt, va_list ap) {
  for (const char *p = fmt; *p; p++) {
    const char *start = p;
    while (*p && *p != '%') p++;
    sb_put(b, start, (size_t)(p - start));
    if (!*p) break;
    switch (*++p) {
      case 's': put_cstr(b, va_arg(ap, const char *)); break;
      case 'S': {
        const scenario_string_t *s = va_arg(ap, const scenario_string_t *);
        sb_put(b, s->ptr, s->len);
        break;
      }
      case 'u': put_u64(b, va_arg(ap, unsigned int)); break;
      case 'U': put_u64(b, va_arg(ap, uint64_t)); break;
      case 'z': put_u64(b, va_arg(ap, size_t)); break;
      case 'R': put_refusal(b, va_arg(ap, const sb_refusal_t *)); break;
      case 'J': {
        const scenario_string_t *s = va_arg(ap, const scenario_string_t *);
        sb_put_json_string(b, s->ptr, s->len);
        break;
      }
      case '%': sb_put(b, "%", 1); break;
      default: abort();  // a typo in a format string
    }
  }
}

void sb_appendf(sb_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vappendf(b, fmt, ap);
  va_end(ap);
}

void sb_logf(const char *fmt, ...) {
  sb_buf b = {0};
  va_list ap;
  va_start(ap, fmt);
  vappendf(&b, fmt, ap);
  va_end(ap);
  // logger.write borrows its argument: the buffer stays ours to free.
  scenario_string_t line = {b.ptr, b.len};
  sessionbox_scenario_logger_write(&line);
  sb_buf_free(&b);
}

void sb_log_refusal(sb_refusal_t *refusal) {
  sb_logf("refused: %R", refusal);
  sessionbox_scenario_types_refusal_free(refusal);
}

// The length of the valid UTF-8 sequence at s[0..len), or 0 if there is
// none; then *bad is how many bytes one U+FFFD replaces (the maximal valid
// prefix, at least 1), as in Rust's from_utf8_lossy.
static size_t utf8_seq(const uint8_t *s, size_t len, size_t *bad) {
  uint8_t c = s[0];
  size_t width;
  uint8_t lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) width = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    width = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    width = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    *bad = 1;
    return 0;
  }
  for (size_t i = 1; i < width; i++) {
    uint8_t min = i == 1 ? lo : 0x80, max = i == 1 ? hi : 0xBF;
    if (i >= len || s[i] < min || s[i] > max) {
      *bad = i;
      return 0;
    }
  }
  return width;
}

void sb_put_utf8_lossy(sb_buf *b, const uint8_t *bytes, size_t len) {
  size_t i = 0;
  while (i < len) {
    size_t bad = 0, n = utf8_seq(bytes + i, len - i, &bad);
    if (n) {
      sb_put(b, bytes + i, n);
      i += n;
    } else {
      sb_put(b, "\xEF\xBF\xBD", 3);
      i += bad;
    }
  }
}

void sb_put_json_string(sb_buf *b, const uint8_t *bytes, size_t len) {
  static const char hex[] = "0123456789abcdef";
  sb_put(b, "\"", 1);
  for (size_t i = 0; i < len; i++) {
    uint8_t c = bytes[i];
    switch (c) {
      case '"': sb_put(b, "\\\"", 2); break;
      case '\\': sb_put(b, "\\\\", 2); break;
      case '\b': sb_put(b, "\\b", 2); break;
      case '\f': sb_put(b, "\\f", 2); break;
      case '\n': sb_put(b, "\\n", 2); break;
      case '\r': sb_put(b, "\\r", 2); break;
      case '\t': sb_put(b, "\\t", 2); break;
      default:
        if (c < 0x20) {
          char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
          sb_put(b, esc, 6);
        } else {
          sb_put(b, &c, 1);
        }
    }
  }
  sb_put(b, "\"", 1);
}

void sb_respond(sb_response_t *ret, uint16_t status, const char *content_type,
                sb_buf *body) {
  // Everything in the response must be heap memory: after the host has
  // read it, the generated post-return function frees each non-empty
  // string and list.
  exports_sessionbox_scenario_app_events_header_t *h = malloc(sizeof *h);
  if (!h) abort();
  scenario_string_dup(&h->name, "content-type");
  scenario_string_dup(&h->value, content_type);
  ret->status = status;
  ret->headers.ptr = h;
  ret->headers.len = 1;
  if (body->len == 0) sb_buf_free(body);  // post-return frees only len > 0
  ret->body.ptr = body->ptr;
  ret->body.len = body->len;
  *body = (sb_buf){0};
}
