//! GPU inventory and live telemetry through NVML (`libnvidia-ml.so.1`, loaded at run time
//! by nvml-wrapper). Optional: without NVML the worker still serves sessions, it only lacks
//! utilisation, temperature, power and PCIe figures.

use crate::device::DeviceTelemetry;
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{PcieUtilCounter, TemperatureSensor};

/// NVML, opened for one GPU.
pub struct GpuMonitor {
    nvml: Nvml,
    uuid: String,
}

impl GpuMonitor {
    /// Opens NVML and finds the GPU with this CUDA UUID.
    pub fn open(uuid: [u8; 16]) -> Result<Self, String> {
        let nvml = Nvml::init().map_err(|e| format!("NVML is not available: {e}"))?;
        let uuid = nvml_uuid(uuid);
        nvml.device_by_uuid(uuid.as_str())
            .map_err(|e| format!("NVML does not know GPU {uuid}: {e}"))?;
        Ok(GpuMonitor { nvml, uuid })
    }

    /// A fresh reading; figures the GPU does not report are `None`.
    pub fn sample(&self) -> Result<DeviceTelemetry, String> {
        let device = self
            .nvml
            .device_by_uuid(self.uuid.as_str())
            .map_err(|e| format!("NVML lost GPU {}: {e}", self.uuid))?;
        let memory = device.memory_info().ok();
        let utilization = device.utilization_rates().ok();
        Ok(DeviceTelemetry {
            name: device.name().ok(),
            uuid: self.uuid.clone(),
            memory_total: memory.as_ref().map(|m| m.total),
            memory_used: memory.as_ref().map(|m| m.used),
            gpu_utilization_percent: utilization.as_ref().map(|u| u.gpu),
            memory_utilization_percent: utilization.as_ref().map(|u| u.memory),
            temperature_celsius: device.temperature(TemperatureSensor::Gpu).ok(),
            power_milliwatts: device.power_usage().ok(),
            pcie_tx_kib_per_s: device.pcie_throughput(PcieUtilCounter::Send).ok(),
            pcie_rx_kib_per_s: device.pcie_throughput(PcieUtilCounter::Receive).ok(),
        })
    }
}

/// A CUDA device UUID the way NVML writes it: `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn nvml_uuid(uuid: [u8; 16]) -> String {
    let hex: String = uuid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_written_as_nvml_writes_them() {
        let uuid = [
            0x5f, 0x3a, 0x1b, 0x2c, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99,
            0xaa, 0xbb,
        ];
        assert_eq!(nvml_uuid(uuid), "GPU-5f3a1b2c-0011-2233-4455-66778899aabb");
    }

    #[test]
    fn a_machine_without_nvml_gets_an_error_not_a_panic() {
        if std::path::Path::new("/dev/nvidiactl").exists() {
            return; // a GPU machine: NVML may well be there
        }
        let e = GpuMonitor::open([0; 16])
            .err()
            .expect("no NVML on this machine");
        assert!(e.contains("NVML"), "{e}");
    }
}
