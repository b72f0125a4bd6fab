//! Acknowledgements both ways: [`Ack`] answers a client's (or another server's) request for
//! one; [`AckFuture`] and [`BroadcastAckFuture`] wait for the answers to ours.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Weak;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::oneshot;

use super::args::Args;
use super::config::Parser;
use super::error::AckError;
use super::lock;
use super::socket::{SocketInner, send_encoded};
use crate::engine::Connection;
use crate::protocol::sio::{self, Packet};
use crate::protocol::value::Value;

/// The client's answer to one of our acks, or why there is none.
pub(crate) type AckResult = Result<Vec<Value>, AckError>;

/// The means to answer a client's event that asked for an acknowledgement.
///
/// Consumed by [`send`](Ack::send); dropping it unanswered sends nothing, as in the reference
/// server.
#[derive(Debug)]
pub struct Ack {
    to: AckTo,
}

#[derive(Debug)]
enum AckTo {
    /// A client's event: the answer is an ACK packet on its connection.
    Client {
        conn: Connection,
        parser: Parser,
        nsp: String,
        id: u64,
    },
    /// Another server's event: the answer goes back to it through the cluster.
    Server(oneshot::Sender<Vec<Value>>),
}

impl Ack {
    pub(crate) fn new(conn: Connection, parser: Parser, nsp: String, id: u64) -> Self {
        Ack {
            to: AckTo::Client {
                conn,
                parser,
                nsp,
                id,
            },
        }
    }

    pub(crate) fn to_server(answer: oneshot::Sender<Vec<Value>>) -> Self {
        Ack {
            to: AckTo::Server(answer),
        }
    }

    /// Send the acknowledgement with these arguments (binary stays binary). If the asker is
    /// already gone there is no one to tell, so nothing happens.
    pub fn send(self, args: impl Into<Args>) {
        match self.to {
            AckTo::Client {
                conn,
                parser,
                nsp,
                id,
            } => {
                let packet = Packet::ack(&nsp, id, args.into().0);
                let _ = send_encoded(&conn, parser, sio::encode(&packet));
            }
            AckTo::Server(answer) => {
                let _ = answer.send(args.into().0);
            }
        }
    }
}

/// Removes a pending ack from its socket when the wait ends or is abandoned, so an ack that
/// never comes does not stay in the table.
struct Pending {
    socket: Weak<SocketInner>,
    id: u64,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(socket) = self.socket.upgrade() {
            lock(&socket.pending_acks).remove(&self.id);
        }
    }
}

/// The client's acknowledgement of one emit. The event is already sent when this value
/// exists; awaiting it waits for the answer, at most for the timeout.
#[must_use = "the event is sent already; await this to get the acknowledgement"]
pub struct AckFuture {
    state: Result<(oneshot::Receiver<AckResult>, Pending), AckError>,
    timeout: Duration,
}

impl AckFuture {
    pub(crate) fn new(
        sent: Result<(u64, oneshot::Receiver<AckResult>, Weak<SocketInner>), AckError>,
        timeout: Duration,
    ) -> Self {
        AckFuture {
            state: sent.map(|(id, rx, socket)| (rx, Pending { socket, id })),
            timeout,
        }
    }

    /// Wait at most `timeout` for the acknowledgement.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl IntoFuture for AckFuture {
    type Output = Result<Vec<Value>, AckError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let (rx, _pending) = self.state?;
            wait(rx, self.timeout).await
        })
    }
}

async fn wait(rx: oneshot::Receiver<AckResult>, timeout: Duration) -> AckResult {
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(AckError::Disconnected),
        Err(_) => Err(AckError::Timeout),
    }
}

/// One socket's answer to a broadcast with acks.
#[derive(Debug, Clone, PartialEq)]
pub struct AckResponse {
    /// The socket that answered (or did not).
    pub socket_id: String,
    /// Its acknowledgement arguments, or why there are none.
    pub result: Result<Vec<Value>, AckError>,
}

/// The answers to a broadcast with acks: resolves when every recipient answered, or at the
/// timeout, with one [`AckResponse`] per recipient. In a cluster it waits for one report from
/// each member of the membership; a member that cannot be reached contributes no answers.
#[must_use = "the event is sent already; await this to get the acknowledgements"]
pub struct BroadcastAckFuture {
    waits: Vec<(String, oneshot::Receiver<AckResult>, Pending)>,
    /// The answers other nodes collect from their sockets.
    remote: Vec<BoxFuture<'static, Vec<AckResponse>>>,
    timeout: Duration,
}

impl BroadcastAckFuture {
    pub(crate) fn new(timeout: Duration) -> Self {
        BroadcastAckFuture {
            waits: Vec::new(),
            remote: Vec::new(),
            timeout,
        }
    }

    pub(crate) fn push(
        &mut self,
        socket_id: String,
        rx: oneshot::Receiver<AckResult>,
        socket: Weak<SocketInner>,
        id: u64,
    ) {
        self.waits.push((socket_id, rx, Pending { socket, id }));
    }

    pub(crate) fn push_remote(&mut self, answers: BoxFuture<'static, Vec<AckResponse>>) {
        self.remote.push(answers);
    }

    /// Wait at most `timeout` for the acknowledgements of this node's sockets. (Other nodes
    /// were told the timeout of the emit when it was sent; set it with
    /// [`BroadcastOperator::timeout`](super::BroadcastOperator::timeout).)
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl IntoFuture for BroadcastAckFuture {
    type Output = Vec<AckResponse>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        let timeout = self.timeout;
        Box::pin(async move {
            // One deadline for all: a slow socket must not extend the others' wait.
            let deadline = tokio::time::Instant::now() + timeout;
            let waits = self
                .waits
                .into_iter()
                .map(|(socket_id, rx, pending)| async move {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let result = wait(rx, left).await;
                    drop(pending);
                    AckResponse { socket_id, result }
                });
            let (mut answers, remote) = futures::future::join(
                futures::future::join_all(waits),
                futures::future::join_all(self.remote),
            )
            .await;
            answers.extend(remote.into_iter().flatten());
            answers
        })
    }
}
