//! Which instance serves a request, when a new one starts, who waits and who is refused:
//! pure bookkeeping of one function's instances and queue, no I/O and no clock of its own.
//!
//! Requests are admitted in arrival order: a request that arrives while others wait joins the
//! end of the queue even if an instance just became free, so nobody is overtaken. The queue is
//! bounded; beyond it a request is refused with an estimate of when capacity frees up.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// How much one function may run at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub max_instances: u32,
    /// Requests one instance serves at once.
    pub concurrency: u32,
    /// Requests that may wait.
    pub queue: u32,
    /// Whether instances outlive a request (`http`), or each request has its own (`exec`).
    pub persistent: bool,
}

/// What a request should do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Use this running instance; one of its slots is now taken.
    Use(u64),
    /// Start a new instance with this id; the request owns its first slot.
    Start(u64),
    /// Wait in the queue (the request holds the given place) and ask again when something
    /// changes.
    Wait(u64),
    /// The queue is full: refuse with 429 and this Retry-After.
    Reject { retry_after_s: u64 },
    /// The function is being deleted or replaced: refuse.
    Draining,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// Started for a request; not yet answering.
    Starting,
    Ready,
    /// Chosen to stop (idle, or draining); takes no more requests.
    Stopping,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub state: SlotState,
    pub in_flight: u32,
    /// When the last request on it ended (or it started).
    pub idle_since: Instant,
}

/// One function's instances and queue.
#[derive(Debug)]
pub struct Dispatch {
    capacity: Capacity,
    instances: BTreeMap<u64, Slot>,
    queue: VecDeque<u64>,
    next_ticket: u64,
    draining: bool,
    /// Smoothed time a request holds a slot, for Retry-After.
    mean_hold: Duration,
}

impl Dispatch {
    pub fn new(capacity: Capacity) -> Dispatch {
        Dispatch {
            capacity,
            instances: BTreeMap::new(),
            queue: VecDeque::new(),
            next_ticket: 1,
            draining: false,
            mean_hold: Duration::from_millis(100),
        }
    }

    /// A new request, or a waiting one (`ticket`) asking again. `new_instance` is the id a
    /// started instance will get.
    pub fn admit(&mut self, ticket: Option<u64>, new_instance: u64, now: Instant) -> Admit {
        if self.draining {
            if let Some(t) = ticket {
                self.leave_queue(t);
            }
            return Admit::Draining;
        }
        let first_in_line = match ticket {
            Some(t) => self.queue.front() == Some(&t),
            None => self.queue.is_empty(),
        };
        if first_in_line && let Some(admit) = self.take_slot(new_instance, now) {
            if ticket.is_some() {
                self.queue.pop_front();
            }
            return admit;
        }
        if let Some(t) = ticket {
            return Admit::Wait(t);
        }
        if self.queue.len() >= self.capacity.queue as usize {
            return Admit::Reject {
                retry_after_s: self.retry_after_s(),
            };
        }
        let t = self.next_ticket;
        self.next_ticket += 1;
        self.queue.push_back(t);
        Admit::Wait(t)
    }

    /// A free slot on a ready instance (the busiest that still has room, so idle ones can
    /// scale down), else a new instance if allowed.
    fn take_slot(&mut self, new_instance: u64, now: Instant) -> Option<Admit> {
        let concurrency = self.capacity.concurrency;
        if self.capacity.persistent {
            let best = self
                .instances
                .iter_mut()
                .filter(|(_, s)| s.state == SlotState::Ready && s.in_flight < concurrency)
                .max_by_key(|(id, s)| (s.in_flight, std::cmp::Reverse(**id)));
            if let Some((id, slot)) = best {
                slot.in_flight += 1;
                return Some(Admit::Use(*id));
            }
        }
        let live = self
            .instances
            .values()
            .filter(|s| s.state != SlotState::Stopping)
            .count();
        if live < self.capacity.max_instances as usize {
            self.instances.insert(
                new_instance,
                Slot {
                    state: SlotState::Starting,
                    in_flight: 1,
                    idle_since: now,
                },
            );
            return Some(Admit::Start(new_instance));
        }
        None
    }

    /// A waiting request gave up (timed out, or its client went away).
    pub fn leave_queue(&mut self, ticket: u64) {
        self.queue.retain(|t| *t != ticket);
    }

    /// A started instance answers now.
    pub fn ready(&mut self, instance: u64) {
        if let Some(slot) = self.instances.get_mut(&instance)
            && slot.state == SlotState::Starting
        {
            slot.state = SlotState::Ready;
        }
    }

    /// A request is done with its slot after holding it for `held`.
    pub fn release(&mut self, instance: u64, held: Duration, now: Instant) {
        // An exponential average: recent requests count most.
        self.mean_hold = (self.mean_hold * 7 + held) / 8;
        let persistent = self.capacity.persistent;
        if let Some(slot) = self.instances.get_mut(&instance) {
            slot.in_flight = slot.in_flight.saturating_sub(1);
            slot.idle_since = now;
            if !persistent {
                self.instances.remove(&instance);
            }
        }
    }

