// Default event handlers, as in the Rust SDK: each frees its arguments and
// does nothing, and HTTP requests get an empty 404. They are weak symbols,
// so a scenario defines only the events it cares about, of `app-events` and
// of `media-events` alike.
//
// Arguments of an export are the scenario's to free; a resource handle in
// them (a call, a websocket) is the scenario's to keep or drop: dropping it
// only forgets it.
#include "sessionbox.h"

#define EVENT(name) __attribute__((weak)) void exports_sessionbox_scenario_app_events_##name
#define MEDIA_EVENT(name) \
  __attribute__((weak)) void exports_sessionbox_scenario_media_events_##name

EVENT(started)(exports_sessionbox_scenario_app_events_started_event_t *event) {
  exports_sessionbox_scenario_app_events_started_event_free(event);
}

EVENT(call_alerting)(exports_sessionbox_scenario_app_events_call_alerting_event_t *event) {
  sessionbox_scenario_calls_call_drop_own(event->call);
  exports_sessionbox_scenario_app_events_call_alerting_event_free(event);
}

EVENT(http_request)(exports_sessionbox_scenario_app_events_http_request_event_t *request,
                    sb_response_t *ret) {
  exports_sessionbox_scenario_app_events_http_request_event_free(request);
  *ret = (sb_response_t){.status = 404};
}

EVENT(websocket)(exports_sessionbox_scenario_app_events_websocket_event_t *event) {
  sessionbox_scenario_websockets_websocket_drop_own(event->socket);
  exports_sessionbox_scenario_app_events_websocket_event_free(event);
}

EVENT(new_websocket_failed)(exports_sessionbox_scenario_app_events_websocket_failed_event_t *event) {
  exports_sessionbox_scenario_app_events_websocket_failed_event_free(event);
}

EVENT(terminating)(void) {}
EVENT(terminated)(void) {}
EVENT(timer_fired)(uint32_t id) { (void)id; }
EVENT(call_connected)(uint32_t call) { (void)call; }
EVENT(call_disconnected)(uint32_t call) { (void)call; }

EVENT(call_failed)(uint32_t call, uint16_t code, scenario_string_t *reason) {
  (void)call, (void)code;
  scenario_string_free(reason);
}

EVENT(call_message_received)(uint32_t call, scenario_string_t *text) {
  (void)call;
  scenario_string_free(text);
}

EVENT(call_tone_received)(uint32_t call, scenario_string_t *tone) {
  (void)call;
  scenario_string_free(tone);
}

EVENT(call_playback_finished)(uint32_t call) { (void)call; }

EVENT(websocket_message)(uint32_t socket,
                         exports_sessionbox_scenario_app_events_message_t *message) {
  (void)socket;
  exports_sessionbox_scenario_app_events_message_free(message);
}

EVENT(websocket_closed)(uint32_t socket, uint16_t code, scenario_string_t *reason) {
  (void)socket, (void)code;
  scenario_string_free(reason);
}

MEDIA_EVENT(call_held)(uint32_t call) { (void)call; }
MEDIA_EVENT(call_resumed)(uint32_t call) { (void)call; }

MEDIA_EVENT(recording_finished)(uint32_t recording, uint32_t call, uint32_t duration_ms,
                                scenario_string_t *maybe_error) {
  (void)recording, (void)call, (void)duration_ms;
  if (maybe_error) scenario_string_free(maybe_error);
}

MEDIA_EVENT(stream_ended)(uint32_t id, uint32_t call, scenario_string_t *reason) {
  (void)id, (void)call;
  scenario_string_free(reason);
}
