//! Event arguments as they go out ([`Args`]) and as they come in ([`Event`]).

use serde::de::DeserializeOwned;

use super::ack::Ack;
use crate::protocol::value::{Value, ValueError};

/// The arguments of an emit or an ack: zero or more values.
///
/// Converts from a single [`Value`] or `serde_json::Value` (one argument), from a
/// `Vec<Value>` (each element is an argument), from `()` (no argument) and from strings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args(pub Vec<Value>);

impl From<Vec<Value>> for Args {
    fn from(v: Vec<Value>) -> Self {
        Args(v)
    }
}

impl From<Value> for Args {
    fn from(v: Value) -> Self {
        Args(vec![v])
    }
}

impl From<serde_json::Value> for Args {
    fn from(v: serde_json::Value) -> Self {
        Args(vec![Value::from(v)])
    }
}

impl From<()> for Args {
    fn from(_: ()) -> Self {
        Args(Vec::new())
    }
}

impl From<&str> for Args {
    fn from(s: &str) -> Self {
        Args(vec![Value::from(s)])
    }
}

impl From<String> for Args {
    fn from(s: String) -> Self {
        Args(vec![Value::from(s)])
    }
}

/// An event received from a client.
#[derive(Debug)]
pub struct Event {
    /// The event name (the first element of the packet's array).
    pub name: String,
    /// The arguments after the name, binary attachments already in place.
    pub args: Vec<Value>,
    /// Present when the client asked for an acknowledgement.
    pub ack: Option<Ack>,
}

impl Event {
    /// Argument `i`, if present.
    pub fn arg(&self, i: usize) -> Option<&Value> {
        self.args.get(i)
    }

    /// Argument `i` deserialized into `T`.
    pub fn parse<T: DeserializeOwned>(&self, i: usize) -> Result<T, ValueError> {
        self.args.get(i).unwrap_or(&Value::Null).deserialize_into()
    }
}
