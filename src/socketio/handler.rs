//! Type-erased user handlers, and the rule for running them.
//!
//! Handlers are async closures. Each one is started inline, in packet order, and only what is
//! left of it after its first suspension runs as a spawned task. So a handler that emits or acks
//! before its first `.await` does so in the order the client's packets arrived (the way Node's
//! synchronous listeners behave), while a handler that waits for something never holds up the
//! packets behind it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Waker};

use super::args::Event;
use super::error::{ConnectError, DisconnectReason};
use super::socket::Socket;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Called when a socket has joined a namespace.
pub(crate) type ConnectHandler = Arc<dyn Fn(Socket) -> BoxFuture<()> + Send + Sync>;
/// Called for a named event.
pub(crate) type EventHandler = Arc<dyn Fn(Socket, Event) -> BoxFuture<()> + Send + Sync>;
/// Called for a named event from another server of the cluster.
pub(crate) type ServerEventHandler = Arc<dyn Fn(Event) -> BoxFuture<()> + Send + Sync>;
/// Called before a socket joins; an error refuses the CONNECT.
pub(crate) type Middleware =
    Arc<dyn Fn(Socket) -> BoxFuture<Result<(), ConnectError>> + Send + Sync>;
/// Called once when a socket leaves its namespace.
pub(crate) type DisconnectHandler =
    Arc<dyn Fn(Socket, DisconnectReason) -> BoxFuture<()> + Send + Sync>;

/// Poll `fut` once right here; if it is not finished, hand the rest to the runtime.
///
/// The first poll uses a no-op waker. That is sound because the spawned task polls the future
/// again before it can be woken, and that poll registers the task's real waker.
pub(crate) fn run_inline<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut fut = Box::pin(fut);
    let mut cx = Context::from_waker(Waker::noop());
    if fut.as_mut().poll(&mut cx).is_pending() {
        tokio::spawn(fut);
    }
}
