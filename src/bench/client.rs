//! The load generator's Socket.IO client: Engine.IO v4 over long-polling (hyper), websocket
//! (tungstenite) or polling upgraded to websocket, speaking Socket.IO v5 to the `/` namespace.
//!
//! It behaves like the official client where the server can tell: one parked GET at a time, one
//! POST at a time carrying everything queued, pongs for pings, the `io` cookie resent when the
//! server set one. It can bind its connections to a chosen loopback source address, so that
//! balancers hashing the client address spread the load. Every failure is a [`BenchError`] whose
//! kind is counted by the scenarios.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::protocol::eio::{self, Packet as EioPacket};
use crate::protocol::sio::{self, Decoder, Packet, PacketType};
use crate::protocol::value::Value;

/// How the client carries its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Long-polling only.
    Polling,
    /// A websocket from the start.
    Websocket,
    /// A polling handshake, then an upgrade to websocket (what browsers do by default).
    Upgrade,
}

impl Transport {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Polling => "polling",
            Transport::Websocket => "websocket",
            Transport::Upgrade => "upgrade",
        }
    }
}

impl std::str::FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "polling" => Ok(Transport::Polling),
            "websocket" => Ok(Transport::Websocket),
            "upgrade" => Ok(Transport::Upgrade),
            other => Err(format!(
                "unknown transport {other:?} (polling, websocket, upgrade)"
            )),
        }
    }
}

/// Why a client operation failed; [`BenchError::kind`] names the counter it goes to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BenchError {
    /// `400 {"code":1,"message":"Session ID unknown"}`: the request reached a server that does
    /// not know the session. The number a sessionless cluster must keep at zero.
    #[error("Session ID unknown")]
    SessionIdUnknown,
    /// Any other non-200 HTTP answer.
    #[error("HTTP {0}")]
    Http(u16),
    /// Connecting, sending or receiving failed.
    #[error("I/O: {0}")]
    Io(String),
    /// No answer within the operation's deadline.
    #[error("timed out")]
    Timeout,
    /// The server sent something this client cannot make sense of.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The session ended (close packet, websocket closed, the namespace refused).
    #[error("session closed")]
    Closed,
}

impl BenchError {
    /// The counter this error goes to.
    pub fn kind(&self) -> &'static str {
        match self {
            BenchError::SessionIdUnknown => "session_id_unknown",
            BenchError::Http(_) => "http_error",
            BenchError::Io(_) => "io",
            BenchError::Timeout => "timeout",
            BenchError::Protocol(_) => "protocol",
            BenchError::Closed => "closed",
        }
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server (or balancer) address.
    pub addr: SocketAddr,
    /// The Engine.IO path, e.g. `/socket.io/`.
    pub path: String,
    /// The transport.
    pub transport: Transport,
    /// Bind the client's connections to this source address (a loopback address).
    pub source: Option<IpAddr>,
    /// Deadline of the handshake and of each request that expects an answer.
    pub timeout: Duration,
}

/// The first error of a client's background tasks, and a signal for whoever waits on the
/// client meanwhile.
#[derive(Default)]
struct Failure {
    first: Mutex<Option<BenchError>>,
    signal: tokio::sync::Notify,
}

impl Failure {
    fn set(&self, error: BenchError) {
        self.first
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(error);
        self.signal.notify_waiters();
    }

