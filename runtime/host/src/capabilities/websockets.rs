//! `websockets`: connections opened on the session's access URL.
//!
//! The connection itself (an HTTP upgrade) belongs to whoever accepted it,
//! e.g. the management API; the session holds a command channel to it. What
//! the client sends arrives as events; what the scenario sends goes down the
//! channel. VoxEngine's rule holds here: at most calls + 3 open sockets.

use std::collections::BTreeMap;

use tokio::sync::mpsc;
use wasmtime::component::Resource;

use super::{SessionState, running_only};
use crate::bindings::sessionbox::scenario::websockets;
use crate::bindings::{Capability, Message, Refusal};

pub type SocketId = u32;

/// The host side of a guest's `websocket` resource.
pub struct SocketHandle {
    pub id: SocketId,
}

/// What the scenario asks of a connection.
#[derive(Debug, Clone)]
pub enum SocketCommand {
    Send(Message),
    Close { code: u16, reason: String },
}

#[derive(Default)]
pub(crate) struct Sockets {
    open: BTreeMap<SocketId, mpsc::Sender<SocketCommand>>,
}

impl Sockets {
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    pub fn is_open(&self, id: SocketId) -> bool {
        self.open.contains_key(&id)
    }

    pub fn add(&mut self, id: SocketId, commands: mpsc::Sender<SocketCommand>) {
        self.open.insert(id, commands);
    }

    /// Forgets a socket the client closed. False if it was not open.
    pub fn on_closed(&mut self, id: SocketId) -> bool {
        self.open.remove(&id).is_some()
    }

    /// Closes every socket (entering Terminating: the session's sockets end
    /// with it).
    pub fn close_all(&mut self) {
        for (_, commands) in std::mem::take(&mut self.open) {
            let _ = commands.try_send(SocketCommand::Close {
                code: 1001,
                reason: "session terminating".into(),
            });
        }
    }
}

/// The size of a message's payload in bytes.
pub(crate) fn message_len(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(bytes) => bytes.len(),
    }
}

impl SessionState {
    fn socket_command(
        &mut self,
        socket: &Resource<SocketHandle>,
        command: SocketCommand,
    ) -> wasmtime::Result<Result<(), Refusal>> {
        let id = self.table.get(socket)?.id;
        let limit = self.limits.websocket_message_bytes;
        let rule = running_only(self.phase(), "websockets").and_then(|()| {
            let Some(commands) = self.sockets.open.get(&id) else {
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
            commands.try_send(command.clone()).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    format!("websocket {id} is not keeping up: its send queue is full")
                }
                mpsc::error::TrySendError::Closed(_) => format!("websocket {id} is closed"),
            })
        });
        let outcome = self.permit(Capability::Websockets, rule);
        if outcome.is_ok() && matches!(command, SocketCommand::Close { .. }) {
            self.sockets.open.remove(&id);
        }
        Ok(outcome)
    }
}

impl websockets::Host for SessionState {}

impl websockets::HostWebsocket for SessionState {
    fn id(&mut self, socket: Resource<SocketHandle>) -> wasmtime::Result<SocketId> {
        Ok(self.table.get(&socket)?.id)
    }

    fn send(
        &mut self,
        socket: Resource<SocketHandle>,
        message: Message,
    ) -> wasmtime::Result<Result<(), Refusal>> {
        self.socket_command(&socket, SocketCommand::Send(message))
    }

    fn close(
        &mut self,
        socket: Resource<SocketHandle>,
        code: u16,
        reason: String,
    ) -> wasmtime::Result<Result<(), Refusal>> {
        self.socket_command(&socket, SocketCommand::Close { code, reason })
    }

    /// The guest let go of its handle; the connection stays open until
    /// either side closes it.
    fn drop(&mut self, socket: Resource<SocketHandle>) -> wasmtime::Result<()> {
        self.table.delete(socket)?;
        Ok(())
    }
}
