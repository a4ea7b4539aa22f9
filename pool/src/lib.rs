//! `gpufn-pool`: inventory, placement, QoS, leases and idle decisions. Pure logic, no I/O.