    fn get(&self) -> Option<BenchError> {
        self.first.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// An event the server sent: its name and arguments.
pub type Incoming = (String, Vec<Value>);

/// Events held for the scenario before new ones are dropped (and counted as an error).
const EVENT_QUEUE: usize = 4096;
/// Engine.IO packets waiting to be written.
const OUT_QUEUE: usize = 1024;

/// One connected Socket.IO client (namespace `/`). Dropping it stops its tasks; [`Client::close`]
/// also tells the server.
pub struct Client {
    /// The Engine.IO session id.
    pub session: String,
    /// The Socket.IO socket id.
    pub socket_id: String,
    out: mpsc::Sender<EioPacket>,
    acks: Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<Value>>>>>,
    next_ack: AtomicU64,
    events: mpsc::Receiver<Incoming>,
    /// The first error of a background task, if any.
    failure: Arc<Failure>,
    /// Writes queued packets; ends after writing a close packet.
    writer: Option<JoinHandle<()>>,
    reader: JoinHandle<()>,
    timeout: Duration,
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(writer) = &self.writer {
            writer.abort();
        }
        self.reader.abort();
    }
}

/// What the reading side hands on.
struct Shared {
    acks: Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<Value>>>>>,
    events: mpsc::Sender<Incoming>,
    failure: Arc<Failure>,
    /// Pongs (polling) go through the writer.
    out: mpsc::Sender<EioPacket>,
    decoder: Decoder,
    /// The CONNECT reply, until it arrives.
    connected: Option<oneshot::Sender<Result<String, BenchError>>>,
}

impl Shared {
    fn fail(&self, error: BenchError) {
        self.failure.set(error);
    }

    /// Handle one Engine.IO packet from the server; false when the session is over.
    fn packet(&mut self, packet: EioPacket) -> bool {
        let decoded = match packet {
            EioPacket::Ping { probe: false } => {
                let _ = self.out.try_send(EioPacket::Pong { probe: false });
                return true;
            }
            EioPacket::Close => return false,
            EioPacket::Text(text) => self.decoder.feed_text(&text),
            EioPacket::Binary(bytes) => self.decoder.feed_binary(bytes),
            _ => return true,
        };
        match decoded {
            Ok(Some(packet)) => self.sio(packet),
            Ok(None) => true,
            Err(e) => {
                self.fail(BenchError::Protocol(e.to_string()));
                false
            }
        }
    }

    fn sio(&mut self, packet: Packet) -> bool {
        match packet.kind {
            PacketType::Connect => {
                let sid = packet
                    .data
                    .as_ref()
                    .and_then(|d| d.get("sid"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if let Some(tx) = self.connected.take() {
                    let _ = tx.send(sid.ok_or_else(|| {
                        BenchError::Protocol("CONNECT reply without sid".to_owned())
                    }));
                }
                true
            }
            PacketType::ConnectError | PacketType::Disconnect => {
                if let Some(tx) = self.connected.take() {
                    let _ = tx.send(Err(BenchError::Closed));
                }
                false
            }
            PacketType::Ack | PacketType::BinaryAck => {
                let waiter = packet.id.and_then(|id| {
                    self.acks
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id)
                });
                if let Some(tx) = waiter {
                    let _ = tx.send(packet.into_args());
                }
                true
            }
            PacketType::Event | PacketType::BinaryEvent => {
                let name = packet.event_name().unwrap_or_default().to_owned();
                let args = packet.into_args();
                if self.events.try_send((name, args)).is_err() {
                    self.fail(BenchError::Protocol(
                        "client event queue overflow".to_owned(),
                    ));
                }
                true
            }
        }
    }
}

type Http = HttpClient<HttpConnector, Full<Bytes>>;

/// The polling side: the HTTP client of this one client (its own connection pool, bound to the
/// source address) and the session's URL.
#[derive(Clone)]
struct Polling {
    http: Http,
    url: String,
    cookie: Arc<Mutex<Option<String>>>,
    timeout: Duration,
}

impl Polling {
    fn new(target: &Target) -> Polling {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_local_address(target.source);
        Polling {
            http: HttpClient::builder(TokioExecutor::new()).build(connector),
            url: format!(
                "http://{}{}?EIO=4&transport=polling",
                target.addr, target.path
            ),
            cookie: Arc::default(),
            timeout: target.timeout,
        }
    }

