//! The machine a run ran on: OS, CPU and ISA features, memory, libc, toolchain, thread and
//! determinism variables, Python.
//!
//! Training results depend on more than code and data: the CPU's SIMD level picks different
//! kernels, thread counts change how reductions are split, libm versions change transcendental
//! functions (see `shared/DESIGN.md`, "The trainer's determinism contract"). [`capture`]
//! records what can matter; [`compare`] tells `trainprov retrain` what changed since, with a
//! [`Severity`] so it can warn, or refuse under `--strict`.
//!
//! Where each field comes from:
//!
//! | field | source |
//! |---|---|
//! | `os` | `std::env::consts::OS`; `NAME`, `VERSION_ID`, `PRETTY_NAME` of `/etc/os-release` (or `/usr/lib/os-release`) |
//! | `kernel` | `/proc/sys/kernel/osrelease`, else `uname -r` |
//! | `arch` | `std::env::consts::ARCH` (what this binary was built for) |
//! | `cpu.model` | `model name` of `/proc/cpuinfo` (`Hardware` / `CPU part` on some ARM) |
//! | `cpu.logical_cores` | `std::thread::available_parallelism` (honours affinity and cgroup quotas) |
//! | `cpu.features` | `is_x86_feature_detected!` / `is_aarch64_feature_detected!` at run time (CPU *and* OS support) |
//! | `cpu.isa_level` | derived from the features: `x86-64-v1` .. `x86-64-v4`, see [`isa_level`] |
//! | `memory_total_bytes` | `MemTotal` of `/proc/meminfo` |
//! | `glibc_version` | `getconf GNU_LIBC_VERSION`, else the first line of `ldd --version`; `null` on musl |
//! | `trainprov_version` | this crate's `CARGO_PKG_VERSION` (the workspace version) |
//! | `rustc_version` | `$RUSTC --version` when this crate was built (`build.rs`) |
//! | `env` | [`crate::redact::filtered_env`]: allow-listed, secret names dropped, values redacted |
//! | `python` | only when the job is a Python program: [`capture_python_as_run`] (version, `sys.executable`, the binary it resolves to and its SHA-256, `pip freeze` digest and package versions) |
//! | `gpu` | [`crate::gpu::probe`] |
//!
//! The host name, user name and home directory are not recorded: they identify a person or a
//! machine, the record is meant to be shared, and they do not change results.
//!
//! A sample (this machine, no GPU; `env` shortened):
//! ```json
//! {
//!   "schema_version": 1,
//!   "os": {
//!     "family": "linux",
//!     "name": "Debian GNU/Linux",
//!     "version": "12",
//!     "pretty_name": "Debian GNU/Linux 12 (bookworm)"
//!   },
//!   "kernel": "6.18.44-fc-v595",
//!   "arch": "x86_64",
//!   "cpu": {
//!     "model": "Intel(R) Xeon(R) Processor",
//!     "logical_cores": 2,
//!     "features": ["sse2", "sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "cmpxchg16b",
//!                  "avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "lzcnt", "movbe", "xsave",
//!                  "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx512vnni",
//!                  "avx512bf16", "..."],
//!     "isa_level": "x86-64-v4"
//!   },
//!   "memory_total_bytes": 25276514304,
//!   "glibc_version": "2.36",
//!   "trainprov_version": "0.1.0",
//!   "rustc_version": "rustc 1.95.0 (59807616e 2026-04-14)",
//!   "env": { "LANG": "C.UTF-8", "PATH": "/usr/local/bin:/usr/bin:/bin" },
//!   "python": null,
//!   "gpu": {
//!     "driver_version": null,
//!     "cuda_driver_api_version": null,
//!     "devices": [],
//!     "note": "no CUDA driver found (libcuda.so not in LD_LIBRARY_PATH, the ld.so cache or the standard library directories)"
//!   }
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::gpu::GpuReport;

/// Version of the [`Environment`] JSON layout.
pub const ENVIRONMENT_SCHEMA_VERSION: u32 = 1;

/// How long `python --version` and `pip freeze` may take.
pub const PYTHON_TIMEOUT: Duration = Duration::from_secs(20);

/// How long small helper programs (`getconf`, `ldd`, `uname`) may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything recorded about the machine and process environment of a run.
///
/// Field order is the serialization order; maps are sorted, so the JSON is deterministic for a
/// given machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// [`ENVIRONMENT_SCHEMA_VERSION`] at the time of writing.
    pub schema_version: u32,
    /// Operating system.
    pub os: OsInfo,
    /// Kernel release, e.g. `6.8.0-45-generic`.
    pub kernel: Option<String>,
    /// CPU architecture this binary runs as, e.g. `x86_64`, `aarch64`.
    pub arch: String,
    /// Processor model and instruction-set features.
    pub cpu: CpuInfo,
    /// Physical memory in bytes.
    pub memory_total_bytes: Option<u64>,
    /// GNU libc version, e.g. `2.36`; `None` on other libcs.
    pub glibc_version: Option<String>,
    /// Version of trainprov that made the record.
    pub trainprov_version: String,
    /// `rustc --version` of the compiler that built trainprov.
    pub rustc_version: Option<String>,
    /// Allow-listed, redacted environment variables (see [`crate::redact`]).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The Python interpreter, when the job was a Python program.
    pub python: Option<PythonInfo>,
    /// GPUs and driver.
    #[serde(default)]
    pub gpu: GpuReport,
}

/// Operating system identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsInfo {
    /// `std::env::consts::OS`, e.g. `linux`.
    pub family: String,
    /// `NAME` from os-release, e.g. `Ubuntu`.
    pub name: Option<String>,
    /// `VERSION_ID` from os-release, e.g. `22.04`.
    pub version: Option<String>,
    /// `PRETTY_NAME` from os-release, e.g. `Ubuntu 22.04.4 LTS`.
    pub pretty_name: Option<String>,
}

