//! GPUs seen through the CUDA driver API (cudarc, loaded dynamically); "no GPU" when there is
//! no driver.
//!
//! [`probe`] never fails and never takes the process down: every gap becomes `None` or a
//! [`GpuReport::note`]. The steps:
//!
//! 1. `driver_version` is the NVIDIA kernel module's version from `/proc/driver/nvidia/version`
//!    (`550.54.15`), if that file exists.
//! 2. libcuda is looked for *before* cudarc is touched, because cudarc's dynamic loader panics
//!    when the library is missing. cudarc's own check, `cudarc::driver::sys::is_culib_present`,
//!    is an `unsafe fn` (it calls `dlopen`) and this crate forbids `unsafe`, so [`find_libcuda`]
//!    searches for the file names cudarc would load (the list of `cudarc::get_lib_name_candidates`)
//!    in `LD_LIBRARY_PATH`, the `ld.so` cache and the standard library directories.
//! 3. Only then, on a worker thread, `cuInit`, the device count, and per device: name and UUID
//!    (`cuDeviceGetName`, `cuDeviceGetUuid`), then compute capability and total memory through
//!    a [`cudarc::driver::CudaContext`] (the safe API reaches `cuDeviceGetAttribute` and
//!    `cuDeviceTotalMem` only through a context; retaining the primary context costs a few
//!    hundred milliseconds and some device memory, released when the probe ends). A panic in
//!    the driver bindings is caught; a driver that does not answer within
//!    [`CUDA_PROBE_TIMEOUT`] is abandoned.
//! 4. `cuda_driver_api_version` (the CUDA version the driver supports, `cuDriverGetVersion`)
//!    is likewise only reachable through an `unsafe` binding, so it is read from the
//!    `CUDA Version: 12.4` line of `nvidia-smi`, when a driver was found and `nvidia-smi` runs.
//!
//! Devices are the ones the CUDA runtime of the job would see: `CUDA_VISIBLE_DEVICES` applies.
//!
//! A sample, from a machine without a driver:
//! ```json
//! {
//!   "driver_version": null,
//!   "cuda_driver_api_version": null,
//!   "devices": [],
//!   "note": "no CUDA driver found (libcuda.so not in LD_LIBRARY_PATH, the ld.so cache or the standard library directories)"
//! }
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long the CUDA driver may take to initialise and describe its devices.
pub const CUDA_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `nvidia-smi` may take.
const NVIDIA_SMI_TIMEOUT: Duration = Duration::from_secs(15);

/// What the machine's GPUs and driver looked like.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GpuReport {
    /// NVIDIA driver (kernel module) version, e.g. `550.54.15`.
    pub driver_version: Option<String>,
    /// Highest CUDA version the driver supports, `major.minor`, e.g. `12.4`.
    pub cuda_driver_api_version: Option<String>,
    /// Visible CUDA devices, by ordinal.
    #[serde(default)]
    pub devices: Vec<GpuDevice>,
    /// Why something is missing, e.g. `no CUDA driver found (...)`.
    pub note: Option<String>,
}

/// One CUDA device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuDevice {
    /// CUDA ordinal (after `CUDA_VISIBLE_DEVICES`).
    pub index: u32,
    /// Marketing name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: Option<String>,
    /// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, as `nvidia-smi -L` prints it.
    pub uuid: Option<String>,
    /// Total device memory in bytes.
    pub total_memory_bytes: Option<u64>,
    /// `major.minor`, e.g. `9.0`.
    pub compute_capability: Option<String>,
}

/// Describes the GPUs of this machine. Never panics and never fails; returns quickly (file
/// checks only) where there is no CUDA driver.
pub fn probe() -> GpuReport {
    let mut report = GpuReport {
        driver_version: kernel_module_version(),
        ..GpuReport::default()
    };
    let Some(lib) = find_libcuda() else {
        report.note = Some(
            "no CUDA driver found (libcuda.so not in LD_LIBRARY_PATH, the ld.so cache or the \
             standard library directories)"
                .to_string(),
        );
        return report;
    };
    let smi = nvidia_smi_versions();
    if report.driver_version.is_none() {
        report.driver_version = smi.driver;
    }
    report.cuda_driver_api_version = smi.cuda;
    match probe_devices_in_thread() {
        Ok(devices) if devices.is_empty() => {
            report.note = Some(format!(
                "CUDA driver found ({}) but no device is visible",
                lib.display()
            ));
        }
        Ok(devices) => report.devices = devices,
        Err(why) => report.note = Some(why),
    }
    report
}