    /// One request; the body of a 200 answer.
    async fn request(
        &self,
        method: hyper::Method,
        url: &str,
        body: String,
    ) -> Result<Bytes, BenchError> {
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(url)
            .header("content-type", "text/plain;charset=UTF-8");
        let cookie = self
            .cookie
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(cookie) = cookie {
            builder = builder.header("cookie", cookie);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| BenchError::Protocol(e.to_string()))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| BenchError::Io(e.to_string()))?;
        let status = response.status();
        if let Some(io) = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("io="))
        {
            let pair = io.split(';').next().unwrap_or(io).to_owned();
            *self.cookie.lock().unwrap_or_else(|e| e.into_inner()) = Some(pair);
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| BenchError::Io(e.to_string()))?
            .to_bytes();
        match status {
            StatusCode::OK => Ok(body),
            StatusCode::BAD_REQUEST if is_unknown_sid(&body) => Err(BenchError::SessionIdUnknown),
            other => Err(BenchError::Http(other.as_u16())),
        }
    }

    /// The handshake: the open packet's session id.
    async fn handshake(&self) -> Result<String, BenchError> {
        let url = self.url.clone();
        let body = deadline(
            self.timeout,
            self.request(hyper::Method::GET, &url, String::new()),
        )
        .await?;
        let packets =
            eio::decode_payload(&body).map_err(|e| BenchError::Protocol(e.to_string()))?;
        match packets.first() {
            Some(EioPacket::Open(json)) => open_sid(json),
            _ => Err(BenchError::Protocol("no open packet".to_owned())),
        }
    }

    fn session_url(&self, sid: &str) -> String {
        format!("{}&sid={sid}", self.url)
    }
}

fn is_unknown_sid(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("code").and_then(serde_json::Value::as_u64))
        == Some(1)
}

fn open_sid(json: &str) -> Result<String, BenchError> {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.get("sid").and_then(|s| s.as_str()).map(str::to_owned))
        .ok_or_else(|| BenchError::Protocol("open packet without sid".to_owned()))
}

async fn deadline<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, BenchError>>,
) -> Result<T, BenchError> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or(Err(BenchError::Timeout))
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn open_websocket(target: &Target, sid: Option<&str>) -> Result<Ws, BenchError> {
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| BenchError::Io(e.to_string()))?;
    if let Some(source) = target.source {
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| BenchError::Io(e.to_string()))?;
    }
    let stream = socket
        .connect(target.addr)
        .await
        .map_err(|e| BenchError::Io(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let sid = sid.map(|s| format!("&sid={s}")).unwrap_or_default();
    let url = format!(
        "ws://{}{}?EIO=4&transport=websocket{sid}",
        target.addr, target.path
    );
    let (ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(response)
                if response.status() == StatusCode::BAD_REQUEST
                    && response.body().as_deref().is_some_and(is_unknown_sid) =>
            {
                BenchError::SessionIdUnknown
            }
            tokio_tungstenite::tungstenite::Error::Http(response) => {
                BenchError::Http(response.status().as_u16())
            }
            other => BenchError::Io(other.to_string()),
        })?;
    Ok(ws)
}

fn ws_packet(msg: WsMessage) -> Option<EioPacket> {
    match msg {
        WsMessage::Text(text) => eio::decode_packet(text.as_str()).ok(),
        WsMessage::Binary(bytes) => Some(EioPacket::Binary(bytes)),
        _ => None,
    }
}

fn ws_message(packet: EioPacket) -> WsMessage {
    match packet.into_frame() {
        eio::Frame::Text(text) => WsMessage::Text(text.into()),
        eio::Frame::Binary(bytes) => WsMessage::Binary(bytes),
    }
}

/// The next Engine.IO packet of a websocket, within `limit`.
async fn ws_next(ws: &mut Ws, limit: Duration) -> Result<EioPacket, BenchError> {
    let until = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(until, ws.next()).await {
            Err(_) => return Err(BenchError::Timeout),
            Ok(None) | Ok(Some(Ok(WsMessage::Close(_)))) => return Err(BenchError::Closed),
            Ok(Some(Err(e))) => return Err(BenchError::Io(e.to_string())),
            Ok(Some(Ok(msg))) => {
                if let Some(packet) = ws_packet(msg) {
                    return Ok(packet);
                }
            }
        }
    }
}

