//! The `nonstick` command line: parse flags, set up tracing, call the library.

fn main() {}
