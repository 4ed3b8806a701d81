"""hello: logs every event it receives, one line each.

The smallest scenario that touches every event: run it with
`sessionbox run target/guests/python/hello.wasm --memory-mib 64 --http 'GET /hi'`
and read the log.
"""

from componentize_py_types import Err
from wit_world.imports.websockets import Message_Binary, Message_Text

from sessionbox import Scenario, log, refusal_text, response


class AppEvents(Scenario):
    def __init__(self):
        # Calls and sockets are kept so they stay in their state: dropping the
        # handle only forgets it, but a scenario that keeps nothing cannot act
        # on them later.
        self.calls = []
        self.sockets = []

    def started(self, event):
        log(f"started session={event.session_id} custom-data={event.custom_data}")
        # What a guest prints goes to the session log too.
        print("hello from stdout")

    def call_alerting(self, event):
        log(
            f"call-alerting caller={event.caller_id} destination={event.destination} "
            f"display-name={event.display_name} headers={len(event.headers)}"
        )
        # Not answered: the call stays alerting.
        self.calls.append(event.call)

    def http_request(self, request):
        log(f"http-request {request.method} {request.path} body={len(request.body)}")
        return response(200, f"hello {request.method} {request.path}", "text/plain")

    def websocket(self, event):
        log(f"websocket {event.path} id={event.socket.id()}")
        self.sockets.append(event.socket)

    def new_websocket_failed(self, event):
        log(f"new-websocket-failed {event.reason}")

    def terminating(self):
        log("terminating")

    def terminated(self):
        log("terminated")

    def timer_fired(self, id):
        log(f"timer-fired {id}")

    def call_connected(self, call):
        log(f"call-connected {call}")

    def call_disconnected(self, call):
        log(f"call-disconnected {call}")

    def call_failed(self, call, code, reason):
        log(f"call-failed {call} {code} {reason}")

    def call_message_received(self, call, text):
        log(f"call-message-received {call} {text}")

    def call_tone_received(self, call, tone):
        log(f"call-tone-received {call} {tone}")

    def call_playback_finished(self, call):
        log(f"call-playback-finished {call}")

    def websocket_message(self, socket, message):
        if isinstance(message, Message_Text):
            log(f"websocket-message {socket} text={message.value}")
            reply = Message_Text(f"echo: {message.value}")
        else:
            log(f"websocket-message {socket} binary={len(message.value)}")
            reply = Message_Binary(message.value)
        # Echo it back on the same socket.
        ws = next((ws for ws in self.sockets if ws.id() == socket), None)
        if ws is not None:
            try:
                ws.send(reply)
            except Err as error:
                log(f"refused: {refusal_text(error)}")

    def websocket_closed(self, socket, code, reason):
        log(f"websocket-closed {socket} {code} {reason}")