impl Client {
    /// Open a session, join `/` and wait for the CONNECT reply.
    pub async fn connect(target: &Target) -> Result<Client, BenchError> {
        deadline(target.timeout, Client::open(target)).await
    }

    async fn open(target: &Target) -> Result<Client, BenchError> {
        let (out, out_rx) = mpsc::channel(OUT_QUEUE);
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (connected_tx, connected) = oneshot::channel();
        let acks = Arc::default();
        let failure: Arc<Failure> = Arc::default();
        let shared = Shared {
            acks: Arc::clone(&acks),
            events: events_tx,
            failure: Arc::clone(&failure),
            out: out.clone(),
            decoder: Decoder::for_client(64),
            connected: Some(connected_tx),
        };
        let (session, (writer, reader)) = match target.transport {
            Transport::Polling => {
                let polling = Polling::new(target);
                let session = polling.handshake().await?;
                let url = polling.session_url(&session);
                let reader = tokio::spawn(poll_reader(polling.clone(), url.clone(), shared));
                let writer = tokio::spawn(poll_writer(polling, url, out_rx, Arc::clone(&failure)));
                (session, (writer, reader))
            }
            Transport::Websocket => {
                let mut ws = open_websocket(target, None).await?;
                let session = match ws_next(&mut ws, target.timeout).await? {
                    EioPacket::Open(json) => open_sid(&json)?,
                    _ => return Err(BenchError::Protocol("no open packet".to_owned())),
                };
                (session, spawn_ws(ws, shared, out_rx))
            }
            Transport::Upgrade => {
                let polling = Polling::new(target);
                let session = polling.handshake().await?;
                let mut ws = open_websocket(target, Some(&session)).await?;
                ws.send(ws_message(EioPacket::Ping { probe: true }))
                    .await
                    .map_err(|e| BenchError::Io(e.to_string()))?;
                match ws_next(&mut ws, target.timeout).await? {
                    EioPacket::Pong { probe: true } => {}
                    _ => return Err(BenchError::Protocol("no probe answer".to_owned())),
                }
                ws.send(ws_message(EioPacket::Upgrade))
                    .await
                    .map_err(|e| BenchError::Io(e.to_string()))?;
                (session, spawn_ws(ws, shared, out_rx))
            }
        };
        out.send(EioPacket::Text(
            sio::encode(&Packet::connect("/", None)).text,
        ))
        .await
        .map_err(|_| BenchError::Closed)?;
        // Either the CONNECT reply comes, or a background task fails first (a POST refused
        // while the GET is still parked would otherwise leave us waiting for the next ping).
        let socket_id = {
            let failed = failure.signal.notified();
            tokio::pin!(failed);
            failed.as_mut().enable();
            if let Some(e) = failure.get() {
                return Err(e);
            }
            tokio::select! {
                reply = connected => match reply {
                    Ok(result) => result?,
                    Err(_) => return Err(failure.get().unwrap_or(BenchError::Closed)),
                },
                () = failed => return Err(failure.get().unwrap_or(BenchError::Closed)),
            }
        };
        Ok(Client {
            session,
            socket_id,
            out,
            acks,
            next_ack: AtomicU64::new(0),
            events,
            failure,
            writer: Some(writer),
            reader,
            timeout: target.timeout,
        })
    }

    /// Queue an event (binary arguments go as attachments).
    pub async fn emit(&self, event: &str, args: Vec<Value>) -> Result<(), BenchError> {
        self.send(Packet::event("/", event, args, None)).await
    }

