//! Wiring of one server process: build the engines and the HTTP front, run until shutdown.
