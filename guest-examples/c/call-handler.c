// call-handler: answers an incoming call, plays a prompt, hangs up.
//
// Call actions are signalling-level: each returns at once, and its outcome
// arrives later as a call event naming the call's id. So the scenario keeps
// its calls by id and moves each one on from the event handlers:
// alerting -> answer -> connected -> say -> playback finished -> hang up ->
// disconnected. With nothing left to do, the session idles into
// `terminating`. The C twin of guest-examples/rust/call-handler.
#include "sessionbox.h"

void exports_sessionbox_scenario_app_events_call_alerting(
    exports_sessionbox_scenario_app_events_call_alerting_event_t *event) {
  sb_logf("answering call from %S", &event->caller_id);
  sb_refusal_t refusal;
  // Refusals are ordinary values: log them and carry on.
  if (!sessionbox_scenario_calls_method_call_answer(
          sessionbox_scenario_calls_borrow_call(event->call), &refusal))
    sb_log_refusal(&refusal);
  uint32_t id = sessionbox_scenario_calls_method_call_id(
      sessionbox_scenario_calls_borrow_call(event->call));
  sb_calls_keep(id, event->call);
  exports_sessionbox_scenario_app_events_call_alerting_event_free(event);
}

void exports_sessionbox_scenario_app_events_call_connected(uint32_t id) {
  sb_logf("connected");
  sessionbox_scenario_calls_borrow_call_t call;
  if (!sb_calls_borrow(id, &call)) return;
  scenario_string_t text, language;
  scenario_string_set(&text, "Thanks for calling Sessionbox. Goodbye.");
  scenario_string_set(&language, "en-US");
  sb_refusal_t refusal;
  if (!sessionbox_scenario_calls_method_call_say(call, &text, &language, &refusal))
    sb_log_refusal(&refusal);
}

void exports_sessionbox_scenario_app_events_call_playback_finished(uint32_t id) {
  sb_logf("prompt finished, hanging up");
  sessionbox_scenario_calls_borrow_call_t call;
  if (!sb_calls_borrow(id, &call)) return;
  sb_refusal_t refusal;
  if (!sessionbox_scenario_calls_method_call_hangup(call, &refusal))
    sb_log_refusal(&refusal);
}

void exports_sessionbox_scenario_app_events_call_disconnected(uint32_t id) {
  sb_logf("call ended");
  sb_calls_forget(id);
}

void exports_sessionbox_scenario_app_events_call_failed(uint32_t id, uint16_t code,
                                                        scenario_string_t *reason) {
  (void)code;
  // Never connected (e.g. the caller gave up): nothing left to do.
  sb_calls_forget(id);
  scenario_string_free(reason);
}

void exports_sessionbox_scenario_app_events_terminating(void) { sb_logf("terminating"); }

void exports_sessionbox_scenario_app_events_terminated(void) { sb_logf("terminated"); }
