// ivr-menu: a phone menu whose prompts live in the app's storage.
//
// It answers every incoming call and, once connected, says the text at key
// `menu`. A key press `<digit>` says the text at `menu/<digit>`; `#` hangs
// up, and the end of the call ends the session. Operators change the menu
// by writing those keys through the storage API, with no new upload. The C
// twin of guest-examples/rust/ivr-menu.
#include <stdlib.h>

#include "sessionbox.h"

// Said when the app's storage has no `menu`.
static const char DEFAULT_MENU[] = "Press 1 for sales, 2 for support, # to hang up.";
// Said for a digit with no `menu/<digit>`.
static const char NO_SUCH_OPTION[] = "No such option.";

// Says the text at `key` on the call, or `fallback` when there is none. A
// refused read is logged and counts as absent, so the caller still hears
// the fallback.
static void say_prompt(uint32_t id, const char *key, const char *fallback) {
  char *prompt;
  sb_refusal_t refusal;
  if (!sb_storage_get_text(key, &prompt, &refusal)) {
    sb_log_refusal(&refusal);
    prompt = NULL;
  }
  sessionbox_scenario_calls_borrow_call_t call;
  if (sb_calls_borrow(id, &call)) {
    scenario_string_t text;
    scenario_string_set(&text, prompt ? prompt : fallback);
    if (!sessionbox_scenario_calls_method_call_say(call, &text, NULL, &refusal))
      sb_log_refusal(&refusal);
  }
  free(prompt);
}

void exports_sessionbox_scenario_app_events_call_alerting(
    exports_sessionbox_scenario_app_events_call_alerting_event_t *event) {
  sb_refusal_t refusal;
  if (!sessionbox_scenario_calls_method_call_answer(
          sessionbox_scenario_calls_borrow_call(event->call), &refusal))
    sb_log_refusal(&refusal);
  uint32_t id = sessionbox_scenario_calls_method_call_id(
      sessionbox_scenario_calls_borrow_call(event->call));
  sb_calls_keep(id, event->call);
  exports_sessionbox_scenario_app_events_call_alerting_event_free(event);
}

void exports_sessionbox_scenario_app_events_call_connected(uint32_t id) {
  say_prompt(id, "menu", DEFAULT_MENU);
}

void exports_sessionbox_scenario_app_events_call_tone_received(uint32_t id,
                                                               scenario_string_t *tone) {
  char key = tone->len == 1 ? (char)tone->ptr[0] : '\0';
  if (key == '#') {
    sessionbox_scenario_calls_borrow_call_t call;
    sb_refusal_t refusal;
    if (sb_calls_borrow(id, &call) &&
        !sessionbox_scenario_calls_method_call_hangup(call, &refusal))
      sb_log_refusal(&refusal);
  } else if (key >= '0' && key <= '9') {
    char option[] = "menu/?";
    option[sizeof option - 2] = key;
    say_prompt(id, option, NO_SUCH_OPTION);
  }
  // `*` and A-D are not part of this menu.
  scenario_string_free(tone);
}

void exports_sessionbox_scenario_app_events_call_disconnected(uint32_t id) {
  sb_calls_forget(id);
  sb_refusal_t refusal;
  if (!sessionbox_scenario_session_terminate(&refusal)) sb_log_refusal(&refusal);
}
