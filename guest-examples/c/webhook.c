// webhook: tells a web service that the session ended.
//
// In `terminating` (which allows exactly one outbound request) it POSTs
// `{"custom_data":"<custom data>","session":"<id>"}` to the URL in the
// app's variable `webhook_url`, authenticated with the secret variable
// `webhook_token`. The URL and the token come from the server's
// configuration, not from the code. The log says how it went, never what
// the token is. The C twin of guest-examples/rust/webhook; the JSON keys
// are in the order serde_json writes them (sorted).
#include <stdlib.h>

#include "sessionbox.h"

// Sends the notification to `url` with `token`; logs how it went.
static void notify(const char *url, const char *token) {
  scenario_string_t id, data;
  sessionbox_scenario_session_id(&id);
  sessionbox_scenario_session_custom_data(&data);
  sb_buf body = {0}, authorization = {0}, error = {0};
  sb_appendf(&body, "{\"custom_data\":%J,\"session\":%J}", &data, &id);
  sb_appendf(&authorization, "Bearer %s", token);
  sb_put(&authorization, "", 1);  // NUL-terminated, for sb_header
  sb_header headers[] = {
      {"content-type", "application/json"},
      {"authorization", (const char *)authorization.ptr},
  };
  sb_http_response answer;
  if (sb_http_request("POST", url, headers, sizeof headers / sizeof *headers, body.ptr,
                      body.len, &answer, &error)) {
    sb_logf("notified %s: %u", url, answer.status);
    sb_buf_free(&answer.body);
  } else {
    sb_logf("webhook failed: %B", &error);
  }
  sb_buf_free(&error);
  sb_buf_free(&authorization);
  sb_buf_free(&body);
  scenario_string_free(&data);
  scenario_string_free(&id);
}

void exports_sessionbox_scenario_app_events_terminating(void) {
  char *url = NULL, *token = NULL;
  sb_refusal_t refusal;
  // A refusal (e.g. no such variable) is logged as its text, as the Rust twin does.
  if (sb_variables_get("webhook_url", &url, &refusal) &&
      sb_variables_get("webhook_token", &token, &refusal)) {
    notify(url, token);
  } else {
    sb_logf("%R", &refusal);
    sessionbox_scenario_types_refusal_free(&refusal);
  }
  free(token);
  free(url);
}
