#include "sessionbox.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

// The bindings of the world `sessionbox:c-guest/http` (wit/http.wit):
// wasi:http, used by sb_http_request only.
#include "http.h"

// The name at index `i` of the array `names`, or "?" past its end.
#define NAME_AT(names, i) \
  ((size_t)(i) < sizeof(names) / sizeof *(names) ? (names)[i] : "?")

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

static void put_i64(sb_buf *b, int64_t v) {
  if (v < 0) sb_put(b, "-", 1);
  // Negated as unsigned, so INT64_MIN works too.
  put_u64(b, v < 0 ? -(uint64_t)v : (uint64_t)v);
}

// The enums of wit/deps/scenario-0.2.0/scenario.wit, in WIT order.
static const char *const CAPABILITIES[] = {"logger", "session", "timers", "calls",
                                           "websockets", "http", "storage", "variables"};
static const char *const PHASES[] = {"running", "terminating", "terminated"};
static const char *const REFUSAL_KINDS[] = {"phase", "rule", "quota",
                                            "unknown", "full", "unavailable"};

static void put_refusal(sb_buf *b, const sb_refusal_t *r) {
  put_cstr(b, NAME_AT(CAPABILITIES, r->capability));
  put_cstr(b, " refused in ");
  put_cstr(b, NAME_AT(PHASES, r->phase));
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
      case 'B': {
        const sb_buf *bytes = va_arg(ap, const sb_buf *);
        sb_put(b, bytes->ptr, bytes->len);
        break;
      }
      case 'u': put_u64(b, va_arg(ap, unsigned int)); break;
      case 'U': put_u64(b, va_arg(ap, uint64_t)); break;
      case 'I': put_i64(b, va_arg(ap, int64_t)); break;
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

const char *sb_refusal_kind(const sb_refusal_t *refusal) {
  return NAME_AT(REFUSAL_KINDS, refusal->kind);
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

// A view of a NUL-terminated string as the bindings' string type. Host
// functions only read their arguments, so the const cast is safe.
static scenario_string_t view(const char *s) {
  return (scenario_string_t){(uint8_t *)s, strlen(s)};
}

// A NUL-terminated copy of `bytes` from malloc, as UTF-8 (invalid sequences
// replaced by U+FFFD).
static char *text_copy(const uint8_t *bytes, size_t len) {
  sb_buf b = {0};
  sb_put_utf8_lossy(&b, bytes, len);
  sb_put(&b, "", 1);
  return (char *)b.ptr;
}

bool sb_storage_get(const char *key, sb_buf *value, bool *found, sb_refusal_t *err) {
  scenario_string_t k = view(key);
  scenario_option_list_u8_t got;
  if (!sessionbox_scenario_storage_get(&k, &got, err)) return false;
  *found = got.is_some;
  if (got.is_some) sb_put(value, got.val.ptr, got.val.len);
  scenario_option_list_u8_free(&got);
  return true;
}

bool sb_storage_get_text(const char *key, char **text, sb_refusal_t *err) {
  sb_buf bytes = {0};
  bool found;
  if (!sb_storage_get(key, &bytes, &found, err)) return false;
  *text = found ? text_copy(bytes.ptr, bytes.len) : NULL;
  sb_buf_free(&bytes);
  return true;
}

bool sb_storage_set(const char *key, const void *value, size_t len,
                    const uint32_t *ttl_seconds, sb_refusal_t *err) {
  scenario_string_t k = view(key);
  scenario_list_u8_t v = {(uint8_t *)value, len};
  return sessionbox_scenario_storage_set(&k, &v, (uint32_t *)ttl_seconds, err);
}

bool sb_storage_set_text(const char *key, const char *text, const uint32_t *ttl_seconds,
                         sb_refusal_t *err) {
  return sb_storage_set(key, text, strlen(text), ttl_seconds, err);
}

bool sb_storage_delete(const char *key, bool *existed, sb_refusal_t *err) {
  scenario_string_t k = view(key);
  return sessionbox_scenario_storage_delete(&k, existed, err);
}

bool sb_storage_increment(const char *key, int64_t delta, int64_t *sum, sb_refusal_t *err) {
  scenario_string_t k = view(key);
  return sessionbox_scenario_storage_increment(&k, delta, sum, err);
}

bool sb_storage_compare_and_set(const char *key, const sb_buf *expected, const void *value,
                                size_t len, const uint32_t *ttl_seconds, bool *swapped,
                                sb_refusal_t *err) {
  scenario_string_t k = view(key);
  scenario_list_u8_t want = {expected ? expected->ptr : NULL, expected ? expected->len : 0};
  scenario_list_u8_t v = {(uint8_t *)value, len};
  return sessionbox_scenario_storage_compare_and_set(&k, expected ? &want : NULL, &v,
                                                     (uint32_t *)ttl_seconds, swapped, err);
}

bool sb_storage_list_keys(const char *prefix, const char *after, uint32_t limit,
                          sb_key_page_t *page, sb_refusal_t *err) {
  scenario_string_t p = view(prefix), a = after ? view(after) : (scenario_string_t){0};
  return sessionbox_scenario_storage_list_keys(&p, after ? &a : NULL, limit, page, err);
}

bool sb_storage_each_key(const char *prefix,
                         bool (*visit)(const scenario_string_t *key, void *context),
                         void *context, sb_refusal_t *err) {
  scenario_string_t p = view(prefix);
  scenario_option_string_t after = {0};  // none: from the first key
  for (;;) {
    sb_key_page_t page;
    // Full pages (the most list-keys returns): each one is an operation.
    bool listed = sessionbox_scenario_storage_list_keys(
        &p, after.is_some ? &after.val : NULL, 1000, &page, err);
    scenario_option_string_free(&after);
    if (!listed) return false;
    bool more = true;
    for (size_t i = 0; more && i < page.keys.len; i++) more = visit(&page.keys.ptr[i], context);
    // Keep the cursor; free the rest of the page.
    after = page.next;
    page.next.is_some = false;
    sessionbox_scenario_storage_key_page_free(&page);
    if (!more || !after.is_some) break;
  }
  scenario_option_string_free(&after);
  return true;
}

bool sb_variables_get(const char *name, char **value, sb_refusal_t *err) {
  scenario_string_t n = view(name), got;
  if (!sessionbox_scenario_variables_get(&n, &got, err)) return false;
  *value = text_copy(got.ptr, got.len);
  scenario_string_free(&got);
  return true;
}

// Outbound HTTP: the steps of guest-examples/rust/sdk/src/http.rs, over the
// wasi:http bindings. Resources go children first: a stream before its
// body, a body before its request or response, a pollable before its
// future.

// wasi:http's error codes and header errors, in WIT order, as Rust's Debug
// names them.
static const char *const ERROR_CODES[] = {
    "DnsTimeout", "DnsError", "DestinationNotFound", "DestinationUnavailable",
    "DestinationIpProhibited", "DestinationIpUnroutable", "ConnectionRefused",
    "ConnectionTerminated", "ConnectionTimeout", "ConnectionReadTimeout",
    "ConnectionWriteTimeout", "ConnectionLimitReached", "TlsProtocolError",
    "TlsCertificateError", "TlsAlertReceived", "HttpRequestDenied",
    "HttpRequestLengthRequired", "HttpRequestBodySize", "HttpRequestMethodInvalid",
    "HttpRequestUriInvalid", "HttpRequestUriTooLong", "HttpRequestHeaderSectionSize",
    "HttpRequestHeaderSize", "HttpRequestTrailerSectionSize", "HttpRequestTrailerSize",
    "HttpResponseIncomplete", "HttpResponseHeaderSectionSize", "HttpResponseHeaderSize",
    "HttpResponseBodySize", "HttpResponseTrailerSectionSize", "HttpResponseTrailerSize",
    "HttpResponseTransferCoding", "HttpResponseContentCoding", "HttpResponseTimeout",
    "HttpUpgradeFailed", "HttpProtocolError", "LoopDetected", "ConfigurationError",
    "InternalError"};
static const char *const HEADER_ERRORS[] = {"InvalidSyntax", "Forbidden", "Immutable"};
// The methods of wasi:http's `method` variant before `other`, in WIT order.
static const char *const METHODS[] = {"GET",     "HEAD",    "POST",  "PUT",  "DELETE",
                                      "CONNECT", "OPTIONS", "TRACE", "PATCH"};

static http_string_t http_view(const char *s, size_t len) {
  return (http_string_t){(uint8_t *)s, len};
}

// Appends `ErrorCode::<Name>` and frees the code. Of the payloads only an
// internal error's message is shown, as Rust's Debug shows it.
static void put_error_code(sb_buf *b, wasi_http_types_error_code_t *code) {
  sb_appendf(b, "ErrorCode::%s", NAME_AT(ERROR_CODES, code->tag));
  if (code->tag == WASI_HTTP_TYPES_ERROR_CODE_INTERNAL_ERROR) {
    const http_option_string_t *message = &code->val.internal_error;
    if (message->is_some) {
      sb_appendf(b, "(Some(\"");
      sb_put(b, message->val.ptr, message->val.len);
      sb_appendf(b, "\"))");
    } else {
      sb_appendf(b, "(None)");
    }
  }
  wasi_http_types_error_code_free(code);
}

// Appends why a body stream failed, and drops the error. A failed HTTP body
// stream usually carries an HTTP error code (e.g. the host's response size
// limit); it is preferred to the generic text.
static void put_stream_error(sb_buf *b, wasi_io_streams_stream_error_t *e) {
  if (e->tag == WASI_IO_STREAMS_STREAM_ERROR_CLOSED) {
    sb_appendf(b, "closed early");
    return;
  }
  wasi_io_error_borrow_error_t error = wasi_io_error_borrow_error(e->val.last_operation_failed);
  wasi_http_types_error_code_t code;
  if (wasi_http_types_http_error_code(error, &code)) {
    put_error_code(b, &code);
  } else {
    http_string_t text;
    wasi_io_error_method_error_to_debug_string(error, &text);
    sb_put(b, text.ptr, text.len);
    http_string_free(&text);
  }
  wasi_io_error_error_drop_own(e->val.last_operation_failed);
}

// Sets the request's method, scheme, authority and path and query from
// `url` (absolute: `scheme://authority/path?query`; a fragment never goes
// to the server).
static bool set_target(wasi_http_types_borrow_outgoing_request_t request, const char *method,
                       const char *url, sb_buf *error) {
  const char *separator = strstr(url, "://");
  if (!separator) {
    sb_appendf(error, "not an absolute URL: \"%s\"", url);
    return false;
  }
  const char *rest = separator + 3;
  size_t authority_len = strcspn(rest, "/?#"), end = strcspn(rest, "#");
  if (authority_len == 0) {
    sb_appendf(error, "no host in URL: \"%s\"", url);
    return false;
  }

  wasi_http_types_scheme_t scheme = {.tag = WASI_HTTP_TYPES_SCHEME_OTHER};
  size_t scheme_len = (size_t)(separator - url);
  if (scheme_len == 4 && strncasecmp(url, "http", 4) == 0)
    scheme.tag = WASI_HTTP_TYPES_SCHEME_HTTP;
  else if (scheme_len == 5 && strncasecmp(url, "https", 5) == 0)
    scheme.tag = WASI_HTTP_TYPES_SCHEME_HTTPS;
  else
    scheme.val.other = http_view(url, scheme_len);

  wasi_http_types_method_t m = {.tag = WASI_HTTP_TYPES_METHOD_OTHER,
                                .val.other = http_view(method, strlen(method))};
  for (size_t i = 0; i < sizeof METHODS / sizeof *METHODS; i++)
    if (strcasecmp(method, METHODS[i]) == 0) m.tag = (uint8_t)i;

  sb_buf path = {0};
  if (rest[authority_len] != '/') sb_put(&path, "/", 1);
  sb_put(&path, rest + authority_len, end - authority_len);
  http_string_t authority = http_view(rest, authority_len);
  http_string_t path_with_query = http_view((const char *)path.ptr, path.len);

  const char *invalid = NULL;
  if (!wasi_http_types_method_outgoing_request_set_method(request, &m))
    invalid = "method";
  else if (!wasi_http_types_method_outgoing_request_set_scheme(request, &scheme))
    invalid = "scheme";
  else if (!wasi_http_types_method_outgoing_request_set_authority(request, &authority))
    invalid = "authority";
  else if (!wasi_http_types_method_outgoing_request_set_path_with_query(request, &path_with_query))
    invalid = "path";
  sb_buf_free(&path);
  if (invalid) sb_appendf(error, "invalid %s in %s", invalid, url);
  return !invalid;
}

// Writes `bytes` to the request body and finishes it.
static bool write_body(wasi_http_types_own_outgoing_body_t outgoing, const uint8_t *bytes,
                       size_t len, sb_buf *error) {
  if (len > 0) {
    wasi_http_types_own_output_stream_t stream;
    if (!wasi_http_types_method_outgoing_body_write(
            wasi_http_types_borrow_outgoing_body(outgoing), &stream)) {
      sb_appendf(error, "request body stream unavailable");
      wasi_http_types_outgoing_body_drop_own(outgoing);
      return false;
    }
    bool written = true;
    // wasi:io allows at most 4096 bytes per blocking write.
    for (size_t at = 0; written && at < len; at += 4096) {
      http_list_u8_t chunk = {(uint8_t *)bytes + at, len - at < 4096 ? len - at : 4096};
      wasi_io_streams_stream_error_t e;
      written = wasi_io_streams_method_output_stream_blocking_write_and_flush(
          wasi_io_streams_borrow_output_stream(stream), &chunk, &e);
      if (!written) {
        sb_appendf(error, "request body: ");
        put_stream_error(error, &e);
      }
    }
    wasi_io_streams_output_stream_drop_own(stream);
    if (!written) {
      wasi_http_types_outgoing_body_drop_own(outgoing);
      return false;
    }
  }
  wasi_http_types_error_code_t code;
  if (wasi_http_types_static_outgoing_body_finish(outgoing, NULL, &code)) return true;
  put_error_code(error, &code);
  return false;
}

// Blocks until the response (its head) has arrived; drops the future.
static bool wait_response(wasi_http_types_own_future_incoming_response_t future,
                          wasi_http_types_own_incoming_response_t *response, sb_buf *error) {
  wasi_http_types_borrow_future_incoming_response_t f =
      wasi_http_types_borrow_future_incoming_response(future);
  wasi_http_types_own_pollable_t ready =
      wasi_http_types_method_future_incoming_response_subscribe(f);
  wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
  wasi_io_poll_pollable_drop_own(ready);
  wasi_http_types_result_result_own_incoming_response_error_code_void_t got;
  bool ok = false;
  // Not ready, or taken already: neither can happen on the first get after
  // the block.
  if (!wasi_http_types_method_future_incoming_response_get(f, &got) || got.is_err) {
    sb_appendf(error, "no response");
  } else if (got.val.ok.is_err) {
    put_error_code(error, &got.val.ok.val.err);
  } else {
    *response = got.val.ok.val.ok;
    ok = true;
  }
  wasi_http_types_future_incoming_response_drop_own(future);
  return ok;
}

// Appends everything left in `stream` to `body`.
static bool read_stream(wasi_io_streams_borrow_input_stream_t stream, sb_buf *body,
                        sb_buf *error) {
  for (;;) {
    http_list_u8_t chunk;
    wasi_io_streams_stream_error_t e;
    if (!wasi_io_streams_method_input_stream_blocking_read(stream, 64 * 1024, &chunk, &e)) {
      if (e.tag == WASI_IO_STREAMS_STREAM_ERROR_CLOSED) return true;  // the end
      sb_appendf(error, "response body: ");
      put_stream_error(error, &e);
      return false;
    }
    sb_put(body, chunk.ptr, chunk.len);
    http_list_u8_free(&chunk);
  }
}

// Reads the whole response body into `body`; drops the response.
static bool read_body(wasi_http_types_own_incoming_response_t response, sb_buf *body,
                      sb_buf *error) {
  wasi_http_types_own_incoming_body_t incoming;
  wasi_http_types_own_input_stream_t stream;
  bool ok = false;
  if (!wasi_http_types_method_incoming_response_consume(
          wasi_http_types_borrow_incoming_response(response), &incoming)) {
    sb_appendf(error, "response body unavailable");
  } else {
    if (!wasi_http_types_method_incoming_body_stream(
            wasi_http_types_borrow_incoming_body(incoming), &stream)) {
      sb_appendf(error, "response body stream unavailable");
    } else {
      ok = read_stream(wasi_io_streams_borrow_input_stream(stream), body, error);
      wasi_io_streams_input_stream_drop_own(stream);
    }
    // The trailers go unread.
    wasi_http_types_future_trailers_drop_own(wasi_http_types_static_incoming_body_finish(incoming));
  }
  wasi_http_types_incoming_response_drop_own(response);
  return ok;
}

bool sb_http_request(const char *method, const char *url, const sb_header *headers,
                     size_t nheaders, const void *body, size_t len,
                     sb_http_response *response, sb_buf *error) {
  wasi_http_types_tuple2_field_name_field_value_t *entries =
      malloc((nheaders ? nheaders : 1) * sizeof *entries);
  if (!entries) abort();
  for (size_t i = 0; i < nheaders; i++) {
    entries[i].f0 = http_view(headers[i].name, strlen(headers[i].name));
    entries[i].f1 = (wasi_http_types_field_value_t){(uint8_t *)headers[i].value,
                                                    strlen(headers[i].value)};
  }
  wasi_http_types_list_tuple2_field_name_field_value_t list = {entries, nheaders};
  wasi_http_types_own_fields_t fields;
  wasi_http_types_header_error_t header_error;
  bool valid = wasi_http_types_static_fields_from_list(&list, &fields, &header_error);
  free(entries);
  if (!valid) {
    sb_appendf(error, "invalid header: HeaderError::%s", NAME_AT(HEADER_ERRORS, header_error.tag));
    return false;
  }

  wasi_http_types_own_outgoing_request_t request =
      wasi_http_types_constructor_outgoing_request(fields);
  wasi_http_types_borrow_outgoing_request_t r = wasi_http_types_borrow_outgoing_request(request);
  if (!set_target(r, method, url, error)) {
    wasi_http_types_outgoing_request_drop_own(request);
    return false;
  }
  wasi_http_types_own_outgoing_body_t outgoing;
  if (!wasi_http_types_method_outgoing_request_body(r, &outgoing)) {
    sb_appendf(error, "request body unavailable");
    wasi_http_types_outgoing_request_drop_own(request);
    return false;
  }

  // Send first, then stream the body: the host reads the body only once the
  // request is under way, so writing a large body first could wait forever.
  wasi_http_types_own_future_incoming_response_t future;
  wasi_http_types_error_code_t code;
  if (!wasi_http_outgoing_handler_handle(request, NULL, &future, &code)) {
    wasi_http_types_outgoing_body_drop_own(outgoing);
    put_error_code(error, &code);
    return false;
  }
  sb_buf write_error = {0};
  bool written = write_body(outgoing, body, len, &write_error);
  wasi_http_types_own_incoming_response_t answer;
  // After a broken body stream, the response usually says better why.
  bool answered = wait_response(future, &answer, error);
  if (answered && !written) {
    sb_put(error, write_error.ptr, write_error.len);
    wasi_http_types_incoming_response_drop_own(answer);
  }
  sb_buf_free(&write_error);
  if (!answered || !written) return false;

  response->status = wasi_http_types_method_incoming_response_status(
      wasi_http_types_borrow_incoming_response(answer));
  response->body = (sb_buf){0};
  if (read_body(answer, &response->body, error)) return true;
  sb_buf_free(&response->body);
  return false;
}

bool sb_http_post(const char *url, const char *content_type, const void *body, size_t len,
                  sb_http_response *response, sb_buf *error) {
  sb_header header = {"content-type", content_type};
  return sb_http_request("POST", url, &header, 1, body, len, response, error);
}

// The kept calls: few at a time, so a list searched in order.
static struct kept_call {
  uint32_t id;
  sb_call_t handle;
} *kept_calls;
static size_t kept_count;

static struct kept_call *find_call(uint32_t id) {
  for (size_t i = 0; i < kept_count; i++)
    if (kept_calls[i].id == id) return &kept_calls[i];
  return NULL;
}

void sb_calls_forget(uint32_t id) {
  struct kept_call *c = find_call(id);
  if (!c) return;
  sessionbox_scenario_calls_call_drop_own(c->handle);
  *c = kept_calls[--kept_count];
}

void sb_calls_keep(uint32_t id, sb_call_t handle) {
  sb_calls_forget(id);
  struct kept_call *grown = realloc(kept_calls, (kept_count + 1) * sizeof *kept_calls);
  if (!grown) abort();
  kept_calls = grown;
  kept_calls[kept_count++] = (struct kept_call){id, handle};
}

bool sb_calls_borrow(uint32_t id, sessionbox_scenario_calls_borrow_call_t *call) {
  struct kept_call *c = find_call(id);
  if (c) *call = sessionbox_scenario_calls_borrow_call(c->handle);
  return c != NULL;
}