/// Processor model and the instruction-set features that select numeric kernels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuInfo {
    /// Model string, e.g. `AMD EPYC 7763 64-Core Processor`.
    pub model: Option<String>,
    /// Threads this process may run in parallel.
    pub logical_cores: Option<usize>,
    /// Detected features, in a fixed order (roughly by ISA level), named as
    /// `is_x86_feature_detected!` / `is_aarch64_feature_detected!` name them.
    #[serde(default)]
    pub features: Vec<String>,
    /// Summary of `features`, see [`isa_level`].
    pub isa_level: String,
}

/// The Python interpreter that ran the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythonInfo {
    /// `sys.executable`, or the program as given when that could not be asked.
    pub executable: String,
    /// e.g. `3.11.7`.
    pub version: Option<String>,
    /// Lowercase hex SHA-256 of the (redacted) `pip freeze` text, which the caller stores in
    /// the object store.
    pub pip_freeze_sha256: Option<String>,
    /// Why `pip freeze` gave nothing, e.g. `No module named pip`.
    pub pip_freeze_error: Option<String>,
    /// `executable` with every symbolic link resolved: the interpreter binary itself (a venv's
    /// `bin/python` is a link to the interpreter it was made from). Absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
    /// Lowercase hex SHA-256 of the `resolved` binary. Absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Installed distributions by normalized name (PEP 503: lowercase, runs of `-_.` as `-`)
    /// with their version, parsed from the `pip freeze` text ([`parse_pip_freeze`]); empty
    /// when there was none (and in older records).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub packages: BTreeMap<String, String>,
}

/// What [`capture_python`] found: the record, plus the `pip freeze` text to store by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonCapture {
    /// Goes into [`Environment::python`].
    pub info: PythonInfo,
    /// Redacted output of `pip freeze` (URLs with credentials removed); its SHA-256 is
    /// `info.pip_freeze_sha256`.
    pub pip_freeze: Option<String>,
}

/// Captures the environment of this process. Never fails and never panics: whatever cannot be
/// found is `None` (or, for the GPU, explained in [`GpuReport::note`]). `python` is left
/// `None`; fill it with [`capture_python`] when the job is a Python program.
pub fn capture() -> Environment {
    let features = cpu_features();
    let isa = isa_level(&features);
    Environment {
        schema_version: ENVIRONMENT_SCHEMA_VERSION,
        os: os_info(),
        kernel: kernel_release(),
        arch: std::env::consts::ARCH.to_string(),
        cpu: CpuInfo {
            model: cpu_model(),
            logical_cores: std::thread::available_parallelism()
                .ok()
                .map(std::num::NonZeroUsize::get),
            features,
            isa_level: isa,
        },
        memory_total_bytes: memory_total_bytes(),
        glibc_version: glibc_version(),
        trainprov_version: env!("CARGO_PKG_VERSION").to_string(),
        rustc_version: option_env!("TRAINPROV_RUSTC_VERSION").map(str::to_string),
        env: crate::redact::filtered_env(std::env::vars_os().filter_map(|(name, value)| {
            // Names that are not UTF-8 are not on the allow-list anyway.
            Some((
                name.into_string().ok()?,
                value.to_string_lossy().into_owned(),
            ))
        })),
        python: None,
        gpu: crate::gpu::probe(),
    }
}

// ---------------------------------------------------------------------------------------------
// OS, kernel, memory, libc

fn os_info() -> OsInfo {
    let fields = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|text| parse_os_release(&text))
        .unwrap_or_default();
    OsInfo {
        family: std::env::consts::OS.to_string(),
        name: fields.get("NAME").cloned(),
        version: fields.get("VERSION_ID").cloned(),
        pretty_name: fields.get("PRETTY_NAME").cloned(),
    }
}

/// Parses os-release(5): `KEY=value` lines, values optionally in single or double quotes with
/// backslash escapes.
fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let (key, raw) = line.split_once('=')?;
            let raw = raw.trim();
            let unquoted = if raw.len() >= 2
                && ((raw.starts_with('"') && raw.ends_with('"'))
                    || (raw.starts_with('\'') && raw.ends_with('\'')))
            {
                &raw[1..raw.len() - 1]
            } else {
                raw
            };
            let mut value = String::with_capacity(unquoted.len());
            let mut chars = unquoted.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        value.push(next);
                    }
                } else {
                    value.push(c);
                }
            }
            Some((key.trim().to_string(), value))
        })
        .collect()
}

fn kernel_release() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            let out = run_with_timeout(Path::new("uname"), &["-r"], HELPER_TIMEOUT).ok()?;
            let release = out.stdout.trim();
            (out.success && !release.is_empty()).then(|| release.to_string())
        })
}

fn memory_total_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo_total(&text)
}

/// `MemTotal:       24684096 kB` -> bytes.
fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let amount: u64 = words.next()?.parse().ok()?;
    let factor = match words.next() {
        Some("kB") | Some("KB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    amount.checked_mul(factor)
}

fn glibc_version() -> Option<String> {
    if let Ok(out) = run_with_timeout(Path::new("getconf"), &["GNU_LIBC_VERSION"], HELPER_TIMEOUT) {
        if out.success {
            if let Some(v) = parse_getconf_glibc(&out.stdout) {
                return Some(v);
            }
        }
    }
    let out = run_with_timeout(Path::new("ldd"), &["--version"], HELPER_TIMEOUT).ok()?;
    if !out.success {
        return None;
    }
    parse_ldd_version(&out.stdout)
}

/// `glibc 2.36` -> `2.36`.
fn parse_getconf_glibc(text: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    (words.next()? == "glibc")
        .then(|| words.next())
        .flatten()
        .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
}

/// `ldd (Debian GLIBC 2.36-9+deb12u14) 2.36` -> `2.36`; only for GNU libc.
fn parse_ldd_version(text: &str) -> Option<String> {
    let first = text.lines().next()?;
    let lower = first.to_ascii_lowercase();
    if !(lower.contains("glibc") || lower.contains("gnu libc")) {
        return None;
    }
    first
        .split_whitespace()
        .last()
        .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
}

// ---------------------------------------------------------------------------------------------
// CPU

fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    parse_cpu_model(&text)
}

