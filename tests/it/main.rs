//! The one integration-test binary. Every area is a module; `fixture` starts servers on port 0.

mod adapter;
mod balancer;
mod bench;
mod chaos;
mod clients;
mod cluster;
mod eio_codec;
mod engine_polling;
mod engine_websocket;
mod failover;
mod fixture;
mod library;
mod moving;
mod operate;
mod registry;
mod sio_codec;
mod socketio;
mod tls;
