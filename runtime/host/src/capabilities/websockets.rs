//! `websockets`: connections opened on the session's access URL.
//!
//! The connection itself (an HTTP upgrade) belongs to whoever accepted it,
//! e.g. the management API; the session holds a command channel to it. What
//! the client does arrives as [`SocketEvent`]s, which this capability admits
//! (VoxEngine's rule: at most calls + 3 open sockets); what the scenario
//! sends goes down the channel. Only while running: Terminating closes every
//! socket.

use std::collections::BTreeMap;

use tokio::sync::{mpsc, oneshot};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable, ResourceTableError};

use super::{Common, Factor, Gate, Phases, SessionContext, WasiStore};
use crate::bindings::scenario::websockets;
use crate::bindings::v0_1::sessionbox::scenario as v0_1;
use crate::bindings::{
    Capability, Header, Message, Refusal, SocketHandle, SocketId, WebsocketEvent,
    WebsocketFailedEvent,
};
use crate::guest::GuestCall;

const PHASES: Phases = Phases::Running {
    in_terminating: "websockets ended when the session began terminating",
};

/// What the scenario asks of a connection.
#[derive(Debug, Clone)]
pub enum SocketCommand {
    Send(Message),
    Close { code: u16, reason: String },
}

/// What a client did with a socket on the access URL.
pub enum SocketEvent {
    /// It asks to open one; `accepted` hears whether the session took it
    /// (or the reason it did not).
    Opened {
        socket: SocketId,
        path: String,
        headers: Vec<Header>,
        commands: mpsc::Sender<SocketCommand>,
        accepted: oneshot::Sender<Result<(), String>>,
    },
    Message {
        socket: SocketId,
        message: Message,
    },
    Closed {
        socket: SocketId,
        code: u16,
        reason: String,
    },
}

pub struct Websockets {
    open: BTreeMap<SocketId, mpsc::Sender<SocketCommand>>,
    /// Sockets allowed beyond the session's live calls.
    beyond_calls: usize,
    message_bytes: usize,
}

impl Websockets {
    /// What a client did, as the scenario sees it: a socket opened (or
    /// refused: NewWebSocketFailed), a message on an open socket, an open
    /// socket closed. Events on sockets that are not open are dropped.
    /// `live_calls` sets how many sockets may be open. A full resource
    /// table is an error: it ends the session.
    pub fn admit(
        &mut self,
        event: SocketEvent,
        live_calls: usize,
        table: &mut ResourceTable,
    ) -> Result<Option<GuestCall>, ResourceTableError> {
        Ok(match event {
            SocketEvent::Opened {
                socket,
                path,
                headers,
                commands,
                accepted,
            } => {
                let allowed = live_calls + self.beyond_calls;
                if self.open.len() >= allowed {
                    let reason = format!(
                        "{allowed} incoming WebSockets are open, the limit (calls in the session + {})",
                        self.beyond_calls
                    );
                    let _ = accepted.send(Err(reason.clone()));
                    return Ok(Some(GuestCall::NewWebsocketFailed(WebsocketFailedEvent {
                        reason,
                    })));
                }
                self.open.insert(socket, commands);
                let _ = accepted.send(Ok(()));
                let handle = table.push(SocketHandle { id: socket })?;
                let event = WebsocketEvent {
                    socket: handle,
                    path,
                    headers,
                };
                Some(GuestCall::Websocket { socket, event })
            }
            SocketEvent::Message { socket, message } => self
                .open
                .contains_key(&socket)
                .then_some(GuestCall::WebsocketMessage { socket, message }),
            SocketEvent::Closed {
                socket,
                code,
                reason,
            } => self
                .open
                .remove(&socket)
                .map(|_| GuestCall::WebsocketClosed {
                    socket,
                    code,
                    reason,
                }),
        })
    }

    /// Checks `command` against the socket and the limits, then hands it to
    /// the connection.
    fn command(
        &mut self,
        gate: &Gate,
        id: SocketId,
        command: SocketCommand,
    ) -> Result<(), Refusal> {
        let limit = self.message_bytes;
        gate.admit(Capability::Websockets, PHASES, || {
            let Some(commands) = self.open.get(&id) else {
                return Err(format!("websocket {id} is closed"));
            };
            if let SocketCommand::Send(message) = &command
                && message_len(message) > limit
            {
                return Err(format!(
                    "websocket messages are limited to {limit} bytes (got {})",
                    message_len(message)
                ));
            }
            let closes = matches!(command, SocketCommand::Close { .. });
            commands.try_send(command).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    format!("websocket {id} is not keeping up: its send queue is full")
                }
                mpsc::error::TrySendError::Closed(_) => format!("websocket {id} is closed"),
            })?;
            if closes {
                self.open.remove(&id);
            }
            Ok(())
        })
    }
}

/// The size of a message's payload in bytes.
fn message_len(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(bytes) => bytes.len(),
    }
}

pub struct WebsocketsView<'a> {
    sockets: &'a mut Websockets,
    gate: &'a Gate,
    table: &'a mut ResourceTable,
}

impl HasData for Websockets {
    type Data<'a> = WebsocketsView<'a>;
}

impl Factor for Websockets {
    type View = Websockets;

    fn new(cx: &SessionContext<'_>) -> Self {
        Websockets {
            open: BTreeMap::new(),
            beyond_calls: cx.limits.websockets_beyond_calls,
            message_bytes: cx.limits.websocket_message_bytes,
        }
    }

    fn view<'a>(&'a mut self, common: Common<'a>) -> WebsocketsView<'a> {
        WebsocketsView {
            sockets: self,
            gate: common.gate,
            table: common.table,
        }
    }