/// The first of `model name` (x86, most ARM servers), `Hardware`, `cpu model` (MIPS),
/// `Processor` / `CPU part` (older ARM kernels) found in `/proc/cpuinfo`.
fn parse_cpu_model(text: &str) -> Option<String> {
    let field = |key: &str| {
        text.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == key && !v.trim().is_empty()).then(|| v.trim().to_string())
        })
    };
    [
        "model name",
        "Hardware",
        "cpu model",
        "Processor",
        "CPU part",
    ]
    .iter()
    .find_map(|k| field(k))
}

/// Features detected on this CPU, in a fixed order.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
pub fn cpu_features() -> Vec<String> {
    let mut found = Vec::new();
    macro_rules! detect {
        ($($feature:tt),* $(,)?) => {
            $( if std::arch::is_x86_feature_detected!($feature) { found.push($feature.to_string()); } )*
        };
    }
    // x86-64-v1 .. v2
    detect!(
        "sse2",
        "sse3",
        "ssse3",
        "sse4.1",
        "sse4.2",
        "popcnt",
        "cmpxchg16b"
    );
    // x86-64-v3
    detect!("avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "lzcnt", "movbe", "xsave");
    // x86-64-v4 and later AVX-512 extensions
    detect!(
        "avx512f",
        "avx512bw",
        "avx512cd",
        "avx512dq",
        "avx512vl",
        "avx512ifma",
        "avx512vbmi",
        "avx512vbmi2",
        "avx512vnni",
        "avx512bitalg",
        "avx512vpopcntdq",
        "avx512bf16",
        "avx512fp16",
    );
    // VEX-encoded AI extensions and crypto that BLAS/gemm or hashing may dispatch on.
    detect!(
        "avxvnni",
        "gfni",
        "vaes",
        "vpclmulqdq",
        "aes",
        "pclmulqdq",
        "sha"
    );
    found
}

/// Features detected on this CPU, in a fixed order.
#[cfg(target_arch = "aarch64")]
pub fn cpu_features() -> Vec<String> {
    let mut found = Vec::new();
    macro_rules! detect {
        ($($feature:tt),* $(,)?) => {
            $( if std::arch::is_aarch64_feature_detected!($feature) { found.push($feature.to_string()); } )*
        };
    }
    detect!(
        "neon", "fp16", "fhm", "dotprod", "i8mm", "bf16", "f32mm", "f64mm", "sve", "sve2", "aes",
        "sha2", "sha3", "crc", "lse", "rcpc",
    );
    found
}

/// Features detected on this CPU, in a fixed order (none known for this architecture).
#[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
pub fn cpu_features() -> Vec<String> {
    Vec::new()
}

/// Summarises a feature list as one ISA level, for quick comparison across machines.
///
/// On x86-64 these are the psABI micro-architecture levels, as far as the standard library
/// can detect them (it cannot see `LAHF/SAHF`, part of v2):
/// - `x86-64-v4`: v3 + `avx512f avx512bw avx512cd avx512dq avx512vl`
/// - `x86-64-v3`: v2 + `avx avx2 bmi1 bmi2 f16c fma lzcnt movbe xsave`
/// - `x86-64-v2`: `cmpxchg16b popcnt sse3 ssse3 sse4.1 sse4.2`
/// - `x86-64-v1`: anything else
///
/// On aarch64: `aarch64-sve2`, `aarch64-sve`, `aarch64-dotprod` or `aarch64-neon` (the highest
/// present). Elsewhere: the architecture name.
pub fn isa_level(features: &[String]) -> String {
    let has_all = |names: &[&str]| names.iter().all(|n| features.iter().any(|f| f == n));
    match std::env::consts::ARCH {
        "x86_64" => {
            const V2: &[&str] = &["cmpxchg16b", "popcnt", "sse3", "ssse3", "sse4.1", "sse4.2"];
            const V3: &[&str] = &[
                "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave",
            ];
            const V4: &[&str] = &["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"];
            let level = if !has_all(V2) {
                1
            } else if !has_all(V3) {
                2
            } else if !has_all(V4) {
                3
            } else {
                4
            };
            format!("x86-64-v{level}")
        }
        "aarch64" => {
            let level = ["sve2", "sve", "dotprod"]
                .into_iter()
                .find(|f| has_all(&[f]))
                .unwrap_or("neon");
            format!("aarch64-{level}")
        }
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Python

/// Whether a job's `argv[0]` is a Python interpreter: `python`, `python3`, `python3.11`,
/// `python3.13t`, `pypy3`, any of these with a directory (`/venv/bin/python`) or `.exe`.
/// Launchers such as `uv run` or `conda run` are not recognised.
pub fn looks_like_python(argv0: &str) -> bool {
    let base = argv0.rsplit(['/', '\\']).next().unwrap_or(argv0);
    let base = base.strip_suffix(".exe").unwrap_or(base);
    let Some(rest) = base
        .strip_prefix("python")
        .or_else(|| base.strip_prefix("pypy"))
    else {
        return false;
    };
    // Version digits and dots, optionally a build-flavour suffix (t = free-threaded, d = debug,
    // m = pymalloc, w = Windows GUI).
    let rest = rest.strip_suffix(['t', 'd', 'm', 'w']).unwrap_or(rest);
    rest.bytes().all(|b| b.is_ascii_digit() || b == b'.') && !rest.starts_with('.')
}

/// Asks the interpreter `program` for its version, `sys.executable` and `pip freeze`.
///
/// Returns `None` when `program --version` does not run or does not print a Python version.
/// `pip freeze` failing (no pip, timeout) is recorded in
/// [`PythonInfo::pip_freeze_error`]. The freeze text goes through
/// [`crate::redact::redact_text`], because requirements such as
/// `pkg @ git+https://user:token@host/repo` carry credentials. Each program gets
/// [`PYTHON_TIMEOUT`].
pub fn capture_python(program: &str) -> Option<PythonCapture> {
    capture_python_as_run(program, None, &[])
}

/// [`capture_python`] as the job ran it: `program` resolved from the working directory `cwd`
/// (default: this process's), with the job's environment changes `env` (`Some` sets, `None`
/// removes) applied, so `PYTHONPATH` or a replaced `PATH` lead to the interpreter and packages
/// the job saw. Also records the interpreter binary with links resolved and its SHA-256.
pub fn capture_python_as_run(
    program: &str,
    cwd: Option<&Path>,
    env: &[(String, Option<String>)],
) -> Option<PythonCapture> {
    let program_path = match cwd {
        Some(dir) if program.contains('/') && Path::new(program).is_relative() => dir.join(program),
        _ => Path::new(program).to_path_buf(),
    };
    let program_path = program_path.as_path();
    let run = |args: &[&str]| run_with_timeout_env(program_path, args, PYTHON_TIMEOUT, cwd, env);
    let out = run(&["--version"]).ok()?;
    if !out.success {
        return None;
    }
    // Python 2 printed its version on stderr.
    let version =
        parse_python_version(&out.stdout).or_else(|| parse_python_version(&out.stderr))?;
    let executable = run(&["-c", "import sys; print(sys.executable)"])
        .ok()
        .filter(|o| o.success)
        .map(|o| o.stdout.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| program.to_string());
    let freeze = run(&["-m", "pip", "freeze", "--disable-pip-version-check"]);
    let (pip_freeze, pip_freeze_error) = match freeze {
        Ok(o) if o.success => (Some(crate::redact::redact_text(&o.stdout)), None),
        Ok(o) => {
            let why = o
                .stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("pip freeze failed")
                .trim()
                .to_string();
            (None, Some(crate::redact::redact_text(&why)))
        }
        Err(why) => (None, Some(why)),
    };
    let pip_freeze_sha256 = pip_freeze
        .as_ref()
        .map(|text| hex::encode(Sha256::digest(text.as_bytes())));
    let resolved = std::fs::canonicalize(&executable).ok();
    let sha256 = resolved
        .as_ref()
        .and_then(|p| crate::file_digest::sha256_file(p).ok());
    Some(PythonCapture {
        info: PythonInfo {
            executable: crate::redact::redact_text(&executable),
            version: Some(version),
            pip_freeze_sha256,
            pip_freeze_error,
            resolved: resolved.map(|p| crate::redact::redact_text(&p.display().to_string())),
            sha256,
            packages: pip_freeze
                .as_deref()
                .map(parse_pip_freeze)
                .unwrap_or_default(),
        },
        pip_freeze,
    })
}

/// The distributions of a `pip freeze` text by normalized name (PEP 503: lowercase, runs of
/// `-`, `_` and `.` as one `-`): `name==version` gives the version, `name @ URL` the URL (as
/// redacted); editable (`-e`), comment and option lines are left out.
pub fn parse_pip_freeze(text: &str) -> BTreeMap<String, String> {
    let normalize = |name: &str| {
        let mut out = String::with_capacity(name.len());
        for c in name.trim().chars() {
            if matches!(c, '-' | '_' | '.') {
                if !out.ends_with('-') {
                    out.push('-');
                }
            } else {
                out.push(c.to_ascii_lowercase());
            }
        }
        out
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('-'))
        .filter_map(|line| {
            let (name, version) = line.split_once("==").or_else(|| line.split_once(" @ "))?;
            let name = normalize(name);
            (!name.is_empty()).then(|| (name, version.trim().to_string()))
        })
        .collect()
}

/// Applies a job's environment changes (`Some` sets, `None` removes) to a recorded variable
/// map, by the same rules as [`crate::redact::filtered_env`]: only allow-listed names that are
/// not secret, values redacted. Gives the variables the job itself saw.
pub fn apply_env_changes(
    vars: &mut BTreeMap<String, String>,
    changes: &[(String, Option<String>)],
) {
    for (name, value) in changes {
        match value {
            None => {
                vars.remove(name);
            }
            Some(value) => {
                vars.extend(crate::redact::filtered_env([(name.clone(), value.clone())]));
            }
        }
    }
}

/// `Python 3.11.7` -> `3.11.7`.
fn parse_python_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("Python "))?;
    line.split_whitespace()
        .nth(1)
        .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
}

// ---------------------------------------------------------------------------------------------
// Comparison

/// How much a difference matters for reproducing a run's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Recorded for the reader; not expected to change results (CPU model name, kernel, paths).
    Info,
    /// Can change results (SIMD level, thread counts, library versions, GPU model):
    /// `retrain` warns, and refuses under `--strict`.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
        })
    }
}

