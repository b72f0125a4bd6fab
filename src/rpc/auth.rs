//! The cluster secret: every inter-node gRPC call carries it, and every inter-node service refuses
//! a call without it.
//!
//! A secret can be rotated without downtime: a node also accepts the previous secret
//! ([`Secret::accepting`]) while the new one reaches every node, and sends only the current one.
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

/// The fewest characters a cluster secret may have (32 random base64 characters hold 192
/// bits).
pub const MIN_SECRET_LEN: usize = 32;

/// A shared cluster secret. Cheap to clone; its `Debug` output never shows the value.
#[derive(Clone)]
pub struct Secret {
    /// The whole header value, `Bearer <secret>`, precomputed so neither side formats per call.
    header: AsciiMetadataValue,
    /// The header of the secret being rotated out, accepted too.
    previous: Option<AsciiMetadataValue>,
}

/// Why a string cannot be used as a cluster secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret is empty: a cluster without a secret would accept any peer.
    #[error("the cluster secret is empty")]
    Empty,
    /// The secret is too short to resist guessing.
    #[error(
        "the cluster secret has {0} characters, fewer than {MIN_SECRET_LEN} (make one with: head -c 32 /dev/urandom | base64)"
    )]
    TooShort(usize),
    /// The secret has characters that cannot travel in an HTTP/2 header (non visible-ASCII).
    #[error("the cluster secret must be visible ASCII (no spaces or control characters)")]
    NotAscii,
}

impl Secret {
    /// Makes a secret from a string of at least [`MIN_SECRET_LEN`] visible ASCII characters
    /// (no whitespace).
    pub fn new(secret: &str) -> Result<Self, SecretError> {
        Ok(Self {
            header: header(secret)?,
            previous: None,
        })
    }

    /// This secret, also accepting `previous` on incoming calls: the middle step of a rotation
    /// (every node accepts both, then every node sends the new one, then the old one goes).
    pub fn accepting(self, previous: &str) -> Result<Self, SecretError> {
        Ok(Self {
            previous: Some(header(previous)?),
            ..self
        })
    }

    /// Whether `metadata` carries exactly this secret, or the previous one being rotated out.
    pub fn check(&self, metadata: &MetadataMap) -> bool {
        let Some(value) = metadata.get(AUTH_HEADER) else {
            return false;
        };
        let current = constant_time_eq(value.as_bytes(), self.header.as_bytes());
        let previous = self
            .previous
            .as_ref()
            .is_some_and(|previous| constant_time_eq(value.as_bytes(), previous.as_bytes()));
        current | previous
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

/// The `authorization` value of `secret`, once it is known to be a usable secret.
fn header(secret: &str) -> Result<AsciiMetadataValue, SecretError> {
    if secret.is_empty() {
        return Err(SecretError::Empty);
    }
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SecretError::NotAscii);
    }
    if secret.len() < MIN_SECRET_LEN {
        return Err(SecretError::TooShort(secret.len()));
    }
    AsciiMetadataValue::try_from(format!("Bearer {secret}")).map_err(|_| SecretError::NotAscii)
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

    const OLD: &str = "old-cluster-secret-0123456789abcdef";
    const NEW: &str = "new-cluster-secret-0123456789abcdef";

    fn carrying(secret: &Secret) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        secret.attach(&mut metadata);
        metadata
    }

    #[test]
    fn checks_the_exact_secret() {
        let secret = Secret::new(OLD).expect("secret");
        assert!(!secret.check(&MetadataMap::new()));
        assert!(secret.check(&carrying(&secret)));
        let other = Secret::new(&OLD.replace('f', "F")).expect("secret");
        assert!(!other.check(&carrying(&secret)));
        assert!(matches!(Secret::new(""), Err(SecretError::Empty)));
        assert!(matches!(
            Secret::new(&format!("{OLD} x")),
            Err(SecretError::NotAscii)
        ));
        assert!(matches!(
            Secret::new("s3cret"),
            Err(SecretError::TooShort(6))
        ));
    }

    /// The three steps of a rotation: every step talks to the next and the one before.
    #[test]
    fn a_rotation_accepts_both_secrets_in_its_middle_step() {
        let before = Secret::new(OLD).expect("secret");
        let accepting = Secret::new(OLD)
            .and_then(|s| s.accepting(NEW))
            .expect("secret");
        let sending = Secret::new(NEW)
            .and_then(|s| s.accepting(OLD))
            .expect("secret");
        let after = Secret::new(NEW).expect("secret");
        let steps = [&before, &accepting, &sending, &after];
        for pair in steps.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(b.check(&carrying(a)) && a.check(&carrying(b)));
        }
        assert!(
            !after.check(&carrying(&before)),
            "the old secret is gone at the end"
        );
        assert!(!before.check(&carrying(&after)));
        assert!(Secret::new(NEW).and_then(|s| s.accepting("short")).is_err());
    }
}
