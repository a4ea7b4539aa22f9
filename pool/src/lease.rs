//! Worker leases: a worker that misses its heartbeats is gone.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ids::WorkerId;
use crate::inventory::Worker;
use crate::time::Millis;

/// Workers whose lease has run out at `now`, in id order.
pub(crate) fn expired_workers(
    workers: &BTreeMap<WorkerId, Worker>,
    now: Millis,
    lease_timeout: Duration,
) -> Vec<WorkerId> {
    workers
        .iter()
        .filter(|(_, w)| w.lease_expired(now, lease_timeout))
        .map(|(id, _)| id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::WorkerSpec;

    fn worker(id: &str, last_heartbeat: u64) -> (WorkerId, Worker) {
        let spec = WorkerSpec {
            id: id.into(),
            address: String::new(),
            devices: vec![],
        };
        (id.into(), Worker::new(spec, Millis(last_heartbeat), 100))
    }

    #[test]
    fn only_workers_past_the_timeout_expire_in_id_order() {
        let workers: BTreeMap<_, _> = [worker("c", 0), worker("a", 0), worker("b", 5_000)]
            .into_iter()
            .collect();
        let timeout = Duration::from_secs(10);
        assert!(expired_workers(&workers, Millis(10_000), timeout).is_empty());
        let expired = expired_workers(&workers, Millis(10_001), timeout);
        assert_eq!(expired, [WorkerId::from("a"), WorkerId::from("c")]);
        assert_eq!(expired_workers(&workers, Millis(15_001), timeout).len(), 3);
    }
}
