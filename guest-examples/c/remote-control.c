// remote-control: a JSON API on the session's access URL.
//
// - `GET /status`: the session id, how many requests it has served
//   (counting this one) and its custom data.
// - `POST /custom-data`: replaces the custom data with the request body.
// - `/stop` (any method): ends the session.
//
// Every request is logged as `<METHOD> <path> -> <status>`. The C twin of
// guest-examples/rust/remote-control; the JSON is written by hand, with
// keys in the order serde_json writes them (sorted).
#include <string.h>

#include "sessionbox.h"

static uint64_t requests;

// Whether the bytes ptr[0..len) are the text `want`.
static int eq(const uint8_t *ptr, size_t len, const char *want) {
  return len == strlen(want) && memcmp(ptr, want, len) == 0;
}

// Routes one request: fills `body` with JSON and returns the status.
static uint16_t route(const exports_sessionbox_scenario_app_events_http_request_event_t *request,
                      sb_buf *body) {
  const scenario_string_t *method = &request->method;
  // Route on the path alone; a query string does not change the route.
  const uint8_t *path = request->path.ptr;
  const uint8_t *query = request->path.len ? memchr(path, '?', request->path.len) : NULL;
  size_t path_len = query ? (size_t)(query - path) : request->path.len;

  if (eq(method->ptr, method->len, "GET") && eq(path, path_len, "/status")) {
    scenario_string_t id, data;
    sessionbox_scenario_session_id(&id);
    sessionbox_scenario_session_custom_data(&data);
    sb_appendf(body, "{\"custom_data\":%J,\"requests\":%U,\"session\":%J}", &data, requests,
               &id);
    scenario_string_free(&id);
    scenario_string_free(&data);
    return 200;
  }
  if (eq(method->ptr, method->len, "POST") && eq(path, path_len, "/custom-data")) {
    // The body as text, invalid UTF-8 replaced (as from_utf8_lossy does).
    sb_buf text = {0};
    sb_put_utf8_lossy(&text, request->body.ptr, request->body.len);
    scenario_string_t data = {text.ptr, text.len};
    sb_refusal_t refusal;
    uint16_t status;
    if (sessionbox_scenario_session_set_custom_data(&data, &refusal)) {
      sb_appendf(body, "{\"custom_data\":%J}", &data);
      status = 200;
    } else {
      // E.g. longer than the host's limit.
      sb_buf error = {0};
      sb_appendf(&error, "%R", &refusal);
      scenario_string_t message = {error.ptr, error.len};
      sb_appendf(body, "{\"error\":%J}", &message);
      sb_buf_free(&error);
      sessionbox_scenario_types_refusal_free(&refusal);
      status = 400;
    }
    sb_buf_free(&text);
    return status;
  }
  if (eq(path, path_len, "/stop")) {
    // The session ends after this handler returns, so the response still
    // goes out.
    sb_refusal_t refusal;
    if (!sessionbox_scenario_session_terminate(&refusal)) sb_log_refusal(&refusal);
    sb_logf("stopping");
    sb_appendf(body, "{\"stopping\":true}");
    return 200;
  }
  sb_buf error = {0};
  sb_appendf(&error, "no route for %S %S", method, &request->path);
  scenario_string_t message = {error.ptr, error.len};
  sb_appendf(body, "{\"error\":%J}", &message);
  sb_buf_free(&error);
  return 404;
}

void exports_sessionbox_scenario_app_events_http_request(
    exports_sessionbox_scenario_app_events_http_request_event_t *request,
    sb_response_t *ret) {
  requests++;
  sb_buf body = {0};
  uint16_t status = route(request, &body);
  sb_logf("%S %S -> %u", &request->method, &request->path, status);
  sb_respond(ret, status, "application/json", &body);
  exports_sessionbox_scenario_app_events_http_request_event_free(request);
}

void exports_sessionbox_scenario_app_events_terminating(void) { sb_logf("terminating"); }

void exports_sessionbox_scenario_app_events_terminated(void) { sb_logf("terminated"); }
