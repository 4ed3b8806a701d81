// visit-counter: counts the visits to every session of the app together.
//
// Each request to the access URL adds 1 to the app's storage key `visits`
// and answers `{"visits":N}`. The increment is atomic on the host, so
// concurrent requests from many sessions all count; a refusal (e.g. the
// storage is unavailable) answers 503 with the refusal's text. The C twin
// of guest-examples/rust/visit-counter.
#include "sessionbox.h"

void exports_sessionbox_scenario_app_events_http_request(
    exports_sessionbox_scenario_app_events_http_request_event_t *request,
    sb_response_t *ret) {
  exports_sessionbox_scenario_app_events_http_request_event_free(request);
  sb_buf body = {0};
  int64_t visits;
  sb_refusal_t refusal;
  if (sb_storage_increment("visits", 1, &visits, &refusal)) {
    sb_appendf(&body, "{\"visits\":%I}", visits);
    sb_respond(ret, 200, "application/json", &body);
  } else {
    sb_appendf(&body, "%R", &refusal);
    sessionbox_scenario_types_refusal_free(&refusal);
    sb_respond(ret, 503, "text/plain", &body);
  }
}
