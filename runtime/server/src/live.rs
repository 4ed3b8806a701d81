//! The live-session registry: every session from just before it runs until
//! its record is in the history, with what the access URLs need of it.

use std::collections::HashMap;
use std::sync::Mutex;

use sessionbox_host::session::SessionHandle;
use sessionbox_host::sync::MutexExt;

use crate::history::{NewSession, StoredSession};

/// A session that is running. `handle` is None while it is being started.
struct Live {
    handle: Option<SessionHandle>,
    /// The secret half of the session's access token.
    secret: String,
    /// Incoming WebSocket messages are cut off past this.
    websocket_message_bytes: usize,
    /// What the history knows of it.
    row: NewSession,
}

/// What an access token found among the live sessions.
pub(crate) enum Access {
    /// The session, and its WebSocket message limit.
    Granted(SessionHandle, usize),
    /// A live session, but the secret is wrong (or it is still starting).
    Denied,
    /// No live session of that id.
    NotLive,
}

#[derive(Default)]
pub(crate) struct LiveSessions {
    sessions: Mutex<HashMap<String, Live>>,
    /// Told whenever a session is retired (a drain waits on it).
    retired: tokio::sync::Notify,
}

impl LiveSessions {
    /// A session about to run: findable from here on (its finish hook may
    /// retire it at any moment once it runs).
    pub fn starting(&self, row: NewSession, secret: String, websocket_message_bytes: usize) {
        let live = Live {
            handle: None,
            secret,
            websocket_message_bytes,
            row,
        };
        self.sessions.locked().insert(live.row.id.clone(), live);
    }

    /// The session started and runs under `handle`, unless it already
    /// finished and was retired.
    pub fn running(&self, id: &str, handle: &SessionHandle) {
        if let Some(live) = self.sessions.locked().get_mut(id) {
            live.handle = Some(handle.clone());
        }
    }

    /// Forgets a session whose record is in the history (or that never
    /// started).
    pub fn retire(&self, id: &str) {
        self.sessions.locked().remove(id);
        self.retired.notify_waiters();
    }

    /// How many sessions are live.
    pub fn count(&self) -> usize {
        self.sessions.locked().len()
    }

    /// Waits until no session is live.
    pub async fn none_left(&self) {
        loop {
            // Registered before the count is read: a retirement between
            // the two still wakes it.
            let retired = self.retired.notified();
            if self.count() == 0 {
                return;
            }
            retired.await;
        }
    }

    /// A live session, whatever its tenant.
    pub fn handle(&self, id: &str) -> Option<SessionHandle> {
        self.sessions
            .locked()
            .get(id)
            .and_then(|live| live.handle.clone())
    }

    /// A live session of `tenant`'s.
    pub fn of_tenant(&self, tenant: &str, id: &str) -> Option<SessionHandle> {
        self.sessions
            .locked()
            .get(id)
            .filter(|live| live.row.tenant == tenant)
            .and_then(|live| live.handle.clone())
    }

    /// A session of `tenant`'s as a reader of the history sees it: Some if
    /// it is here (None inside if it is another tenant's), None if the
    /// history is where to look.
    pub fn stored(&self, tenant: &str, id: &str) -> Option<Option<StoredSession>> {
        let sessions = self.sessions.locked();
        let live = sessions.get(id)?;
        if live.row.tenant != tenant {
            return Some(None);
        }
        // Finished, with its record on its way to the history.
        let record = live.handle.as_ref().and_then(SessionHandle::record);
        Some(Some(match record {
            Some(record) => StoredSession::finished(&live.row, &record),
            None => StoredSession::live(&live.row),
        }))
    }

    /// What the access token of session `id` with `secret` grants.
    pub fn access(&self, id: &str, secret: &str) -> Access {
        let sessions = self.sessions.locked();
        let Some(live) = sessions.get(id) else {
            return Access::NotLive;
        };
        match &live.handle {
            Some(handle) if constant_time_eq(live.secret.as_bytes(), secret.as_bytes()) => {
                Access::Granted(handle.clone(), live.websocket_message_bytes)
            }
            _ => Access::Denied,
        }
    }

    /// Every running session.
    pub fn handles(&self) -> Vec<SessionHandle> {
        self.sessions
            .locked()
            .values()
            .filter_map(|live| live.handle.clone())
            .collect()
    }
}

/// Compares secrets without leaking, through timing, how much of a guess
/// was right.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}
