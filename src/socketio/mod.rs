//! Socket.IO v5 on top of the engine: namespaces, sockets, rooms, events, acks, middleware,
//! connection state recovery, and the public handler API.
