//! Records the sessions of this node in the replicated registry: a wrapper around the
//! application of a mount that writes `CreateSession` when a session opens, `SetTransport`
//! when it upgrades to a websocket, and `DeleteSession` when it closes.
//!
//! The writes do not hold up the handshake: the sid's owner hint routes a brand-new session
//! before the registry has it, and the registry batches concurrent writes into one Raft entry.
//! They are queued in order, so a session's creation precedes what its sockets record (see
//! `adapter`) and its deletion follows it.

use std::sync::Arc;

use crate::engine::{
    Application, CloseReason, Connection, HandshakeInfo, Message, SessionHandler, Transport,
};
use crate::registry::{self, Command, NodeId, Registry};

/// An application whose sessions are recorded in the registry.
pub struct Recorded {
    inner: Arc<dyn Application>,
    registry: Registry,
    node: NodeId,
}

impl Recorded {
    /// Wrap `inner`, recording its sessions as owned by `node`.
    pub fn new(inner: Arc<dyn Application>, registry: Registry, node: NodeId) -> Self {
        Recorded {
            inner,
            registry,
            node,
        }
    }
}

impl Application for Recorded {
    fn allow_request(&self, request: &HandshakeInfo) -> bool {
        self.inner.allow_request(request)
    }

    fn on_open(&self, conn: Connection) -> Arc<dyn SessionHandler> {
        let sid = conn.sid().to_owned();
        let transport = match conn.transport() {
            Transport::Polling => registry::Transport::Polling,
            Transport::Websocket => registry::Transport::Websocket,
        };
        self.registry.record(Command::CreateSession {
            sid: sid.clone(),
            owner: self.node,
            transport,
        });
        Arc::new(RecordedSession {
            inner: self.inner.on_open(conn),
            registry: self.registry.clone(),
            sid,
        })
    }

    /// The session is recorded already; who owns it now is for the move to commit.
    fn on_move_in(&self, conn: Connection, state: Option<Vec<u8>>) -> Arc<dyn SessionHandler> {
        let sid = conn.sid().to_owned();
        Arc::new(RecordedSession {
            inner: self.inner.on_move_in(conn, state),
            registry: self.registry.clone(),
            sid,
        })
    }

    fn adoption(&self, sid: &str) -> futures::future::BoxFuture<'static, Option<Vec<u8>>> {
        self.inner.adoption(sid)
    }
}

struct RecordedSession {
    inner: Arc<dyn SessionHandler>,
    registry: Registry,
    sid: String,
}

impl SessionHandler for RecordedSession {
    fn on_message(&self, msg: Message) {
        self.inner.on_message(msg);
    }

    fn on_poll(&self) {
        self.inner.on_poll();
    }

    fn on_upgrade(&self) {
        self.inner.on_upgrade();
        self.registry.record_as_owner(Command::SetTransport {
            sid: self.sid.clone(),
            transport: registry::Transport::Websocket,
        });
    }

    /// The session lives on elsewhere: its record stays.
    fn on_move(&self) -> Option<Vec<u8>> {
        self.inner.on_move()
    }

    fn movable(&self) -> bool {
        self.inner.movable()
    }

    fn on_close(&self, reason: CloseReason) {
        self.inner.on_close(reason);
        self.registry.record_as_owner(Command::DeleteSession {
            sid: self.sid.clone(),
        });
    }
}