    fn link<T: WasiStore>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> WebsocketsView<'_>,
    ) -> wasmtime::Result<()> {
        websockets::add_to_linker::<T, Websockets>(linker, get)?;
        v0_1::websockets::add_to_linker::<T, Websockets>(linker, get)
    }

    /// Closes every socket: the session's sockets end with it.
    fn terminating(&mut self) {
        for (_, commands) in std::mem::take(&mut self.open) {
            let _ = commands.try_send(SocketCommand::Close {
                code: 1001,
                reason: "session terminating".into(),
            });
        }
    }
}

impl WebsocketsView<'_> {
    fn command(
        &mut self,
        socket: &Resource<SocketHandle>,
        command: SocketCommand,
    ) -> wasmtime::Result<Result<(), Refusal>> {
        let id = self.table.get(socket)?.id;
        Ok(self.sockets.command(self.gate, id, command))
    }
}

impl websockets::Host for WebsocketsView<'_> {}

impl websockets::HostWebsocket for WebsocketsView<'_> {
    fn id(&mut self, socket: Resource<SocketHandle>) -> wasmtime::Result<SocketId> {
        Ok(self.table.get(&socket)?.id)
    }

    fn send(
        &mut self,
        socket: Resource<SocketHandle>,
        message: Message,
    ) -> wasmtime::Result<Result<(), Refusal>> {
        self.command(&socket, SocketCommand::Send(message))
    }

    fn close(
        &mut self,
        socket: Resource<SocketHandle>,
        code: u16,
        reason: String,
    ) -> wasmtime::Result<Result<(), Refusal>> {
        self.command(&socket, SocketCommand::Close { code, reason })
    }

    /// The guest let go of its handle; the connection stays open until
    /// either side closes it.
    fn drop(&mut self, socket: Resource<SocketHandle>) -> wasmtime::Result<()> {
        self.table.delete(socket)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::fixture::Fixture;
    use crate::limits::Limits;

    struct Client {
        accepted: oneshot::Receiver<Result<(), String>>,
        commands: mpsc::Receiver<SocketCommand>,
    }

    fn open(
        sockets: &mut Websockets,
        socket: SocketId,
        live_calls: usize,
        table: &mut ResourceTable,
    ) -> (Option<GuestCall>, Client) {
        let (commands, commands_rx) = mpsc::channel(4);
        let (accepted, accepted_rx) = oneshot::channel();
        let event = SocketEvent::Opened {
            socket,
            path: "/".into(),
            headers: Vec::new(),
            commands,
            accepted,
        };
        let call = sockets.admit(event, live_calls, table).unwrap();
        let client = Client {
            accepted: accepted_rx,
            commands: commands_rx,
        };
        (call, client)
    }

    #[test]
    fn at_most_calls_plus_three_sockets_are_open() {
        let fixture = Fixture::new(Limits::default());
        let mut sockets = Websockets::new(&fixture.context());
        let mut table = ResourceTable::new();
        let mut clients = Vec::new();
        for socket in 1..=3 {
            let (call, mut client) = open(&mut sockets, socket, 0, &mut table);
            assert!(matches!(call, Some(GuestCall::Websocket { socket: s, .. }) if s == socket));
            assert_eq!(client.accepted.try_recv(), Ok(Ok(())));
            clients.push(client);
        }
        let (call, mut refused) = open(&mut sockets, 4, 0, &mut table);
        let reason = "3 incoming WebSockets are open, the limit (calls in the session + 3)";
        assert!(matches!(call, Some(GuestCall::NewWebsocketFailed(e)) if e.reason == reason));
        assert_eq!(refused.accepted.try_recv(), Ok(Err(reason.into())));
        // A live call makes room for one more.
        let (call, _client) = open(&mut sockets, 5, 1, &mut table);
        assert!(matches!(call, Some(GuestCall::Websocket { socket: 5, .. })));
    }

    #[test]
    fn only_open_sockets_have_events_and_terminating_closes_them() {
        let fixture = Fixture::new(Limits::default());
        let mut sockets = Websockets::new(&fixture.context());
        let mut table = ResourceTable::new();
        let (_, mut first) = open(&mut sockets, 1, 0, &mut table);
        let (_, _second) = open(&mut sockets, 2, 0, &mut table);
        let message = |socket| SocketEvent::Message {
            socket,
            message: Message::Text("hi".into()),
        };
        let closed = |socket| SocketEvent::Closed {
            socket,
            code: 1000,
            reason: String::new(),
        };
        let mut admit = |event| sockets.admit(event, 0, &mut table).unwrap();
        assert!(admit(message(9)).is_none(), "no socket 9");
        assert!(matches!(
            admit(message(1)),
            Some(GuestCall::WebsocketMessage { socket: 1, .. })
        ));
        assert!(matches!(
            admit(closed(2)),
            Some(GuestCall::WebsocketClosed { socket: 2, .. })
        ));
        assert!(admit(closed(2)).is_none(), "closed once");
        assert!(admit(message(2)).is_none(), "nothing after it closed");

        let gate = fixture.gate();
        let long = Message::Text("x".repeat(sockets.message_bytes + 1));
        let refused = sockets.command(&gate, 1, SocketCommand::Send(long));
        assert!(
            refused
                .unwrap_err()
                .reason
                .starts_with("websocket messages are limited to")
        );
        sockets.terminating();
        assert!(matches!(
            first.commands.try_recv(),
            Ok(SocketCommand::Close { code: 1001, .. })
        ));
        let gone = sockets.command(&gate, 1, SocketCommand::Send(Message::Text("x".into())));
        assert_eq!(gone.unwrap_err().reason, "websocket 1 is closed");
    }
}