    /// Emit an event with an ack request and wait for the ack's arguments, within `timeout`.
    pub async fn emit_with_ack(
        &self,
        event: &str,
        args: Vec<Value>,
        timeout: Duration,
    ) -> Result<Vec<Value>, BenchError> {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.acks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let sent = self.send(Packet::event("/", event, args, Some(id))).await;
        let answer = match sent {
            Ok(()) => match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(args)) => Ok(args),
                Ok(Err(_)) => Err(self.failure().unwrap_or(BenchError::Closed)),
                Err(_) => Err(self.failure().unwrap_or(BenchError::Timeout)),
            },
            Err(e) => Err(e),
        };
        self.acks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        answer
    }

    /// The next event from the server, within `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Result<Incoming, BenchError> {
        match tokio::time::timeout(timeout, self.events.recv()).await {
            Ok(Some(event)) => Ok(event),
            Ok(None) => Err(self.failure().unwrap_or(BenchError::Closed)),
            Err(_) => Err(self.failure().unwrap_or(BenchError::Timeout)),
        }
    }

    /// The first error the client's background work met, if any.
    pub fn failure(&self) -> Option<BenchError> {
        self.failure.get()
    }

    /// Close the session (an Engine.IO close packet), then stop.
    pub async fn close(mut self) {
        if self.out.send(EioPacket::Close).await.is_ok()
            && let Some(writer) = self.writer.as_mut()
        {
            let _ = tokio::time::timeout(self.timeout, writer).await;
        }
    }

    async fn send(&self, packet: Packet) -> Result<(), BenchError> {
        let encoded = sio::encode(&packet);
        let mut packets = vec![EioPacket::Text(encoded.text)];
        packets.extend(encoded.attachments.into_iter().map(EioPacket::Binary));
        for packet in packets {
            self.out
                .send(packet)
                .await
                .map_err(|_| self.failure().unwrap_or(BenchError::Closed))?;
        }
        Ok(())
    }
}

/// Long-polls until the session ends, handing each packet on.
async fn poll_reader(polling: Polling, url: String, mut shared: Shared) {
    loop {
        // A parked GET answers at the latest at the next ping (pingInterval): allow for it.
        let body = match polling
            .request(hyper::Method::GET, &url, String::new())
            .await
        {
            Ok(body) => body,
            Err(e) => return shared.fail(e),
        };
        let packets = match eio::decode_payload(&body) {
            Ok(packets) => packets,
            Err(e) => return shared.fail(BenchError::Protocol(e.to_string())),
        };
        for packet in packets {
            if !shared.packet(packet) {
                return shared.fail(BenchError::Closed);
            }
        }
    }
}

/// Sends queued packets, everything queued in one POST, one POST at a time.
async fn poll_writer(
    polling: Polling,
    url: String,
    mut out: mpsc::Receiver<EioPacket>,
    failure: Arc<Failure>,
) {
    while let Some(first) = out.recv().await {
        let mut packets = vec![first];
        while let Ok(more) = out.try_recv() {
            packets.push(more);
        }
        let closing = packets.contains(&EioPacket::Close);
        let body = eio::encode_payload(&packets);
        let sent = deadline(
            polling.timeout,
            polling.request(hyper::Method::POST, &url, body),
        )
        .await;
        if let Err(e) = sent {
            return failure.set(e);
        }
        if closing {
            return;
        }
    }
}

/// The writer and the reader of a websocket session.
fn spawn_ws(
    ws: Ws,
    mut shared: Shared,
    mut out: mpsc::Receiver<EioPacket>,
) -> (JoinHandle<()>, JoinHandle<()>) {
    let (mut sink, mut stream) = ws.split();
    let failure = Arc::clone(&shared.failure);
    let writer = tokio::spawn(async move {
        while let Some(packet) = out.recv().await {
            let closing = packet == EioPacket::Close;
            if let Err(e) = sink.send(ws_message(packet)).await {
                return failure.set(BenchError::Io(e.to_string()));
            }
            if closing {
                let _ = sink.close().await;
                return;
            }
        }
    });
    let reader = tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            let packet = match msg {
                Ok(WsMessage::Close(_)) => break,
                Ok(msg) => ws_packet(msg),
                Err(e) => return shared.fail(BenchError::Io(e.to_string())),
            };
            if let Some(packet) = packet
                && !shared.packet(packet)
            {
                break;
            }
        }
        shared.fail(BenchError::Closed);
    });
    (writer, reader)
}