/// One way the current environment differs from a recorded one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvDifference {
    /// Dotted path of the field, e.g. `cpu.isa_level`, `env.OMP_NUM_THREADS`, `gpu.devices[0].name`.
    pub field: String,
    /// The recorded value (`None`: absent). For `cpu.features`, the features only the recorded
    /// machine had.
    pub recorded: Option<String>,
    /// The current value (`None`: absent). For `cpu.features`, the features only this machine has.
    pub current: Option<String>,
    /// Whether this can change results.
    pub severity: Severity,
}

impl fmt::Display for EnvDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".to_string());
        write!(
            f,
            "{}: {}: recorded {}, now {}",
            self.severity,
            self.field,
            show(&self.recorded),
            show(&self.current)
        )
    }
}

/// Environment variables whose change can change results: thread counts, kernel selection,
/// determinism switches, hash seeds, compiler flags and number formatting. Entries ending in
/// `*` are prefixes. Other recorded variables differ with [`Severity::Info`].
pub const RESULT_AFFECTING_ENV: &[&str] = &[
    "OMP_*",
    "MKL_*",
    "OPENBLAS_*",
    "BLIS_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_*",
    "KMP_*",
    "GOMP_*",
    "RAYON_NUM_THREADS",
    "RAYON_RS_NUM_CPUS",
    "CUDA_VISIBLE_DEVICES",
    "CUBLAS_WORKSPACE_CONFIG",
    "NVIDIA_TF32_OVERRIDE",
    "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
    "TF_DETERMINISTIC_OPS",
    "TF_CUDNN_DETERMINISTIC",
    "TF_ENABLE_ONEDNN_OPTS",
    "XLA_FLAGS",
    "JAX_*",
    "CANDLE_*",
    "PYTHONHASHSEED",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "LC_ALL",
    "LC_NUMERIC",
];

