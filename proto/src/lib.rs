//! `gpufn-proto`: the wire protocol between stub, worker and gateway.
