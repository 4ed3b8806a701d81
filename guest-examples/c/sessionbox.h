// Small helpers shared by the C scenarios: a growable byte buffer with a
// tiny formatter, log lines, refusals, JSON strings, HTTP responses,
// storage, variables and outbound HTTP.
//
// Strings in the bindings (`scenario_string_t`) are UTF-8 bytes with a
// length and no terminating NUL, so they are appended with `%S`, never `%s`.
#ifndef SESSIONBOX_H
#define SESSIONBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scenario.h"

// Shorter names for the generated types the scenarios use most.
typedef sessionbox_scenario_types_refusal_t sb_refusal_t;
typedef exports_sessionbox_scenario_app_events_http_response_t sb_response_t;
typedef sessionbox_scenario_calls_own_call_t sb_call_t;
typedef sessionbox_scenario_websockets_own_websocket_t sb_websocket_t;
typedef sessionbox_scenario_websockets_message_t sb_message_t;
typedef sessionbox_scenario_storage_key_page_t sb_key_page_t;

// A growable byte buffer; start it as `sb_buf b = {0};`, free it with
// sb_buf_free (or hand its bytes over with sb_respond).
typedef struct {
  uint8_t *ptr;
  size_t len;
  size_t cap;
} sb_buf;

void sb_put(sb_buf *b, const void *bytes, size_t len);
void sb_buf_free(sb_buf *b);

// Appends formatted text. Directives:
//   %s  const char *          (NUL-terminated)
//   %S  const scenario_string_t *
//   %B  const sb_buf *         (its bytes as they are)
//   %u  unsigned int           (also uint16_t / uint32_t ids and codes)
//   %U  uint64_t
//   %I  int64_t
//   %z  size_t
//   %R  const sb_refusal_t *   as `{capability} refused in {phase}: {reason}`
//   %J  const scenario_string_t *, as a JSON string literal (with quotes)
//   %%  a percent sign
void sb_appendf(sb_buf *b, const char *fmt, ...);

// Writes one formatted line to the session log (logger.write).
void sb_logf(const char *fmt, ...);

// Logs `refused: <refusal>` and frees the refusal.
void sb_log_refusal(sb_refusal_t *refusal);

// The refusal's kind as WIT spells it: "phase", "rule", "quota", "unknown",
// "full" or "unavailable".
const char *sb_refusal_kind(const sb_refusal_t *refusal);

// Appends `bytes` converted to UTF-8 as Rust's String::from_utf8_lossy
// does: each invalid sequence becomes U+FFFD.
void sb_put_utf8_lossy(sb_buf *b, const uint8_t *bytes, size_t len);

// Appends `bytes` (UTF-8) as a JSON string literal, escaped as serde_json
// escapes: \" \\ \b \f \n \r \t, other control characters as \u00XX.
void sb_put_json_string(sb_buf *b, const uint8_t *bytes, size_t len);

// Fills an http-response: `status`, one content-type header and `body`,
// whose bytes it takes over (the bindings' post-return frees them all).
void sb_respond(sb_response_t *ret, uint16_t status, const char *content_type,
                sb_buf *body);

// The calls a scenario keeps, by id: their events name a call by its id,
// and actions need its handle.
//
// Keeps `handle` under `id`, replacing (and dropping) an older handle.
void sb_calls_keep(uint32_t id, sb_call_t handle);
// The handle kept under `id`, borrowed for an action; false if none.
bool sb_calls_borrow(uint32_t id, sessionbox_scenario_calls_borrow_call_t *call);
// Drops the handle kept under `id` (which only forgets the call).
void sb_calls_forget(uint32_t id);

// Storage: key-value pairs shared by every session of the app, kept across
// sessions (interface `storage`; see wit/deps/scenario-0.2.0/scenario.wit
// for its limits).
//
// Keys are NUL-terminated text; values are bytes. As with the host
// functions, each returns true when it worked and false when the host
// refused, with the refusal in *err (log it with sb_log_refusal or free it
// with sessionbox_scenario_types_refusal_free). A `ttl_seconds` of NULL
// keeps the key until it is deleted; otherwise it expires that long from
// now.

