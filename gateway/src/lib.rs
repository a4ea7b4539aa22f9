//! `gpufn-gateway`: the multi-tenant control plane (HTTP API, QUIC endpoint, auth, metering).
