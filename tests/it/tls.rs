//! TLS: HTTPS on the client port (the official client's battery over it) and mutual TLS
//! between nodes, with certificates made here for each test.

use std::path::PathBuf;
use std::sync::Arc;

use nonstick::app::{AppKind, BuiltIn};
use nonstick::config::Https;
use nonstick::registry::admin::administer;
use nonstick::rpc::{PeerTls, Peers, Secret};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::fixture::{App, CLUSTER_SECRET, TestCluster, TestNode};

/// A certificate authority and the certificates it signs, as PEM files in a temporary
/// directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A certificate's files.
struct Issued {
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = params.self_signed(&ca_key).expect("CA");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write");
        Pki { dir, ca, ca_key }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for 127.0.0.1 and localhost, signed by this CA.
    fn issue(&self, name: &str) -> Issued {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign");
        let issued = Issued {
            cert: self.dir.path().join(format!("{name}.pem")),
            key: self.dir.path().join(format!("{name}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).expect("write");
        std::fs::write(&issued.key, key.serialize_pem()).expect("write");
        issued
    }

    fn peer_tls(&self, name: &str) -> PeerTls {
        let issued = self.issue(name);
        PeerTls::load(&self.ca(), &issued.cert, &issued.key).expect("peer TLS")
    }
}

/// One HTTP/1.1 GET over TLS, trusting only `ca`; the whole response as text.
async fn https_get(
    addr: std::net::SocketAddr,
    ca: &PathBuf,
    path: &str,
) -> std::io::Result<String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(cert.expect("cert")).expect("root");
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tls.read_to_string(&mut response).await?;
    Ok(response)
}

/// A demo node serving HTTPS with a certificate of `pki`.
async fn https_node(pki: &Pki) -> TestNode {
    let issued = pki.issue("node");
    let mut config = BuiltIn::base_config();
    config.https = Some(Https {
        cert: issued.cert,
        key: issued.key,
    });
    TestNode::start_with(AppKind::Demo, config).await
}

#[tokio::test]
async fn https_serves_handshakes_and_refuses_plain_http() {
    let pki = Pki::new("nonstick test CA");
    let node = https_node(&pki).await;
    let response = https_get(
        node.addr(),
        &pki.ca(),
        "/socket.io/?EIO=4&transport=polling",
    )
    .await
    .expect("HTTPS");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"sid\""), "{response}");
    // Plain HTTP gets no Engine.IO answer.
    let plain = tokio::time::timeout(
        crate::fixture::WAIT,
        tokio::spawn(async move {
            let mut tcp = tokio::net::TcpStream::connect(node.addr()).await?;
            tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await?;
            let mut answer = Vec::new();
            tcp.read_to_end(&mut answer).await?;
            std::io::Result::Ok((node, answer))
        }),
    )
    .await
    .expect("the TLS handshake gives up")
    .expect("task");
    let (node, answer) = plain.expect("read");
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "plain HTTP was served"
    );
    // Another CA's client does not trust it.
    let other = Pki::new("another CA");
    assert!(
        https_get(node.addr(), &other.ca(), "/healthz")
            .await
            .is_err()
    );
    node.stop().await;
}

/// The official client's battery over HTTPS (xhr polling, then a websocket upgrade over TLS),
/// trusting the test CA through Node's `NODE_EXTRA_CA_CERTS`.
#[tokio::test]
async fn socket_io_client_over_https() {
    let pki = Pki::new("nonstick test CA");
    let node = https_node(&pki).await;
    let url = format!("https://localhost:{}", node.addr().port());
    let ca = pki.ca().display().to_string();
    crate::clients::run_js_with_env(
        &url,
        "sio-client.mjs",
        &["--transports", "default"],
        &[("NODE_EXTRA_CA_CERTS", ca.as_str())],
    )
    .await;
    node.stop().await;
}

/// Nodes that present certificates of the cluster's CA serve each other's sessions; a client
/// with a certificate of another CA, or none, is refused by them, secret or not.
#[tokio::test]
async fn mutual_tls_between_nodes_refuses_a_peer_of_another_ca() {
    let pki = Pki::new("cluster CA");
    let secret = || Secret::new(CLUSTER_SECRET).expect("secret");
    let peer = |id: u64| (secret(), Some(pki.peer_tls(&format!("node-{id}"))));
    let app = |_| (App::built_in(AppKind::Demo), BuiltIn::base_config());
    let cluster = TestCluster::start_with_peers(3, &[], app, peer).await;
    for (owner, other) in [(0, 1), (1, 2), (2, 0)] {
        cluster.serves_across(owner, other).await;
    }
    // `nonstick member list` as each kind of client would run it.
    let via = cluster.peers[&1].clone();
    let with = |tls: Option<PeerTls>| administer(&via, Peers::with_tls(secret(), tls), None);
    let members = with(Some(pki.peer_tls("admin")))
        .await
        .expect("the cluster CA's client");
    assert_eq!(members.members.len(), 3);
    let rogue = Pki::new("rogue CA");
    assert!(
        with(Some(rogue.peer_tls("rogue"))).await.is_err(),
        "another CA's client"
    );
    assert!(with(None).await.is_err(), "a plaintext client");
    cluster.stop().await;
}
