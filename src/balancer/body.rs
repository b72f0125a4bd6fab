//! The response body the balancer hands to its clients: a backend's body streamed frame by
//! frame (optionally watched for a handshake's sid on the way), or a small local answer.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::route::Router;
use super::sid::{SNIFF_LIMIT, open_packet_sid};

/// A response body. Never buffers a backend body: frames pass through as they arrive.
#[derive(Debug)]
pub(super) enum ProxyBody {
    /// A backend's body, and the sid watcher when it answers a polling handshake.
    Backend {
        body: Incoming,
        sniff: Option<Box<Sniff>>,
    },
    /// A body made here (a 502, an empty 101); `None` once sent.
    Local(Option<Bytes>),
}

impl ProxyBody {
    pub(super) fn local(text: impl Into<Bytes>) -> ProxyBody {
        ProxyBody::Local(Some(text.into()))
    }

    pub(super) fn empty() -> ProxyBody {
        ProxyBody::Local(None)
    }
}

/// Watches the first bytes of a handshake answer for the sid and records which backend
/// created it.
#[derive(Debug)]
pub(super) struct Sniff {
    prefix: Vec<u8>,
    backend: usize,
    router: Arc<Router>,
}

impl Sniff {
    pub(super) fn new(router: Arc<Router>, backend: usize) -> Sniff {
        Sniff {
            prefix: Vec::new(),
            backend,
            router,
        }
    }

    /// Looks at the next chunk; returns `true` when done watching (sid recorded, or the
    /// answer is not an open packet, or the look-ahead limit is reached).
    fn feed(&mut self, chunk: &[u8]) -> bool {
        let take = chunk.len().min(SNIFF_LIMIT - self.prefix.len());
        self.prefix.extend_from_slice(&chunk[..take]);
        if !b"0{".starts_with(&self.prefix[..self.prefix.len().min(2)]) {
            return true;
        }
        if let Some(sid) = open_packet_sid(&self.prefix) {
            self.router.sids.insert(sid, self.backend);
            return true;
        }
        self.prefix.len() >= SNIFF_LIMIT
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Backend { body, sniff } => {
                let frame = ready!(Pin::new(body).poll_frame(cx));
                if let Some(watcher) = sniff {
                    let done = match &frame {
                        Some(Ok(frame)) => frame.data_ref().is_none_or(|data| watcher.feed(data)),
                        _ => true,
                    };
                    if done {
                        *sniff = None;
                    }
                }
                Poll::Ready(frame)
            }
            ProxyBody::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Backend { body, .. } => body.is_end_stream(),
            ProxyBody::Local(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Backend { body, .. } => body.size_hint(),
            ProxyBody::Local(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
