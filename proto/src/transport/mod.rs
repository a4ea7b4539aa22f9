//! Transports: QUIC, TCP and Unix-domain sockets behind one abstraction.