    /// An instance is gone (it exited, failed to start, or was stopped).
    pub fn remove(&mut self, instance: u64) {
        self.instances.remove(&instance);
    }

    /// Ready instances idle for `idle_timeout`, beyond the `keep` that must stay: they are
    /// marked stopping and returned.
    pub fn idle_to_stop(&mut self, idle_timeout: Duration, keep: u32, now: Instant) -> Vec<u64> {
        let mut running = self
            .instances
            .values()
            .filter(|s| s.state != SlotState::Stopping)
            .count();
        let mut stop = Vec::new();
        for (id, slot) in self.instances.iter_mut() {
            if running <= keep as usize {
                break;
            }
            if slot.state == SlotState::Ready
                && slot.in_flight == 0
                && now.saturating_duration_since(slot.idle_since) >= idle_timeout
            {
                slot.state = SlotState::Stopping;
                stop.push(*id);
                running -= 1;
            }
        }
        stop
    }

    /// Marks a ready instance without requests as stopping; false if it is busy or not
    /// ready.
    pub fn stop_if_idle(&mut self, instance: u64) -> bool {
        match self.instances.get_mut(&instance) {
            Some(slot) if slot.state == SlotState::Ready && slot.in_flight == 0 => {
                slot.state = SlotState::Stopping;
                true
            }
            _ => false,
        }
    }

    /// How many instances to start so `min` run (counting those starting).
    pub fn missing_instances(&self, min: u32) -> u32 {
        if self.draining {
            return 0;
        }
        let running = self
            .instances
            .values()
            .filter(|s| s.state != SlotState::Stopping)
            .count() as u32;
        min.min(self.capacity.max_instances).saturating_sub(running)
    }

    /// Reserves an instance started ahead of need (prewarm on deploy, `min_instances`).
    pub fn start_spare(&mut self, instance: u64, now: Instant) {
        self.instances.insert(
            instance,
            Slot {
                state: SlotState::Starting,
                in_flight: 0,
                idle_since: now,
            },
        );
    }

    /// Takes no more requests; waiting ones are told to go.
    pub fn drain(&mut self) {
        self.draining = true;
        self.queue.clear();
    }

    /// Requests holding a slot.
    pub fn in_flight(&self) -> u32 {
        self.instances.values().map(|s| s.in_flight).sum()
    }

    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    pub fn instances(&self) -> &BTreeMap<u64, Slot> {
        &self.instances
    }

