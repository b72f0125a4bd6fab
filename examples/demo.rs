//! The demo app of the app contract, served on its own: the namespaces `/` and `/admin` with
//! their events (`echo`, `join`, `to-room`, `broadcast`, `server-ack`, …). The code of the app
//! is `src/app/demo.rs`, written against the public API only; this file shows how a program
//! mounts it.
//!
//! Run with `cargo run --example demo -- 127.0.0.1:3000`.

use nonstick::app::demo::{self, DemoOptions};
use nonstick::socketio::{RecoveryConfig, SocketIo, SocketIoConfig};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());

    let io = SocketIo::new(SocketIoConfig {
        recovery: Some(RecoveryConfig::default()),
        ..SocketIoConfig::default()
    });
    demo::register(&io, &DemoOptions::default());

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    nonstick::serve(listener, io).await
}