/// Reads the kernel module version from `/proc/driver/nvidia/version`, whose first line is
/// e.g. `NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024`.
pub fn kernel_module_version() -> Option<String> {
    let text = std::fs::read_to_string("/proc/driver/nvidia/version").ok()?;
    parse_kernel_module_version(&text)
}

fn parse_kernel_module_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("NVRM version:"))?;
    // The version is the first word after "Kernel Module" (or, on open kernel modules,
    // "Open Kernel Module") that starts with a digit.
    let after = line.split("Kernel Module").nth(1)?;
    after
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
}

/// The driver library's file names, as cudarc 0.19's dynamic loader tries them (its
/// `get_lib_name_candidates` only exists in its dynamic-loading mode, and a `cuda` build of
/// trainprov puts cudarc in dynamic-linking mode, because candle asks for that).
fn libcuda_names(lib: &str) -> Vec<String> {
    use std::env::consts::{DLL_PREFIX, DLL_SUFFIX};
    let mut names = vec![
        format!("{DLL_PREFIX}{lib}{DLL_SUFFIX}"),
        format!("{DLL_PREFIX}{lib}64{DLL_SUFFIX}"),
    ];
    names.extend(
        ["1", "13", "12", "11", "10", "9"]
            .iter()
            .map(|v| format!("{DLL_PREFIX}{lib}{DLL_SUFFIX}.{v}")),
    );
    names
}

