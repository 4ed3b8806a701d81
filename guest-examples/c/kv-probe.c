// kv-probe: the conformance probe of `storage` and `variables`. Every
// language has one, and they answer byte for byte alike.
//
// Each request's body is one command, its words separated by single
// spaces; the answer is `200 text/plain`, one line:
//
//   set KEY VALUE [TTL]                            ok
//   get KEY                                        value VALUE | none
//   del KEY                                        deleted | absent
//   incr KEY TIMES (TIMES >= 1 increments by 1)    ok LAST
//   cas KEY EXPECTED VALUE (EXPECTED `-`: absent)  swapped | lost
//   list PREFIX LIMIT [AFTER] (PREFIX `-`: empty)  keys K1,K2 next NEXT (`-`: last page)
//   var NAME                                       value V
//   logvar NAME (logs `the value is V`)            ok
//   stop (terminates the session)                  ok
//
// A refusal answers `refused KIND: REASON`; anything else is `400 unknown
// command`. In `terminating` it sets `saved-in-terminating` and logs
// `terminating: <answer>`; in `terminated` it reads it back and logs
// `terminated: <answer>`. The C twin of guest-examples/rust/kv-probe.
#include <stdlib.h>
#include <string.h>

#include "sessionbox.h"

// Written in `terminating`, read in `terminated`.
static const char SAVED_KEY[] = "saved-in-terminating";

// Each command appends its answer to `answer`.

// Appends `refused KIND: REASON` and frees the refusal.
static void refused(sb_buf *answer, sb_refusal_t *refusal) {
  sb_appendf(answer, "refused %s: %S", sb_refusal_kind(refusal), &refusal->reason);
  sessionbox_scenario_types_refusal_free(refusal);
}

static void set(sb_buf *answer, const char *key, const char *value, const uint32_t *ttl) {
  sb_refusal_t refusal;
  if (sb_storage_set_text(key, value, ttl, &refusal))
    sb_appendf(answer, "ok");
  else
    refused(answer, &refusal);
}

static void get(sb_buf *answer, const char *key) {
  sb_buf value = {0};
  bool found;
  sb_refusal_t refusal;
  if (!sb_storage_get(key, &value, &found, &refusal)) {
    refused(answer, &refusal);
  } else if (!found) {
    sb_appendf(answer, "none");
  } else {
    sb_appendf(answer, "value ");
    sb_put_utf8_lossy(answer, value.ptr, value.len);
  }
  sb_buf_free(&value);
}

static void del(sb_buf *answer, const char *key) {
  bool existed;
  sb_refusal_t refusal;
  if (sb_storage_delete(key, &existed, &refusal))
    sb_appendf(answer, existed ? "deleted" : "absent");
  else
    refused(answer, &refusal);
}

// Stops at the first refusal; otherwise the last sum is the answer.
static void incr(sb_buf *answer, const char *key, uint32_t times) {
  int64_t last = 0;
  sb_refusal_t refusal;
  for (uint32_t i = 0; i < times; i++) {
    if (!sb_storage_increment(key, 1, &last, &refusal)) {
      refused(answer, &refusal);
      return;
    }
  }
  sb_appendf(answer, "ok %I", last);
}

// `expected` NULL: the key must be absent.
static void cas(sb_buf *answer, const char *key, const char *expected, const char *value) {
  sb_buf want = {0};
  if (expected) sb_put(&want, expected, strlen(expected));
  bool swapped;
  sb_refusal_t refusal;
  if (sb_storage_compare_and_set(key, expected ? &want : NULL, value, strlen(value), NULL,
                                 &swapped, &refusal))
    sb_appendf(answer, swapped ? "swapped" : "lost");
  else
    refused(answer, &refusal);
  sb_buf_free(&want);
}

static void list(sb_buf *answer, const char *prefix, uint32_t limit, const char *after) {
  sb_key_page_t page;
  sb_refusal_t refusal;
  if (!sb_storage_list_keys(prefix, after, limit, &page, &refusal)) {
    refused(answer, &refusal);
    return;
  }
  sb_appendf(answer, "keys ");
  for (size_t i = 0; i < page.keys.len; i++)
    sb_appendf(answer, i ? ",%S" : "%S", &page.keys.ptr[i]);
  if (page.next.is_some)
    sb_appendf(answer, " next %S", &page.next.val);
  else
    sb_appendf(answer, " next -");
  sessionbox_scenario_storage_key_page_free(&page);
}

