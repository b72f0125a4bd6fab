//! Mutual TLS between nodes: every node presents a certificate signed by the cluster's CA and
//! accepts only peers that present one too, on the peer gRPC server and on every channel to a
//! peer (tonic over rustls). The cluster secret is still checked inside: TLS says a peer holds a
//! certificate, the secret that it belongs to this cluster.

use std::fmt;
use std::io;
use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A node's side of mutual TLS: its certificate and key, and the CA its peers' certificates
/// must be signed by. All PEM.
#[derive(Clone)]
pub struct PeerTls {
    ca: Certificate,
    identity: Identity,
}

impl PeerTls {
    /// From PEM text.
    pub fn from_pem(ca: impl AsRef<[u8]>, cert: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Self {
        PeerTls {
            ca: Certificate::from_pem(ca),
            identity: Identity::from_pem(cert, key),
        }
    }

    /// From PEM files.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> io::Result<Self> {
        let read = |path: &Path| {
            std::fs::read(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        };
        Ok(PeerTls::from_pem(read(ca)?, read(cert)?, read(key)?))
    }

    /// The peer server's side: present the certificate, require one the CA signed.
    pub(crate) fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
    }

    /// A channel's side: trust the CA only, present the certificate.
    pub(crate) fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
    }
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerTls(..)")
    }
}
