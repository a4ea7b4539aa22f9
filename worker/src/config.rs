//! Worker settings.

use std::str::FromStr;

/// Which device backend the worker drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// A real GPU when a CUDA driver and device are present, else the CPU device.
    #[default]
    Auto,
    /// The PTX interpreter on the host CPU.
    Cpu,
    /// A real GPU through the CUDA driver; startup fails without one.
    Cuda,
}

impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "cpu" => Ok(BackendChoice::Cpu),
            "cuda" => Ok(BackendChoice::Cuda),
            other => Err(format!("unknown backend {other:?}: use auto, cpu or cuda")),
        }
    }
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub backend: BackendChoice,
    /// Device memory quota of each session; `cuMemGetInfo` reports it as the total.
    pub session_memory: u64,
    /// Sessions served at once (each gets its own 1 TiB device address range).
    pub max_sessions: u32,
    /// Bytes of module images kept for reuse across sessions.
    pub module_cache_bytes: u64,
    /// Host threads one kernel launch may use on the CPU device (default: all cores).
    pub launch_threads: usize,
    /// Device memory budget, idle timeouts and the swap store's tiers.
    pub swap: crate::swap::SwapSettings,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            backend: BackendChoice::Auto,
            session_memory: 4 << 30,
            max_sessions: crate::address_space::MAX_SESSION_RANGES,
            module_cache_bytes: 256 << 20,
            launch_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            swap: crate::swap::SwapSettings::default(),
        }
    }
}

/// Parses a byte size: `4GiB`, `512MiB`, `64KiB`, `1G`, `1000000` (binary units; `B`
/// optional).
pub fn parse_size(input: &str) -> Result<u64, String> {
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {input:?}: expected a number like 4GiB or 512MiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(format!(
                "invalid size {input:?}: unknown unit {other:?} (use B, KiB, MiB, GiB or TiB)"
            ));
        }
    };
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("invalid size {input:?}: too large"))
}

/// Parses a duration: `10s`, `500ms`, `2m`, `1h`.
pub fn parse_duration(input: &str) -> Result<std::time::Duration, String> {
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {input:?}: expected a number like 10s or 500ms"))?;
    let millis = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => {
            return Err(format!(
                "invalid duration {input:?}: unknown unit {other:?} (use ms, s, m or h)"
            ));
        }
    };
    value
        .checked_mul(millis)
        .map(std::time::Duration::from_millis)
        .ok_or_else(|| format!("invalid duration {input:?}: too large"))
}

/// Parses a QoS level: `low`, `medium`, `high` or `critical`.
pub fn parse_qos(input: &str) -> Result<gpufn_proto::message::Qos, String> {
    use gpufn_proto::message::Qos;
    match input.trim().to_ascii_lowercase().as_str() {
        "low" => Ok(Qos::Low),
        "medium" => Ok(Qos::Medium),
        "high" => Ok(Qos::High),
        "critical" => Ok(Qos::Critical),
        other => Err(format!(
            "unknown QoS {other:?}: use low, medium, high or critical"
        )),
    }
}

/// Parses `QOS=DURATION`, e.g. `low=2s`.
pub fn parse_qos_timeout(
    input: &str,
) -> Result<(gpufn_proto::message::Qos, std::time::Duration), String> {
    let (qos, duration) = input
        .split_once('=')
        .ok_or_else(|| format!("invalid {input:?}: expected QOS=DURATION, e.g. low=2s"))?;
    Ok((parse_qos(qos)?, parse_duration(duration)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_qos_timeouts_parse() {
        use std::time::Duration;
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").unwrap_err().contains("10s"));
        assert!(parse_duration("3 days").unwrap_err().contains("unit"));
        assert_eq!(
            parse_qos_timeout("low=2s"),
            Ok((gpufn_proto::message::Qos::Low, Duration::from_secs(2)))
        );
        assert!(parse_qos_timeout("urgent=2s").unwrap_err().contains("low"));
        assert!(
            parse_qos_timeout("2s")
                .unwrap_err()
                .contains("QOS=DURATION")
        );
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("lots").unwrap_err().contains("4GiB"));
        assert!(parse_size("3 parsecs").unwrap_err().contains("unit"));
        assert!(parse_size("99999999999TiB").is_err());
    }
}
