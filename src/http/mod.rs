//! The axum front: parse each request once, call the engine, map errors to the wire in one place.
