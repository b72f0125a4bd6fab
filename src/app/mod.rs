//! Built-in applications: the demo app of the app contract and the protocol-suite profile.