fn env_severity(name: &str) -> Severity {
    let affects = RESULT_AFFECTING_ENV
        .iter()
        .any(|entry| match entry.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *entry,
        });
    if affects {
        Severity::Warning
    } else {
        Severity::Info
    }
}

/// Lists the meaningful differences between a recorded environment and the current one, in a
/// fixed order (the order of [`Environment`]'s fields; variables by name; GPUs by index).
///
/// Warnings: `arch`, `cpu.isa_level`, `cpu.features`, `glibc_version`, `trainprov_version`,
/// variables in [`RESULT_AFFECTING_ENV`], the Python version, the interpreter binary's SHA-256,
/// each Python package whose version differs (`python.packages.NAME`; the `pip freeze` digest
/// when either side has no package list), the GPU count, each GPU's name and compute
/// capability, and the CUDA driver API version.
/// Info: OS, kernel, CPU model, core count, `rustc_version` (our numeric code does not
/// reassociate floating point, so the compiler alone does not change bytes), other variables,
/// the Python executable and the path it resolves to, GPU UUIDs and memory, and the NVIDIA
/// driver version.
/// Total memory is not compared.
pub fn compare(recorded: &Environment, current: &Environment) -> Vec<EnvDifference> {
    let mut diffs = Vec::new();
    let mut check = |field: String, a: Option<String>, b: Option<String>, severity: Severity| {
        if a != b {
            diffs.push(EnvDifference {
                field,
                recorded: a,
                current: b,
                severity,
            });
        }
    };
    use Severity::{Info, Warning};
    let s = |v: &str| Some(v.to_string());

    check(
        "os.name".into(),
        recorded.os.name.clone(),
        current.os.name.clone(),
        Info,
    );
    check(
        "os.version".into(),
        recorded.os.version.clone(),
        current.os.version.clone(),
        Info,
    );
    check(
        "kernel".into(),
        recorded.kernel.clone(),
        current.kernel.clone(),
        Info,
    );
    check("arch".into(), s(&recorded.arch), s(&current.arch), Warning);
    check(
        "cpu.model".into(),
        recorded.cpu.model.clone(),
        current.cpu.model.clone(),
        Info,
    );
    check(
        "cpu.logical_cores".into(),
        recorded.cpu.logical_cores.map(|n| n.to_string()),
        current.cpu.logical_cores.map(|n| n.to_string()),
        Info,
    );
    check(
        "cpu.isa_level".into(),
        s(&recorded.cpu.isa_level),
        s(&current.cpu.isa_level),
        Warning,
    );
    let old: BTreeSet<&str> = recorded.cpu.features.iter().map(String::as_str).collect();
    let new: BTreeSet<&str> = current.cpu.features.iter().map(String::as_str).collect();
    if old != new {
        let join = |set: Vec<&str>| Some(set.join(" "));
        let only_old = join(old.difference(&new).copied().collect());
        let only_new = join(new.difference(&old).copied().collect());
        check("cpu.features".into(), only_old, only_new, Warning);
    }
    check(
        "glibc_version".into(),
        recorded.glibc_version.clone(),
        current.glibc_version.clone(),
        Warning,
    );
    check(
        "trainprov_version".into(),
        s(&recorded.trainprov_version),
        s(&current.trainprov_version),
        Warning,
    );
    check(
        "rustc_version".into(),
        recorded.rustc_version.clone(),
        current.rustc_version.clone(),
        Info,
    );
    let names: BTreeSet<&String> = recorded.env.keys().chain(current.env.keys()).collect();
    for name in names {
        check(
            format!("env.{name}"),
            recorded.env.get(name).cloned(),
            current.env.get(name).cloned(),
            env_severity(name),
        );
    }
    // Python: only compared when the run recorded one.
    if let Some(old) = &recorded.python {
        let new = current.python.as_ref();
        check(
            "python.version".into(),
            old.version.clone(),
            new.and_then(|p| p.version.clone()),
            Warning,
        );
        check(
            "python.executable".into(),
            s(&old.executable),
            new.map(|p| p.executable.clone()),
            Info,
        );
        if old.resolved.is_some() {
            check(
                "python.resolved".into(),
                old.resolved.clone(),
                new.and_then(|p| p.resolved.clone()),
                Info,
            );
        }
        if old.sha256.is_some() {
            check(
                "python.sha256".into(),
                old.sha256.clone(),
                new.and_then(|p| p.sha256.clone()),
                Warning,
            );
        }
        match new.filter(|p| !old.packages.is_empty() && !p.packages.is_empty()) {
            // Both sides list their packages: name the ones that differ.
            Some(new) => {
                let names: BTreeSet<&String> =
                    old.packages.keys().chain(new.packages.keys()).collect();
                for name in names {
                    check(
                        format!("python.packages.{name}"),
                        old.packages.get(name).cloned(),
                        new.packages.get(name).cloned(),
                        Warning,
                    );
                }
            }
            None => check(
                "python.pip_freeze_sha256".into(),
                old.pip_freeze_sha256.clone(),
                new.and_then(|p| p.pip_freeze_sha256.clone()),
                Warning,
            ),
        }
    }
    let (old_gpu, new_gpu) = (&recorded.gpu, &current.gpu);
    check(
        "gpu.driver_version".into(),
        old_gpu.driver_version.clone(),
        new_gpu.driver_version.clone(),
        Info,
    );
    check(
        "gpu.cuda_driver_api_version".into(),
        old_gpu.cuda_driver_api_version.clone(),
        new_gpu.cuda_driver_api_version.clone(),
        Warning,
    );
    check(
        "gpu.devices.len".into(),
        s(&old_gpu.devices.len().to_string()),
        s(&new_gpu.devices.len().to_string()),
        Warning,
    );
    for (i, (a, b)) in old_gpu.devices.iter().zip(&new_gpu.devices).enumerate() {
        check(
            format!("gpu.devices[{i}].name"),
            a.name.clone(),
            b.name.clone(),
            Warning,
        );
        check(
            format!("gpu.devices[{i}].compute_capability"),
            a.compute_capability.clone(),
            b.compute_capability.clone(),
            Warning,
        );
        check(
            format!("gpu.devices[{i}].uuid"),
            a.uuid.clone(),
            b.uuid.clone(),
            Info,
        );
        check(
            format!("gpu.devices[{i}].total_memory_bytes"),
            a.total_memory_bytes.map(|n| n.to_string()),
            b.total_memory_bytes.map(|n| n.to_string()),
            Info,
        );
    }
    diffs
}

