// hello: logs every event it receives, one line each.
//
// The smallest scenario that touches every event: run it with
// `sessionbox run target/guests/c/hello.wasm --http 'GET /hi'` and read the
// log. The C twin of guest-examples/rust/hello.
#include <stdio.h>
#include <stdlib.h>

#include "sessionbox.h"

// Calls and sockets are kept so they stay in their state: dropping a handle
// only forgets it, but a scenario that keeps nothing cannot act on them later.
static sb_call_t *calls;
static size_t ncalls;

static struct socket {
  uint32_t id;
  sb_websocket_t handle;
} *sockets;
static size_t nsockets;

static void *grow(void *array, size_t count, size_t size) {
  void *p = realloc(array, (count + 1) * size);
  if (!p) abort();
  return p;
}

void exports_sessionbox_scenario_app_events_started(
    exports_sessionbox_scenario_app_events_started_event_t *event) {
  sb_logf("started session=%S custom-data=%S", &event->session_id, &event->custom_data);
  // What a guest prints goes to the session log too. A reactor never exits,
  // so nothing flushes stdout unless the scenario does.
  printf("hello from stdout\n");
  fflush(stdout);
  exports_sessionbox_scenario_app_events_started_event_free(event);
}

void exports_sessionbox_scenario_app_events_call_alerting(
    exports_sessionbox_scenario_app_events_call_alerting_event_t *event) {
  sb_logf("call-alerting caller=%S destination=%S display-name=%S headers=%z",
          &event->caller_id, &event->destination, &event->display_name,
          event->headers.len);
  // Not answered: the call stays alerting. The handle is ours to keep; the
  // rest of the event is freed.
  calls = grow(calls, ncalls, sizeof *calls);
  calls[ncalls++] = event->call;
  exports_sessionbox_scenario_app_events_call_alerting_event_free(event);
}

void exports_sessionbox_scenario_app_events_http_request(
    exports_sessionbox_scenario_app_events_http_request_event_t *request,
    sb_response_t *ret) {
  sb_logf("http-request %S %S body=%z", &request->method, &request->path,
          request->body.len);
  sb_buf body = {0};
  sb_appendf(&body, "hello %S %S", &request->method, &request->path);
  sb_respond(ret, 200, "text/plain", &body);
  exports_sessionbox_scenario_app_events_http_request_event_free(request);
}

void exports_sessionbox_scenario_app_events_websocket(
    exports_sessionbox_scenario_app_events_websocket_event_t *event) {
  uint32_t id = sessionbox_scenario_websockets_method_websocket_id(
      sessionbox_scenario_websockets_borrow_websocket(event->socket));
  sb_logf("websocket %S id=%u", &event->path, id);
  sockets = grow(sockets, nsockets, sizeof *sockets);
  sockets[nsockets++] = (struct socket){id, event->socket};
  exports_sessionbox_scenario_app_events_websocket_event_free(event);
}

void exports_sessionbox_scenario_app_events_new_websocket_failed(
    exports_sessionbox_scenario_app_events_websocket_failed_event_t *event) {
  sb_logf("new-websocket-failed %S", &event->reason);
  exports_sessionbox_scenario_app_events_websocket_failed_event_free(event);
}

void exports_sessionbox_scenario_app_events_terminating(void) { sb_logf("terminating"); }

void exports_sessionbox_scenario_app_events_terminated(void) { sb_logf("terminated"); }

void exports_sessionbox_scenario_app_events_timer_fired(uint32_t id) {
  sb_logf("timer-fired %u", id);
}

void exports_sessionbox_scenario_app_events_call_connected(uint32_t call) {
  sb_logf("call-connected %u", call);
}

void exports_sessionbox_scenario_app_events_call_disconnected(uint32_t call) {
  sb_logf("call-disconnected %u", call);
}

void exports_sessionbox_scenario_app_events_call_failed(uint32_t call, uint16_t code,
                                                        scenario_string_t *reason) {
  sb_logf("call-failed %u %u %S", call, code, reason);
  scenario_string_free(reason);
}

void exports_sessionbox_scenario_app_events_call_message_received(uint32_t call,
                                                                  scenario_string_t *text) {
  sb_logf("call-message-received %u %S", call, text);
  scenario_string_free(text);
}

void exports_sessionbox_scenario_app_events_call_tone_received(uint32_t call,
                                                               scenario_string_t *tone) {
  sb_logf("call-tone-received %u %S", call, tone);
  scenario_string_free(tone);
}

void exports_sessionbox_scenario_app_events_call_playback_finished(uint32_t call) {
  sb_logf("call-playback-finished %u", call);
}

void exports_sessionbox_scenario_app_events_websocket_message(uint32_t socket,
                                                              sb_message_t *message) {
  sb_message_t reply;
  sb_buf text = {0};
  if (message->tag == SESSIONBOX_SCENARIO_WEBSOCKETS_MESSAGE_TEXT) {
    sb_logf("websocket-message %u text=%S", socket, &message->val.text);
    sb_appendf(&text, "echo: %S", &message->val.text);
    reply.tag = SESSIONBOX_SCENARIO_WEBSOCKETS_MESSAGE_TEXT;
    reply.val.text = (scenario_string_t){text.ptr, text.len};
  } else {
    sb_logf("websocket-message %u binary=%z", socket, message->val.binary.len);
    reply = *message;  // the same bytes back: send only borrows them
  }
  // Echo it back on the same socket.
  for (size_t i = 0; i < nsockets; i++) {
    if (sockets[i].id != socket) continue;
    sb_refusal_t refusal;
    if (!sessionbox_scenario_websockets_method_websocket_send(
            sessionbox_scenario_websockets_borrow_websocket(sockets[i].handle), &reply,
            &refusal))
      sb_log_refusal(&refusal);
    break;
  }
  sb_buf_free(&text);
  exports_sessionbox_scenario_app_events_message_free(message);
}

void exports_sessionbox_scenario_app_events_websocket_closed(uint32_t socket, uint16_t code,
                                                             scenario_string_t *reason) {
  sb_logf("websocket-closed %u %u %S", socket, code, reason);
  scenario_string_free(reason);
}
