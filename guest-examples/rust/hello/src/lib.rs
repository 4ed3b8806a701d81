//! hello: logs every event it receives, one line each.
//!
//! The smallest scenario that touches every event: run it with
//! `sessionbox run target/guests/hello.wasm --http 'GET /hi'` and read the log.

use sessionbox_guest::{
    Call, CallAlertingEvent, CallId, HttpRequestEvent, HttpResponse, Message, Scenario, SocketId,
    StartedEvent, TimerId, Websocket, WebsocketEvent, WebsocketFailedEvent, export_scenario, log,
};

#[derive(Default)]
struct Hello {
    // Calls and sockets are kept so they stay in their state: dropping the
    // handle only forgets it, but a scenario that keeps nothing cannot act
    // on them later.
    calls: Vec<Call>,
    sockets: Vec<Websocket>,
}

impl Scenario for Hello {
    fn started(&mut self, event: StartedEvent) {
        log(&format!(
            "started session={} custom-data={}",
            event.session_id, event.custom_data
        ));
        // What a guest prints goes to the session log too.
        println!("hello from stdout");
    }

    fn call_alerting(&mut self, event: CallAlertingEvent) {
        log(&format!(
            "call-alerting caller={} destination={} display-name={} headers={}",
            event.caller_id,
            event.destination,
            event.display_name,
            event.headers.len()
        ));
        // Not answered: the call stays alerting.
        self.calls.push(event.call);
    }

    fn http_request(&mut self, request: HttpRequestEvent) -> HttpResponse {
        log(&format!(
            "http-request {} {} body={}",
            request.method,
            request.path,
            request.body.len()
        ));
        HttpResponse::text(200, format!("hello {} {}", request.method, request.path))
    }

    fn websocket(&mut self, event: WebsocketEvent) {
        log(&format!(
            "websocket {} id={}",
            event.path,
            event.socket.id()
        ));
        self.sockets.push(event.socket);
    }

    fn new_websocket_failed(&mut self, event: WebsocketFailedEvent) {
        log(&format!("new-websocket-failed {}", event.reason));
    }

    fn terminating(&mut self) {
        log("terminating");
    }

    fn terminated(&mut self) {
        log("terminated");
    }

    fn timer_fired(&mut self, id: TimerId) {
        log(&format!("timer-fired {id}"));
    }

    fn call_connected(&mut self, call: CallId) {
        log(&format!("call-connected {call}"));
    }

    fn call_disconnected(&mut self, call: CallId) {
        log(&format!("call-disconnected {call}"));
    }

    fn call_failed(&mut self, call: CallId, code: u16, reason: String) {
        log(&format!("call-failed {call} {code} {reason}"));
    }

    fn call_message_received(&mut self, call: CallId, text: String) {
        log(&format!("call-message-received {call} {text}"));
    }

    fn call_tone_received(&mut self, call: CallId, tone: String) {
        log(&format!("call-tone-received {call} {tone}"));
    }

    fn call_playback_finished(&mut self, call: CallId) {
        log(&format!("call-playback-finished {call}"));
    }

    fn websocket_message(&mut self, socket: SocketId, message: Message) {
        let reply = match &message {
            Message::Text(text) => {
                log(&format!("websocket-message {socket} text={text}"));
                Message::Text(format!("echo: {text}"))
            }
            Message::Binary(bytes) => {
                log(&format!(
                    "websocket-message {socket} binary={}",
                    bytes.len()
                ));
                Message::Binary(bytes.clone())
            }
        };
        // Echo it back on the same socket.
        if let Some(ws) = self.sockets.iter().find(|ws| ws.id() == socket)
            && let Err(refusal) = ws.send(&reply)
        {
            log(&format!("refused: {refusal}"));
        }
    }

    fn websocket_closed(&mut self, socket: SocketId, code: u16, reason: String) {
        log(&format!("websocket-closed {socket} {code} {reason}"));
    }
}

export_scenario!(Hello);
