// call-centre: the everyday flow. It answers a caller, speaks a menu, takes
// a digit, dials an agent and connects the two.
//
// Key 1 dials `sales` and key 2 dials `support`, through the node's SIP
// trunk (in `sessionbox run`, calls are answered in process). Any other key
// repeats the menu. When the agent answers, caller and agent are connected,
// and the conversation is recorded in stereo (the caller left, the agent
// right). If the agent cannot be reached, the caller hears an apology and
// the call ends. When either side hangs up, so does the other, and the
// session ends once the recording is kept. The C twin of
// guest-examples/rust/call-centre.
#include "sessionbox.h"

static const char MENU[] = "Press 1 for sales, or 2 for support.";
static const char SORRY[] = "Sorry, nobody can take your call now. Goodbye.";

// The caller's and the agent's ids, when there is one; their handles are
// kept with sb_calls_keep.
static bool has_caller, has_agent;
static uint32_t caller, agent;
// The apology is playing: the call ends when it finishes.
static bool ending;
// The conversation is being recorded: the session ends once it is kept.
static bool recording;

static bool is_caller(uint32_t id) { return has_caller && caller == id; }
static bool is_agent(uint32_t id) { return has_agent && agent == id; }

static void say_to_caller(const char *text) {
  sessionbox_scenario_calls_borrow_call_t call;
  if (!has_caller || !sb_calls_borrow(caller, &call)) return;
  scenario_string_t said;
  scenario_string_set(&said, text);
  sb_refusal_t refusal;
  if (!sessionbox_scenario_calls_method_call_say(call, &said, NULL, &refusal))
    sb_log_refusal(&refusal);
}

static void apologise(void) {
  ending = true;
  say_to_caller(SORRY);
}

static void dial(const char *team) {
  sb_buf text = {0};
  sb_appendf(&text, "Connecting you to %s.", team);
  sb_put(&text, "", 1);
  say_to_caller((const char *)text.ptr);
  sb_buf_free(&text);

  scenario_string_t number;
  scenario_string_set(&number, team);
  // All none: the trunk's user calls, with no X- headers.
  sessionbox_scenario_calls_dial_options_t options = {0};
  sb_call_t call;
  sb_refusal_t refusal;
  if (sessionbox_scenario_calls_dial(&number, &options, &call, &refusal)) {
    sb_logf("dialing %s", team);
    agent = sessionbox_scenario_calls_method_call_id(sessionbox_scenario_calls_borrow_call(call));
    has_agent = true;
    sb_calls_keep(agent, call);
  } else {
    sb_log_refusal(&refusal);
    apologise();
  }
}

void exports_sessionbox_scenario_app_events_call_alerting(
    exports_sessionbox_scenario_app_events_call_alerting_event_t *event) {
  sessionbox_scenario_calls_borrow_call_t call = sessionbox_scenario_calls_borrow_call(event->call);
  sb_refusal_t refusal;
  if (has_caller) {
    // One caller per session.
    if (!sessionbox_scenario_calls_method_call_reject(call, 486, &refusal))
      sb_log_refusal(&refusal);
    sessionbox_scenario_calls_call_drop_own(event->call);
  } else {
    if (!sessionbox_scenario_calls_method_call_answer(call, &refusal)) sb_log_refusal(&refusal);
    caller = sessionbox_scenario_calls_method_call_id(call);
    has_caller = true;
    sb_calls_keep(caller, event->call);
  }
  exports_sessionbox_scenario_app_events_call_alerting_event_free(event);
}

void exports_sessionbox_scenario_app_events_call_connected(uint32_t id) {
  sessionbox_scenario_calls_borrow_call_t caller_call, agent_call;
  if (is_caller(id)) {
    say_to_caller(MENU);
  } else if (has_caller && has_agent && sb_calls_borrow(caller, &caller_call) &&
             sb_calls_borrow(agent, &agent_call)) {
    sb_refusal_t refusal;
    if (!sessionbox_scenario_media_connect(caller_call, agent_call, &refusal))
      sb_log_refusal(&refusal);
    sb_logf("caller and agent connected");
    sessionbox_scenario_media_recording_options_t options = {.stereo = true, .max_seconds = 3600};
    sessionbox_scenario_media_recording_id_t started;
    if (sessionbox_scenario_media_start_recording(caller_call, &options, &started, &refusal))
      recording = true;
    else
      sb_log_refusal(&refusal);
  }
}

void exports_sessionbox_scenario_app_events_call_tone_received(uint32_t id,
                                                               scenario_string_t *tone) {
  // Once an agent is dialed, key presses are the caller's business with
  // the agent (they are relayed to the agent's phone).
  if (is_caller(id) && !has_agent && !ending) {
    char key = tone->len == 1 ? (char)tone->ptr[0] : '\0';
    if (key == '1') dial("sales");
    else if (key == '2') dial("support");
    else say_to_caller(MENU);
  }
  scenario_string_free(tone);
}

void exports_sessionbox_scenario_app_events_call_failed(uint32_t id, uint16_t code,
                                                        scenario_string_t *reason) {
  if (is_agent(id)) {
    sb_logf("the agent's call failed: %u %S", code, reason);
    has_agent = false;
    sb_calls_forget(agent);
    apologise();
  }
  scenario_string_free(reason);
}

void exports_sessionbox_scenario_app_events_call_playback_finished(uint32_t id) {
  sessionbox_scenario_calls_borrow_call_t call;
  sb_refusal_t refusal;
  if (ending && is_caller(id) && sb_calls_borrow(caller, &call) &&
      !sessionbox_scenario_calls_method_call_hangup(call, &refusal))
    sb_log_refusal(&refusal);
}

void exports_sessionbox_scenario_app_events_call_disconnected(uint32_t id) {
  // The side that hung up goes, and takes the other with it. (The other's
  // own end, which follows, concerns neither any more.)
  bool has_other;
  uint32_t other;
  if (is_caller(id)) {
    has_caller = false;
    has_other = has_agent;
    other = agent;
    has_agent = false;
  } else if (is_agent(id)) {
    has_agent = false;
    has_other = has_caller;
    other = caller;
    has_caller = false;
  } else {
    return;
  }
  sb_calls_forget(id);
  sessionbox_scenario_calls_borrow_call_t call;
  sb_refusal_t refusal;
  if (has_other && sb_calls_borrow(other, &call)) {
    if (!sessionbox_scenario_calls_method_call_hangup(call, &refusal)) sb_log_refusal(&refusal);
    sb_calls_forget(other);
  }
  // The recording ends with the call; the session waits until it is kept.
  if (!recording && !sessionbox_scenario_session_terminate(&refusal))
    sb_log_refusal(&refusal);
}

void exports_sessionbox_scenario_media_events_recording_finished(uint32_t id, uint32_t call,
                                                                 uint32_t duration_ms,
                                                                 scenario_string_t *maybe_error) {
  (void)call;
  if (maybe_error) {
    sb_logf("recording %u not kept: %S", id, maybe_error);
    scenario_string_free(maybe_error);
  } else {
    sb_logf("recording %u kept: %u ms", id, duration_ms);
  }
  recording = false;
  sb_refusal_t refusal;
  if (!has_caller && !sessionbox_scenario_session_terminate(&refusal)) sb_log_refusal(&refusal);
}

void exports_sessionbox_scenario_media_events_call_held(uint32_t id) {
  sb_logf("call %u is on hold", id);
}

void exports_sessionbox_scenario_media_events_call_resumed(uint32_t id) {
  sb_logf("call %u is off hold", id);
}