// With `to_log`, logs the value instead of answering it.
static void var(sb_buf *answer, const char *name, bool to_log) {
  char *value;
  sb_refusal_t refusal;
  if (!sb_variables_get(name, &value, &refusal)) {
    refused(answer, &refusal);
    return;
  }
  if (to_log) {
    // The host shows a secret's value as `[secret]` in the log.
    sb_logf("the value is %s", value);
    sb_appendf(answer, "ok");
  } else {
    sb_appendf(answer, "value %s", value);
  }
  free(value);
}

static void stop(sb_buf *answer) {
  sb_refusal_t refusal;
  if (sessionbox_scenario_session_terminate(&refusal))
    sb_appendf(answer, "ok");
  else
    refused(answer, &refusal);
}

// Parses a decimal u32 as Rust's str::parse does: an optional `+`, then
// digits, no overflow.
static bool parse_u32(const char *s, uint32_t *out) {
  if (*s == '+') s++;
  if (!*s) return false;
  uint64_t v = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return false;
    v = v * 10 + (uint64_t)(*s - '0');
    if (v > UINT32_MAX) return false;
  }
  *out = (uint32_t)v;
  return true;
}

static bool is(const char *word, const char *command) { return strcmp(word, command) == 0; }

// Runs the command of `n` words; false when it is none (a malformed number
// too), with nothing run.
static bool run(char **w, size_t n, sb_buf *answer) {
  uint32_t number;
  if (n == 3 && is(w[0], "set"))
    set(answer, w[1], w[2], NULL);
  else if (n == 4 && is(w[0], "set") && parse_u32(w[3], &number))
    set(answer, w[1], w[2], &number);
  else if (n == 2 && is(w[0], "get"))
    get(answer, w[1]);
  else if (n == 2 && is(w[0], "del"))
    del(answer, w[1]);
  else if (n == 3 && is(w[0], "incr") && parse_u32(w[2], &number) && number > 0)
    incr(answer, w[1], number);
  else if (n == 4 && is(w[0], "cas"))
    cas(answer, w[1], is(w[2], "-") ? NULL : w[2], w[3]);
  else if ((n == 3 || n == 4) && is(w[0], "list") && parse_u32(w[2], &number))
    // `-` stands for the empty prefix, which a space-separated line cannot carry.
    list(answer, is(w[1], "-") ? "" : w[1], number, n == 4 ? w[3] : NULL);
  else if (n == 2 && is(w[0], "var"))
    var(answer, w[1], false);
  else if (n == 2 && is(w[0], "logvar"))
    var(answer, w[1], true);
  else if (n == 1 && is(w[0], "stop"))
    stop(answer);
  else
    return false;
  return true;
}

// The most words a command has.
#define MAX_WORDS 4

void exports_sessionbox_scenario_app_events_http_request(
    exports_sessionbox_scenario_app_events_http_request_event_t *request,
    sb_response_t *ret) {
  // The body as NUL-terminated text (invalid UTF-8 replaced, as
  // from_utf8_lossy does), split in place at each space.
  sb_buf line = {0};
  sb_put_utf8_lossy(&line, request->body.ptr, request->body.len);
  sb_put(&line, "", 1);
  exports_sessionbox_scenario_app_events_http_request_event_free(request);
  char *words[MAX_WORDS];
  size_t n = 0;
  for (char *word = (char *)line.ptr; word; n++) {
    char *space = strchr(word, ' ');
    if (space) *space = '\0';
    if (n < MAX_WORDS) words[n] = word;
    word = space ? space + 1 : NULL;
  }

  sb_buf answer = {0};
  if (n <= MAX_WORDS && run(words, n, &answer)) {
    sb_respond(ret, 200, "text/plain", &answer);
  } else {
    sb_appendf(&answer, "unknown command");
    sb_respond(ret, 400, "text/plain", &answer);
  }
  sb_buf_free(&line);
}

void exports_sessionbox_scenario_app_events_terminating(void) {
  sb_buf answer = {0};
  set(&answer, SAVED_KEY, "yes", NULL);
  sb_logf("terminating: %B", &answer);
  sb_buf_free(&answer);
}

void exports_sessionbox_scenario_app_events_terminated(void) {
  sb_buf answer = {0};
  get(&answer, SAVED_KEY);
  sb_logf("terminated: %B", &answer);
  sb_buf_free(&answer);
}
