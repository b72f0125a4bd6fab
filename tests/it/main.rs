//! The one integration-test binary. Every area is a module; `fixture` starts servers on port 0.
mod sio_codec;
