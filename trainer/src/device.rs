//! Choosing the compute device: `cpu`, or `cuda` / `cuda:N` in a build with the `cuda` feature.
//!
//! A build without the feature says how to get one; a build with it reports a missing driver
//! or device as an error instead of a panic.

use candle_core::Device;

use crate::error::TrainerError;

/// The message for `cuda` in a build without CUDA support.
pub const NO_CUDA_MESSAGE: &str = "this trainprov was built without CUDA support; rebuild with \
                                   `cargo build --features cuda` (needs the CUDA toolkit)";

/// The device named by `spec`: `"cpu"`, `"cuda"` (device 0) or `"cuda:N"`.
pub fn select(spec: &str) -> Result<Device, TrainerError> {
    let err = |message: String| TrainerError::Device {
        spec: spec.to_string(),
        message,
    };
    match spec {
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(spec, 0),
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => cuda(spec, n),
            _ => Err(err(
                "unknown device; use \"cpu\", \"cuda\" or \"cuda:N\" (N = device index)".into(),
            )),
        },
    }
}

#[cfg(feature = "cuda")]
fn cuda(spec: &str, ordinal: usize) -> Result<Device, TrainerError> {
    // candle's CUDA initialisation can panic deep inside cudarc when the driver is unusable;
    // turn that into an error too.
    let opened = std::panic::catch_unwind(|| Device::new_cuda(ordinal));
    let message = match opened {
        Ok(Ok(device)) => return Ok(device),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "the CUDA runtime panicked while opening the device".to_string(),
    };
    Err(TrainerError::Device {
        spec: spec.to_string(),
        message: format!(
            "cannot open CUDA device {ordinal}: {message}; check that the NVIDIA driver is \
             installed and working (`nvidia-smi`) and that device {ordinal} exists"
        ),
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda(spec: &str, _ordinal: usize) -> Result<Device, TrainerError> {
    Err(TrainerError::Device {
        spec: spec.to_string(),
        message: NO_CUDA_MESSAGE.to_string(),
    })
}

/// A short name for the record: `cpu` or `cuda:N`.
pub fn describe(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_errors() {
        assert!(matches!(select("cpu"), Ok(Device::Cpu)));
        let e = select("tpu").expect_err("unknown").to_string();
        assert!(e.contains("tpu") && e.contains("cuda:N"), "{e}");
        #[cfg(not(feature = "cuda"))]
        {
            let e = select("cuda:1").expect_err("no cuda").to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
    }
}
