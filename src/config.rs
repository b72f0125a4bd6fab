//! Settings of one server process.
