//! The raw Engine.IO echo of the protocol-suite profile: every message goes back
//! unchanged, text as text and binary as binary.

use std::sync::Arc;

use crate::engine::{Application, CloseReason, Connection, Message, SessionHandler};

/// Echo application.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Application for Echo {
    fn on_open(&self, conn: Connection) -> Arc<dyn SessionHandler> {
        Arc::new(EchoSession { conn })
    }
}

struct EchoSession {
    conn: Connection,
}

impl SessionHandler for EchoSession {
    fn on_message(&self, msg: Message) {
        // A closed session or a full queue already ended the session; nothing to add.
        let _ = self.conn.send(msg);
    }

    fn on_close(&self, _reason: CloseReason) {}
}
