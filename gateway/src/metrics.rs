//! Prometheus metrics, served at `/metrics` (OpenMetrics text).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// A fixed route name (never the raw path: no unbounded label values).
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: &'static str,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabels {
    pub worker: String,
    pub device: String,
}

type FloatCounter = Counter<f64, AtomicU64>;

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RouteLabels, Counter>,
    pub gpu_seconds: Family<TenantLabels, FloatCounter>,
    pub vram_gib_seconds: Family<TenantLabels, FloatCounter>,
    pub bytes_moved: Family<TenantLabels, Counter>,
    pub swap_events: Family<TenantLabels, Counter>,
    pub scheduling_events: Family<EventLabels, Counter>,
    pub workers: Gauge,
    pub sessions: Family<StateLabels, Gauge>,
    pub device_memory_bytes: Family<DeviceLabels, Gauge>,
    pub device_resident_bytes: Family<DeviceLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            http_requests: Family::default(),
            gpu_seconds: Family::default(),
            vram_gib_seconds: Family::default(),
            bytes_moved: Family::default(),
            swap_events: Family::default(),
            scheduling_events: Family::default(),
            workers: Gauge::default(),
            sessions: Family::default(),
            device_memory_bytes: Family::default(),
            device_resident_bytes: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "gpufn_http_requests",
            "HTTP requests answered, by route and status",
            m.http_requests.clone(),
        );
        registry.register(
            "gpufn_tenant_gpu_seconds",
            "GPU-seconds used, weighted by compute share",
            m.gpu_seconds.clone(),
        );
        registry.register(
            "gpufn_tenant_vram_gib_seconds",
            "Resident VRAM GiB-seconds used",
            m.vram_gib_seconds.clone(),
        );
        registry.register(
            "gpufn_tenant_bytes_moved",
            "Bytes copied between host and device",
            m.bytes_moved.clone(),
        );
        registry.register(
            "gpufn_tenant_swap_events",
            "Swap-outs and swap-ins",
            m.swap_events.clone(),
        );
        registry.register(
            "gpufn_scheduling_events",
            "Placements, swaps, scale-downs and worker changes, by reason",
            m.scheduling_events.clone(),
        );
        registry.register("gpufn_workers", "Registered workers", m.workers.clone());
        registry.register(
            "gpufn_sessions",
            "Live sessions by state",
            m.sessions.clone(),
        );
        registry.register(
            "gpufn_device_memory_bytes",
            "Physical memory of each device",
            m.device_memory_bytes.clone(),
        );
        registry.register(
            "gpufn_device_resident_bytes",
            "Session memory on each device now",
            m.device_resident_bytes.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts a scheduling event.
    pub fn event(&self, event: &'static str, reason: &str) {
        self.scheduling_events
            .get_or_create(&EventLabels {
                event,
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text format (0.0.4), for scrapers that do not ask for OpenMetrics
    /// (and for `promtool check metrics`).
    pub fn render_prometheus(&self) -> String {
        openmetrics_to_prometheus(&self.render())
    }

    /// The OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Rewrites OpenMetrics text as Prometheus text: counters' `HELP`/`TYPE` lines name the
/// `_total` series (OpenMetrics names the family without it), and `# EOF`/`# UNIT` go.
pub fn openmetrics_to_prometheus(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(rewritten.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counter_series_and_drops_eof() {
        let m = Metrics::new();
        m.event("placement", "fit");
        let text = m.render_prometheus();
        assert!(
            text.contains("# TYPE gpufn_scheduling_events_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# HELP gpufn_scheduling_events_total "),
            "{text}"
        );
        assert!(text.contains("# TYPE gpufn_workers gauge"), "{text}");
        assert!(!text.contains("# EOF"));
    }
}