    /// Seconds until the queue is likely to have room: the work ahead divided over every
    /// slot, at the recent time per request; at least 1, at most 60.
    fn retry_after_s(&self) -> u64 {
        let slots = u64::from(self.capacity.max_instances.max(1))
            * u64::from(self.capacity.concurrency.max(1));
        let ahead = self.queue.len() as u64 + u64::from(self.in_flight());
        let ms = self.mean_hold.as_millis() as u64 * ahead / slots;
        ms.div_ceil(1000).clamp(1, 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(max_instances: u32, queue: u32) -> Dispatch {
        Dispatch::new(Capacity {
            max_instances,
            concurrency: 1,
            queue,
            persistent: false,
        })
    }

    fn http(max_instances: u32, concurrency: u32, queue: u32) -> Dispatch {
        Dispatch::new(Capacity {
            max_instances,
            concurrency,
            queue,
            persistent: true,
        })
    }

    #[test]
    fn exec_requests_start_a_process_each_up_to_max_instances_then_queue_then_refuse() {
        let now = Instant::now();
        let mut d = exec(2, 1);
        assert_eq!(d.admit(None, 1, now), Admit::Start(1));
        assert_eq!(d.admit(None, 2, now), Admit::Start(2));
        assert_eq!(d.admit(None, 3, now), Admit::Wait(1));
        assert!(matches!(d.admit(None, 3, now), Admit::Reject { .. }));
        // A process ends: its slot is gone and the waiting request starts the next one.
        d.release(1, Duration::from_millis(10), now);
        assert!(!d.instances().contains_key(&1));
        assert_eq!(d.admit(Some(1), 3, now), Admit::Start(3));
        assert_eq!(d.waiting(), 0);
    }

    #[test]
    fn http_requests_share_warm_instances_before_starting_new_ones() {
        let now = Instant::now();
        let mut d = http(2, 2, 4);
        assert_eq!(d.admit(None, 1, now), Admit::Start(1));
        // Still starting: a second request does not pile onto it; it starts another.
        assert_eq!(d.admit(None, 2, now), Admit::Start(2));
        d.ready(1);
        d.ready(2);
        d.release(2, Duration::from_millis(5), now);
        // Instance 1 has a request and room for one more: the busier one is filled first.
        assert_eq!(d.admit(None, 3, now), Admit::Use(1));
        assert_eq!(d.admit(None, 3, now), Admit::Use(2));
        assert_eq!(d.admit(None, 3, now), Admit::Use(2));
        assert_eq!(d.admit(None, 3, now), Admit::Wait(1));
        assert_eq!(d.in_flight(), 4);
    }

    #[test]
    fn waiting_requests_are_admitted_in_arrival_order() {
        let now = Instant::now();
        let mut d = exec(1, 8);
        assert_eq!(d.admit(None, 1, now), Admit::Start(1));
        assert_eq!(d.admit(None, 2, now), Admit::Wait(1));
        assert_eq!(d.admit(None, 2, now), Admit::Wait(2));
        d.release(1, Duration::ZERO, now);
        // The second in line asks first but must let the first go.
        assert_eq!(d.admit(Some(2), 2, now), Admit::Wait(2));
        // A newcomer does not overtake the queue either.
        assert_eq!(d.admit(None, 2, now), Admit::Wait(3));
        assert_eq!(d.admit(Some(1), 2, now), Admit::Start(2));
        d.release(2, Duration::ZERO, now);
        assert_eq!(d.admit(Some(2), 3, now), Admit::Start(3));
    }

    #[test]
    fn a_request_that_gives_up_leaves_the_queue() {
        let now = Instant::now();
        let mut d = exec(1, 1);
        assert_eq!(d.admit(None, 1, now), Admit::Start(1));
        assert_eq!(d.admit(None, 2, now), Admit::Wait(1));
        d.leave_queue(1);
        assert_eq!(d.admit(None, 2, now), Admit::Wait(2));
    }

    #[test]
    fn retry_after_grows_with_the_work_ahead() {
        let now = Instant::now();
        let mut d = exec(1, 3);
        d.admit(None, 1, now);
        // Requests have been taking about 2 s each.
        for _ in 0..40 {
            d.release(99, Duration::from_secs(2), now);
        }
        for _ in 0..3 {
            d.admit(None, 2, now);
        }
        match d.admit(None, 2, now) {
            Admit::Reject { retry_after_s } => assert!((7..=9).contains(&retry_after_s)),
            other => panic!("{other:?}"),
        }
        let mut quick = exec(4, 0);
        for id in 1..=4 {
            quick.admit(None, id, now);
        }
        assert_eq!(
            quick.admit(None, 5, now),
            Admit::Reject { retry_after_s: 1 }
        );
    }

    #[test]
    fn idle_instances_stop_but_min_instances_stay() {
        let start = Instant::now();
        let mut d = http(3, 1, 0);
        for id in 1..=3 {
            assert_eq!(d.admit(None, id, start), Admit::Start(id));
        }
        for id in 1..=3 {
            d.ready(id);
            d.release(id, Duration::ZERO, start);
        }
        let timeout = Duration::from_secs(60);
        assert!(d.idle_to_stop(timeout, 1, start).is_empty());
        let later = start + timeout;
        // Among equally busy instances the oldest is used, so the newer ones idle out.
        assert_eq!(d.admit(None, 4, later), Admit::Use(1));
        let stopping = d.idle_to_stop(timeout, 1, later);
        assert_eq!(stopping, vec![2, 3], "the busy one stays");
        // Stopping instances take no requests; one more running one may start.
        d.release(1, Duration::ZERO, later);
        assert_eq!(d.admit(None, 5, later), Admit::Use(1));
        assert_eq!(d.admit(None, 5, later), Admit::Start(5));
    }

    #[test]
    fn only_idle_ready_instances_are_stopped_on_demand() {
        let now = Instant::now();
        let mut d = http(2, 1, 0);
        assert_eq!(d.admit(None, 1, now), Admit::Start(1));
        assert!(!d.stop_if_idle(1), "still starting, with its request");
        d.ready(1);
        assert!(!d.stop_if_idle(1), "busy");
        d.release(1, Duration::ZERO, now);
        assert!(d.stop_if_idle(1));
        assert_eq!(
            d.admit(None, 2, now),
            Admit::Start(2),
            "a stopping one takes nothing"
        );
    }

    #[test]
    fn min_instances_are_started_ahead_of_need() {
        let now = Instant::now();
        let mut d = http(4, 1, 0);
        assert_eq!(d.missing_instances(2), 2);
        d.start_spare(1, now);
        assert_eq!(d.missing_instances(2), 1);
        assert_eq!(d.missing_instances(9), 3, "never beyond max_instances");
    }

    #[test]
    fn a_draining_function_takes_nothing_new() {
        let now = Instant::now();
        let mut d = exec(1, 4);
        d.admit(None, 1, now);
        let Admit::Wait(t) = d.admit(None, 2, now) else {
            panic!("expected to wait")
        };
        d.drain();
        assert_eq!(d.admit(Some(t), 2, now), Admit::Draining);
        assert_eq!(d.admit(None, 2, now), Admit::Draining);
        assert_eq!(d.in_flight(), 1, "the running request finishes");
        assert_eq!(d.missing_instances(1), 0);
    }
}
