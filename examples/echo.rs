//! The smallest useful nonstick server: every event with an ack is acknowledged with its own
//! arguments, every other event is emitted back.
//!
//! Run with `cargo run --example echo -- 127.0.0.1:3000`, then connect any Socket.IO client to
//! `http://127.0.0.1:3000`.

use nonstick::socketio::{SocketIo, SocketIoConfig};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());

    let io = SocketIo::new(SocketIoConfig::default());
    io.of("/").on_connect(|socket| async move {
        socket.on("echo", |socket, event| async move {
            match event.ack {
                Some(ack) => ack.send(event.args),
                None => {
                    let _ = socket.emit("echo", event.args);
                }
            }
        });
    });

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    nonstick::serve(listener, io).await
}
