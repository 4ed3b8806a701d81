// Small helpers shared by the C scenarios: a growable byte buffer with a
// tiny formatter, log lines, refusals, JSON strings and HTTP responses.
//
// Strings in the bindings (`scenario_string_t`) are UTF-8 bytes with a
// length and no terminating NUL, so they are appended with `%S`, never `%s`.
#ifndef SESSIONBOX_H
#define SESSIONBOX_H

#include <stddef.h>
#include <stdint.h>

#include "scenario.h"

// Shorter names for the generated types the scenarios use most.
typedef sessionbox_scenario_types_refusal_t sb_refusal_t;
typedef exports_sessionbox_scenario_app_events_http_response_t sb_response_t;
typedef sessionbox_scenario_calls_own_call_t sb_call_t;
typedef sessionbox_scenario_websockets_own_websocket_t sb_websocket_t;
typedef sessionbox_scenario_websockets_message_t sb_message_t;

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
//   %u  unsigned int           (also uint16_t / uint32_t ids and codes)
//   %U  uint64_t
//   %z  size_t
//   %R  const sb_refusal_t *   as `{capability} refused in {phase}: {reason}`
//   %J  const scenario_string_t *, as a JSON string literal (with quotes)
//   %%  a percent sign
void sb_appendf(sb_buf *b, const char *fmt, ...);

// Writes one formatted line to the session log (logger.write).
void sb_logf(const char *fmt, ...);

// Logs `refused: <refusal>` and frees the refusal.
void sb_log_refusal(sb_refusal_t *refusal);

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

#endif