// Appends the value of `key` to *value; *found says whether it had one.
bool sb_storage_get(const char *key, sb_buf *value, bool *found, sb_refusal_t *err);

// The value of `key` as a NUL-terminated string from malloc (the caller
// frees it), invalid UTF-8 replaced by U+FFFD; NULL when `key` has no value.
bool sb_storage_get_text(const char *key, char **text, sb_refusal_t *err);

bool sb_storage_set(const char *key, const void *value, size_t len,
                    const uint32_t *ttl_seconds, sb_refusal_t *err);
bool sb_storage_set_text(const char *key, const char *text, const uint32_t *ttl_seconds,
                         sb_refusal_t *err);

// Deletes `key`; *existed says whether it was there.
bool sb_storage_delete(const char *key, bool *existed, sb_refusal_t *err);

// Adds `delta` to the integer at `key` (an absent key counts as 0) and sets
// *sum to the result, atomically: increments from many sessions all count.
bool sb_storage_increment(const char *key, int64_t delta, int64_t *sum, sb_refusal_t *err);

// Sets `key` to `value` only if its value is `expected` now (NULL: only if
// it is absent), atomically. *swapped is false when another writer got
// there first.
bool sb_storage_compare_and_set(const char *key, const sb_buf *expected, const void *value,
                                size_t len, const uint32_t *ttl_seconds, bool *swapped,
                                sb_refusal_t *err);

// One page of the keys that start with `prefix`, in byte order: at most
// `limit` (at most 1,000), after the key `after` (NULL: from the first).
// page->next.is_some when there are more, from page->next.val on. Free the
// page with sessionbox_scenario_storage_key_page_free.
bool sb_storage_list_keys(const char *prefix, const char *after, uint32_t limit,
                          sb_key_page_t *page, sb_refusal_t *err);

// Calls visit(key, context) for every key that starts with `prefix`, in
// byte order, fetching full pages as it goes; stops early (and returns
// true) when visit returns false. Each page counts as one of the handler's
// storage operations.
bool sb_storage_each_key(const char *prefix,
                         bool (*visit)(const scenario_string_t *key, void *context),
                         void *context, sb_refusal_t *err);

// The app's variable or secret `name` (interface `variables`) as a
// NUL-terminated string from malloc (the caller frees it); refused
// (`unknown`) for a name the app does not have. A secret's value shows as
// `[secret]` wherever the scenario writes it to the log.
bool sb_variables_get(const char *name, char **value, sb_refusal_t *err);

// Outbound HTTP over the standard wasi:http/outgoing-handler. The host
// meters requests like every other capability: while running up to a
// per-session limit, in `terminating` exactly one, in `terminated` none.
// Its refusal is wasi:http's HttpRequestDenied error code.

typedef struct {
  const char *name;
  const char *value;
} sb_header;

typedef struct {
  uint16_t status;
  sb_buf body;  // the whole body; free it with sb_buf_free
} sb_http_response;

// Sends a request and blocks the handler until the whole response has
// arrived. `url` is absolute (`scheme://authority/path?query`). On failure
// it returns false and appends why to *error: a wasi:http error code under
// its name, as the Rust SDK prints it (`ErrorCode::HttpRequestDenied`,
// `ErrorCode::ConnectionRefused`, ...), or what was wrong with the request.
bool sb_http_request(const char *method, const char *url, const sb_header *headers,
                     size_t nheaders, const void *body, size_t len,
                     sb_http_response *response, sb_buf *error);

// `POST url` with a body of the given content type.
bool sb_http_post(const char *url, const char *content_type, const void *body, size_t len,
                  sb_http_response *response, sb_buf *error);

#endif