/// Finds the CUDA driver library the way the dynamic loader would, without loading it:
/// the file names cudarc tries, in `LD_LIBRARY_PATH`, then the `ld.so` cache, then the
/// standard library directories. Returns the path (or, when only the cache knows it, the bare
/// file name).
pub fn find_libcuda() -> Option<PathBuf> {
    let names: Vec<String> = ["cuda", "nvcuda"]
        .iter()
        .flat_map(|lib| libcuda_names(lib))
        .collect();
    let mut dirs: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    for name in &names {
        if let Some(found) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
            return Some(found);
        }
    }
    if let Ok(cache) = std::fs::read("/etc/ld.so.cache") {
        if let Some(name) = names.iter().find(|n| cache_lists(&cache, n)) {
            return Some(PathBuf::from(name));
        }
    }
    dirs = [
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib/wsl/lib",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    names
        .iter()
        .flat_map(|name| dirs.iter().map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

/// Whether the `ld.so` cache holds `name` as a library name: the cache's string table stores
/// names NUL-terminated, so look for `\0name\0`.
fn cache_lists(cache: &[u8], name: &str) -> bool {
    let mut needle = Vec::with_capacity(name.len() + 2);
    needle.push(0);
    needle.extend_from_slice(name.as_bytes());
    needle.push(0);
    cache.windows(needle.len()).any(|w| w == needle.as_slice())
}

/// Runs the cudarc part on its own thread so that a panic or a hung driver cannot take the
/// caller with it.
fn probe_devices_in_thread() -> Result<Vec<GpuDevice>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("trainprov-gpu-probe".to_string())
        .spawn(move || {
            let outcome = std::panic::catch_unwind(probe_devices).unwrap_or_else(|panic| {
                Err(format!("CUDA probe panicked: {}", panic_text(&*panic)))
            });
            // The receiver may have given up waiting; nothing to do then.
            let _ = tx.send(outcome);
        });
    if let Err(e) = spawned {
        return Err(format!("could not start the CUDA probe thread: {e}"));
    }
    match rx.recv_timeout(CUDA_PROBE_TIMEOUT) {
        Ok(outcome) => outcome,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "CUDA driver did not answer within {} s",
            CUDA_PROBE_TIMEOUT.as_secs()
        )),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err("CUDA probe ended without an answer".to_string())
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// The cudarc calls. Must only run after [`find_libcuda`] found the library.
fn probe_devices() -> Result<Vec<GpuDevice>, String> {
    use cudarc::driver::{result, CudaContext};
    result::init().map_err(|e| format!("CUDA driver found but cuInit failed: {e}"))?;
    let count = result::device::get_count()
        .map_err(|e| format!("CUDA driver found but cuDeviceGetCount failed: {e}"))?;
    let mut devices = Vec::new();
    for ordinal in 0..count.max(0) {
        let Ok(dev) = result::device::get(ordinal) else {
            continue;
        };
        let name = result::device::get_name(dev).ok();
        let uuid = result::device::get_uuid(dev).ok().map(|u| {
            let bytes: Vec<u8> = u.bytes.iter().map(|&b| b as u8).collect();
            format_uuid(&bytes)
        });
        let (compute_capability, total_memory_bytes) =
            match usize::try_from(ordinal).map(CudaContext::new) {
                Ok(Ok(ctx)) => (
                    ctx.compute_capability()
                        .ok()
                        .map(|(major, minor)| format!("{major}.{minor}")),
                    ctx.total_mem().ok().and_then(|m| u64::try_from(m).ok()),
                ),
                _ => (None, None),
            };
        devices.push(GpuDevice {
            index: u32::try_from(ordinal).unwrap_or(u32::MAX),
            name,
            uuid,
            total_memory_bytes,
            compute_capability,
        });
    }
    Ok(devices)
}

/// Formats 16 UUID bytes as `nvidia-smi` does: `GPU-8-4-4-4-12` lowercase hex.
fn format_uuid(bytes: &[u8]) -> String {
    let hex = hex::encode(bytes);
    if hex.len() != 32 {
        return format!("GPU-{hex}");
    }
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[derive(Default)]
struct SmiVersions {
    driver: Option<String>,
    cuda: Option<String>,
}

/// Runs `nvidia-smi` and reads `Driver Version: X` and `CUDA Version: Y` from its banner.
fn nvidia_smi_versions() -> SmiVersions {
    let Ok(out) =
        crate::environment::run_with_timeout(Path::new("nvidia-smi"), &[], NVIDIA_SMI_TIMEOUT)
    else {
        return SmiVersions::default();
    };
    if !out.success {
        return SmiVersions::default();
    }
    parse_nvidia_smi(&out.stdout)
}

fn parse_nvidia_smi(text: &str) -> SmiVersions {
    let after = |label: &str| {
        text.split(label)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
            .map(str::to_string)
    };
    SmiVersions {
        driver: after("Driver Version:"),
        cuda: after("CUDA Version:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_without_driver_reports_a_note() {
        let started = std::time::Instant::now();
        let report = probe();
        let elapsed = started.elapsed();
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("a GPU report serializes")
        );
        if find_libcuda().is_none() {
            assert!(report.devices.is_empty());
            let note = report
                .note
                .as_deref()
                .expect("a note says why there are no GPUs");
            assert!(note.contains("no CUDA driver"), "{note}");
            assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
        } else {
            // A machine with a driver: either devices or a reason.
            assert!(!report.devices.is_empty() || report.note.is_some());
        }
    }

    #[test]
    fn report_round_trips_through_json() {
        let report = GpuReport {
            driver_version: Some("550.54.15".into()),
            cuda_driver_api_version: Some("12.4".into()),
            devices: vec![GpuDevice {
                index: 0,
                name: Some("NVIDIA H100 80GB HBM3".into()),
                uuid: Some("GPU-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into()),
                total_memory_bytes: Some(85_520_809_984),
                compute_capability: Some("9.0".into()),
            }],
            note: None,
        };
        let json = serde_json::to_string(&report).expect("serializes");
        let back: GpuReport = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, report);
    }

    #[test]
    fn parses_driver_banners() {
        let proc = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\nGCC version:  gcc version 12.2.0\n";
        assert_eq!(
            parse_kernel_module_version(proc).as_deref(),
            Some("550.54.15")
        );
        let open =
            "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build\n";
        assert_eq!(
            parse_kernel_module_version(open).as_deref(),
            Some("570.86.15")
        );
        let smi = "| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |";
        let v = parse_nvidia_smi(smi);
        assert_eq!(v.driver.as_deref(), Some("550.54.15"));
        assert_eq!(v.cuda.as_deref(), Some("12.4"));
    }

    #[test]
    fn uuid_format_matches_nvidia_smi() {
        let bytes: Vec<u8> = (0u8..16).collect();
        assert_eq!(
            format_uuid(&bytes),
            "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f"
        );
    }

    #[test]
    fn ld_cache_lookup_needs_whole_names() {
        let cache = b"xx\0libcuda.so.1\0libcudart.so.12\0";
        assert!(cache_lists(cache, "libcuda.so.1"));
        assert!(!cache_lists(cache, "libcuda.so"));
    }
}
