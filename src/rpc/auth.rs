//! The cluster secret: every inter-node gRPC call carries it, and every inter-node service refuses
//! a call without it.
//!
//! The secret travels as `authorization: Bearer <secret>` metadata. [`ClientAuth`] adds it to
//! outgoing calls (the [`Peers`](super::Peers) channels already use it), [`ServerAuth`] checks it
//! on incoming ones (the [`serve`](super::serve) helper installs it in front of every service). The
//! comparison runs in time independent of where the first differing byte is.

use std::fmt;
use std::sync::Arc;

use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The metadata key the secret travels under.
pub const AUTH_HEADER: &str = "authorization";

/// A shared cluster secret. Cheap to clone; its `Debug` output never shows the value.
#[derive(Clone)]
pub struct Secret {
    /// The whole header value, `Bearer <secret>`, precomputed so neither side formats per call.
    header: AsciiMetadataValue,
}

/// Why a string cannot be used as a cluster secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret is empty: a cluster without a secret would accept any peer.
    #[error("the cluster secret is empty")]
    Empty,
    /// The secret has characters that cannot travel in an HTTP/2 header (non visible-ASCII).
    #[error("the cluster secret must be visible ASCII (no spaces or control characters)")]
    NotAscii,
}

impl Secret {
    /// Makes a secret from a string of visible ASCII characters (no whitespace).
    pub fn new(secret: &str) -> Result<Self, SecretError> {
        if secret.is_empty() {
            return Err(SecretError::Empty);
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SecretError::NotAscii);
        }
        let header = AsciiMetadataValue::try_from(format!("Bearer {secret}"))
            .map_err(|_| SecretError::NotAscii)?;
        Ok(Self { header })
    }

    /// Whether `metadata` carries exactly this secret.
    pub fn check(&self, metadata: &MetadataMap) -> bool {
        match metadata.get(AUTH_HEADER) {
            Some(value) => constant_time_eq(value.as_bytes(), self.header.as_bytes()),
            None => false,
        }
    }

    /// Adds the secret to a call's metadata.
    pub fn attach(&self, metadata: &mut MetadataMap) {
        metadata.insert(AUTH_HEADER, self.header.clone());
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Compares two byte strings without stopping at the first difference, so the time taken does
/// not tell a caller how much of a guess was right. (The length is not hidden; it is not secret.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Server-side interceptor: refuses a call with `Status::unauthenticated` unless it carries the
/// cluster secret. Usable on any tonic service (`XServer::with_interceptor`, or as a layer through
/// `tonic::service::InterceptorLayer`).
#[derive(Clone, Debug)]
pub struct ServerAuth {
    secret: Arc<Secret>,
}

impl ServerAuth {
    /// An interceptor that accepts only calls carrying `secret`.
    pub fn new(secret: Secret) -> Self {
        Self {
            secret: Arc::new(secret),
        }
    }
}

impl Interceptor for ServerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.secret.check(request.metadata()) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("missing or wrong cluster secret"))
        }
    }
}

/// Client-side interceptor: adds the cluster secret to every outgoing call.
#[derive(Clone, Debug)]
pub struct ClientAuth {
    secret: Arc<Secret>,
}

impl ClientAuth {
    /// An interceptor that attaches `secret` to every call.
    pub fn new(secret: Secret) -> Self {
        Self {
            secret: Arc::new(secret),
        }
    }
}

impl Interceptor for ClientAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        self.secret.attach(request.metadata_mut());
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_the_exact_secret() {
        let secret = Secret::new("s3cret").unwrap();
        let mut metadata = MetadataMap::new();
        assert!(!secret.check(&metadata));
        secret.attach(&mut metadata);
        assert!(secret.check(&metadata));
        let other = Secret::new("s3creT").unwrap();
        assert!(!other.check(&metadata));
        assert!(Secret::new("").is_err());
        assert!(Secret::new("has space").is_err());
    }
}