// ---------------------------------------------------------------------------------------------
// Running helper programs

/// What a helper program printed.
#[derive(Debug)]
pub(crate) struct CmdOutput {
    /// Exit status 0.
    pub success: bool,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

/// Most bytes kept from one stream of a helper program.
const MAX_OUTPUT: u64 = 64 * 1024 * 1024;

/// Runs `program args` with stdin closed, collecting its output, and kills it (with its whole
/// process group, so children go too) when it outlives `timeout`.
pub(crate) fn run_with_timeout(
    program: &Path,
    args: &[&str],
    timeout: Duration,
) -> Result<CmdOutput, String> {
    run_with_timeout_env(program, args, timeout, None, &[])
}

/// [`run_with_timeout`] in `cwd` (default: this process's), with environment changes (`Some`
/// sets, `None` removes).
pub(crate) fn run_with_timeout_env(
    program: &Path,
    args: &[&str],
    timeout: Duration,
    cwd: Option<&Path>,
    env: &[(String, Option<String>)],
) -> Result<CmdOutput, String> {
    let mut command = Command::new(program);
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    for (name, value) in env {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        command.process_group(0);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("could not run {}: {e}", program.display()))?;
    let read = |stream: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(stream) = stream {
                // A read error leaves what was read so far.
                let _ = stream.take(MAX_OUTPUT).read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = read(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let stderr = read(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            outcome => {
                kill_group(&mut child);
                return Err(match outcome {
                    Err(e) => format!("waiting for {} failed: {e}", program.display()),
                    _ => format!(
                        "{} did not finish within {} s",
                        program.display(),
                        timeout.as_secs()
                    ),
                });
            }
        }
    };
    Ok(CmdOutput {
        success: status.success(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::GpuDevice;

    #[test]
    fn capture_on_this_machine_is_plausible() {
        let env = capture();
        println!(
            "{}",
            serde_json::to_string_pretty(&env).expect("an environment serializes")
        );
        assert_eq!(env.schema_version, ENVIRONMENT_SCHEMA_VERSION);
        assert_eq!(env.arch, std::env::consts::ARCH);
        assert!(!env.cpu.isa_level.is_empty());
        assert!(env.cpu.logical_cores.is_some_and(|n| n >= 1));
        assert!(!env.trainprov_version.is_empty());
        assert!(
            env.rustc_version
                .as_deref()
                .is_some_and(|v| v.starts_with("rustc ")),
            "{:?}",
            env.rustc_version
        );
        if cfg!(target_os = "linux") {
            let model = env
                .cpu
                .model
                .as_deref()
                .expect("/proc/cpuinfo names the CPU");
            assert!(!model.trim().is_empty());
            assert!(env.kernel.is_some());
            assert!(env.memory_total_bytes.is_some_and(|m| m > 1 << 20));
        }
        if cfg!(target_arch = "x86_64") {
            assert!(
                env.cpu.features.iter().any(|f| f == "sse2"),
                "{:?}",
                env.cpu.features
            );
            assert!(
                env.cpu.isa_level.starts_with("x86-64-v"),
                "{}",
                env.cpu.isa_level
            );
        }
        assert!(!env.env.keys().any(|k| crate::redact::is_secret_name(k)));
    }

    #[test]
    fn environment_round_trips_through_json() {
        let mut env = capture();
        env.python = Some(PythonInfo {
            executable: "/venv/bin/python".into(),
            version: Some("3.11.7".into()),
            pip_freeze_sha256: Some("ab".repeat(32)),
            pip_freeze_error: None,
            resolved: Some("/usr/bin/python3.11".into()),
            sha256: Some("cd".repeat(32)),
            packages: parse_pip_freeze("torch==1.13.0a0+gitunknown\npeft==0.10.0\n"),
        });
        env.gpu.devices.push(GpuDevice {
            index: 0,
            name: Some("NVIDIA A100-SXM4-80GB".into()),
            uuid: Some("GPU-00010203-0405-0607-0809-0a0b0c0d0e0f".into()),
            total_memory_bytes: Some(85_899_345_920),
            compute_capability: Some("8.0".into()),
        });
        let json = serde_json::to_string_pretty(&env).expect("serializes");
        let back: Environment = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, env);
        // Deterministic: serializing again gives the same bytes.
        assert_eq!(
            serde_json::to_string_pretty(&back).expect("serializes"),
            json
        );
        assert!(compare(&env, &back).is_empty());
    }

    #[test]
    fn isa_levels() {
        let f = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        if cfg!(target_arch = "x86_64") {
            assert_eq!(isa_level(&f(&["sse2"])), "x86-64-v1");
            let v2 = [
                "sse2",
                "sse3",
                "ssse3",
                "sse4.1",
                "sse4.2",
                "popcnt",
                "cmpxchg16b",
            ];
            assert_eq!(isa_level(&f(&v2)), "x86-64-v2");
            let v3: Vec<&str> = v2
                .iter()
                .chain(&[
                    "avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "lzcnt", "movbe", "xsave",
                ])
                .copied()
                .collect();
            assert_eq!(isa_level(&f(&v3)), "x86-64-v3");
            let v4: Vec<&str> = v3
                .iter()
                .chain(&["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"])
                .copied()
                .collect();
            assert_eq!(isa_level(&f(&v4)), "x86-64-v4");
            // The detected features agree with the computed level on this machine.
            assert_eq!(isa_level(&cpu_features()), capture().cpu.isa_level);
        }
    }

    #[test]
    fn compare_flags_isa_and_thread_changes() {
        let recorded = capture();
        let mut current = recorded.clone();
        assert!(compare(&recorded, &current).is_empty());

        current.cpu.isa_level = if recorded.cpu.isa_level == "x86-64-v3" {
            "x86-64-v4".into()
        } else {
            "x86-64-v3".into()
        };
        current.cpu.features.retain(|f| !f.starts_with("avx512"));
        current.cpu.features.push("madeup".into());
        current.env.insert("OMP_NUM_THREADS".into(), "7".into());
        current.env.insert("LANG".into(), "xx_XX.UTF-8".into());
        let mut recorded = recorded;
        recorded.env.insert("OMP_NUM_THREADS".into(), "4".into());
        recorded.env.insert("LANG".into(), "C.UTF-8".into());

        let diffs = compare(&recorded, &current);
        for d in &diffs {
            println!("{d}");
        }
        let find = |field: &str| diffs.iter().find(|d| d.field == field);
        let isa = find("cpu.isa_level").expect("isa level change is reported");
        assert_eq!(isa.severity, Severity::Warning);
        let omp = find("env.OMP_NUM_THREADS").expect("thread count change is reported");
        assert_eq!(omp.severity, Severity::Warning);
        assert_eq!(omp.recorded.as_deref(), Some("4"));
        assert_eq!(omp.current.as_deref(), Some("7"));
        let feats = find("cpu.features").expect("feature change is reported");
        assert_eq!(feats.severity, Severity::Warning);
        assert!(feats
            .current
            .as_deref()
            .is_some_and(|c| c.contains("madeup")));
        let lang = find("env.LANG").expect("locale change is reported");
        assert_eq!(lang.severity, Severity::Info);
    }

    #[test]
    fn pip_freeze_is_parsed_by_normalized_name() {
        let packages = parse_pip_freeze(
            "torch==1.13.0a0+gitunknown\nPyYAML==6.0\nzope.interface==5.5\n\
             typing_extensions==4.4.0\nmypkg @ file:///src/mypkg\n-e git+https://x/y#egg=z\n\
             # comment\n\n",
        );
        let expected: BTreeMap<String, String> = [
            ("torch", "1.13.0a0+gitunknown"),
            ("pyyaml", "6.0"),
            ("zope-interface", "5.5"),
            ("typing-extensions", "4.4.0"),
            ("mypkg", "file:///src/mypkg"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(packages, expected);
    }

    #[test]
    fn compare_names_the_interpreter_and_each_package_that_differs() {
        let python = |sha: &str, freeze: &str| PythonInfo {
            executable: "/venv/bin/python".into(),
            version: Some("3.11.2".into()),
            pip_freeze_sha256: Some(hex::encode(Sha256::digest(freeze.as_bytes()))),
            pip_freeze_error: None,
            resolved: Some("/usr/bin/python3.11".into()),
            sha256: Some(sha.into()),
            packages: parse_pip_freeze(freeze),
        };
        let mut recorded = capture();
        recorded.python = Some(python("aa", "torch==1.13.0\npeft==0.10.0\nsix==1.16.0\n"));
        let mut current = recorded.clone();
        current.python = Some(python("bb", "torch==2.1.0\npeft==0.10.0\nnumpy==1.26\n"));
        let diffs = compare(&recorded, &current);
        let fields: Vec<(&str, Option<&str>, Option<&str>, Severity)> = diffs
            .iter()
            .map(|d| {
                (
                    d.field.as_str(),
                    d.recorded.as_deref(),
                    d.current.as_deref(),
                    d.severity,
                )
            })
            .collect();
        assert_eq!(
            fields,
            [
                ("python.sha256", Some("aa"), Some("bb"), Severity::Warning),
                (
                    "python.packages.numpy",
                    None,
                    Some("1.26"),
                    Severity::Warning
                ),
                (
                    "python.packages.six",
                    Some("1.16.0"),
                    None,
                    Severity::Warning
                ),
                (
                    "python.packages.torch",
                    Some("1.13.0"),
                    Some("2.1.0"),
                    Severity::Warning
                ),
            ]
        );
        // A record made before package lists were kept: the freeze digest is compared.
        recorded.python.as_mut().expect("python").packages.clear();
        let diffs = compare(&recorded, &current);
        assert!(diffs.iter().any(|d| d.field == "python.pip_freeze_sha256"));
    }

    #[test]
    fn env_changes_apply_with_the_recording_rules() {
        let mut vars: BTreeMap<String, String> = [
            ("OMP_NUM_THREADS".to_string(), "4".to_string()),
            ("LANG".into(), "C".into()),
        ]
        .into_iter()
        .collect();
        apply_env_changes(
            &mut vars,
            &[
                ("OMP_NUM_THREADS".into(), Some("1".into())),
                ("LANG".into(), None),
                ("PYTHONHASHSEED".into(), Some("0".into())),
                ("HF_TOKEN".into(), Some("hf_secret".into())),
                ("UNLISTED".into(), Some("x".into())),
            ],
        );
        let keys: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(keys, [("OMP_NUM_THREADS", "1"), ("PYTHONHASHSEED", "0")]);
    }

    #[test]
    fn compare_flags_gpu_changes() {
        let mut recorded = capture();
        recorded.gpu.devices = vec![GpuDevice {
            index: 0,
            name: Some("NVIDIA A100-SXM4-80GB".into()),
            uuid: Some("GPU-a".into()),
            total_memory_bytes: Some(1),
            compute_capability: Some("8.0".into()),
        }];
        let mut current = recorded.clone();
        current.gpu.devices[0].name = Some("NVIDIA H100 80GB HBM3".into());
        current.gpu.devices[0].compute_capability = Some("9.0".into());
        current.gpu.devices[0].uuid = Some("GPU-b".into());
        let diffs = compare(&recorded, &current);
        let sev = |field: &str| diffs.iter().find(|d| d.field == field).map(|d| d.severity);
        assert_eq!(sev("gpu.devices[0].name"), Some(Severity::Warning));
        assert_eq!(
            sev("gpu.devices[0].compute_capability"),
            Some(Severity::Warning)
        );
        assert_eq!(sev("gpu.devices[0].uuid"), Some(Severity::Info));
        current.gpu.devices.clear();
        let diffs = compare(&recorded, &current);
        assert!(diffs
            .iter()
            .any(|d| d.field == "gpu.devices.len" && d.severity == Severity::Warning));
    }

    #[test]
    fn python_names() {
        for yes in [
            "python",
            "python3",
            "python3.11",
            "python3.13t",
            "/opt/venv/bin/python",
            "C:\\Python311\\python.exe",
            "pypy3",
        ] {
            assert!(looks_like_python(yes), "{yes}");
        }
        for no in [
            "pythonic",
            "cargo",
            "/usr/bin/env",
            "uv",
            "ipython",
            "python-config",
            "",
        ] {
            assert!(!looks_like_python(no), "{no}");
        }
    }

    #[test]
    fn capture_python_when_available() {
        // Missing interpreters give None, quickly.
        assert!(capture_python("/nonexistent/python3").is_none());
        assert!(capture_python("false").is_none());
        if let Some(py) = capture_python("python3") {
            println!("{:#?}", py.info);
            let version = py
                .info
                .version
                .as_deref()
                .expect("python3 reports a version");
            assert!(version.starts_with('3'), "{version}");
            assert!(!py.info.executable.is_empty());
            match (&py.pip_freeze, &py.info.pip_freeze_sha256) {
                (Some(text), Some(digest)) => {
                    assert_eq!(*digest, hex::encode(Sha256::digest(text.as_bytes())));
                }
                (None, None) => assert!(py.info.pip_freeze_error.is_some()),
                other => panic!("freeze text and digest disagree: {other:?}"),
            }
        }
    }

    #[test]
    fn parsers() {
        let os = parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME='Debian'\nVERSION_ID=12\n# c\n",
        );
        assert_eq!(os["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(os["NAME"], "Debian");
        assert_eq!(os["VERSION_ID"], "12");
        assert_eq!(
            parse_meminfo_total("MemTotal:       24684096 kB\nMemFree: 1 kB\n"),
            Some(24_684_096 * 1024)
        );
        assert_eq!(parse_getconf_glibc("glibc 2.36\n").as_deref(), Some("2.36"));
        assert_eq!(parse_getconf_glibc("musl 1.2\n"), None);
        assert_eq!(
            parse_ldd_version("ldd (Debian GLIBC 2.36-9+deb12u14) 2.36\nCopyright").as_deref(),
            Some("2.36")
        );
        assert_eq!(parse_ldd_version("musl libc (x86_64)\nVersion 1.2.4"), None);
        assert_eq!(
            parse_cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7763 64-Core Processor\n")
                .as_deref(),
            Some("AMD EPYC 7763 64-Core Processor")
        );
        assert_eq!(
            parse_python_version("Python 3.11.7\n").as_deref(),
            Some("3.11.7")
        );
    }

    #[test]
    fn helper_timeout_kills_the_program() {
        let started = Instant::now();
        let out = run_with_timeout(Path::new("sleep"), &["30"], Duration::from_millis(200));
        assert!(out.is_err(), "{out:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
