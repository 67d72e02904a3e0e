//! What the numbers depend on: CPU features, thread counts, library versions.
//!
//! Training results depend on the SIMD level the kernels dispatch to (AVX-512 vs AVX2 vs none),
//! gemm's build features, crate versions and dtype (`shared/DESIGN.md`). The run record carries
//! all of them so a replay can compare before it trusts a difference.

use serde::Serialize;

/// The candle version this crate is built against (checked against `Cargo.lock` by a test).
pub const CANDLE_VERSION: &str = "0.11.1";

/// gemm, as candle-core 0.11.1 depends on it: version and enabled features. `x86-v4` (the
/// AVX-512 kernels) is not enabled, so gemm dispatches at run time between its AVX2+FMA and
/// scalar/SSE kernels only.
pub const GEMM: &str = "gemm 0.19.0 (features: std, rayon, f16, wasm-simd128-enable; x86-v4 off)";

/// The CPU as the kernels see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IsaSummary {
    /// `std::env::consts::ARCH`.
    pub arch: &'static str,
    /// Run-time detected SIMD features relevant to the kernels, in a fixed order.
    pub features: Vec<&'static str>,
    /// candle's own view: `with_avx()` (AVX2 kernels), `with_f16c()`, `with_neon()`,
    /// `with_simd128()`.
    pub candle_avx: bool,
    /// `candle_core::utils::with_f16c()`.
    pub candle_f16c: bool,
    /// `candle_core::utils::with_neon()`.
    pub candle_neon: bool,
    /// `candle_core::utils::with_simd128()`.
    pub candle_simd128: bool,
    /// A one-word level: `avx512`, `avx2`, `sse`, `neon` or `baseline`.
    pub level: &'static str,
}

/// Detects the CPU features now.
pub fn isa_summary() -> IsaSummary {
    let mut features = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! detect {
            ($($f:tt),*) => {
                $( if std::arch::is_x86_feature_detected!($f) { features.push($f); } )*
            };
        }
        detect!(
            "sse4.2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! detect {
            ($($f:tt),*) => {
                $( if std::arch::is_aarch64_feature_detected!($f) { features.push($f); } )*
            };
        }
        detect!("neon", "fp16", "sve", "sve2");
    }
    let has = |f: &str| features.contains(&f);
    let level = if has("avx512f") {
        "avx512"
    } else if has("avx2") {
        "avx2"
    } else if has("sse4.2") {
        "sse"
    } else if has("neon") {
        "neon"
    } else {
        "baseline"
    };
    IsaSummary {
        arch: std::env::consts::ARCH,
        features,
        candle_avx: candle_core::utils::with_avx(),
        candle_f16c: candle_core::utils::with_f16c(),
        candle_neon: candle_core::utils::with_neon(),
        candle_simd128: candle_core::utils::with_simd128(),
        level,
    }
}

/// Threads candle's matmuls use (`candle_core::utils::get_num_threads()`, which honours
/// `RAYON_NUM_THREADS`).
pub fn thread_count() -> usize {
    candle_core::utils::get_num_threads()
}

/// Threads of candle's element-wise pool: `CANDLE_NUM_THREADS`, else [`thread_count`].
pub fn elementwise_thread_count() -> usize {
    std::env::var("CANDLE_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(thread_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recorded candle version must be the one `Cargo.lock` resolves.
    #[test]
    fn candle_version_matches_lockfile() {
        let lock = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
        let text = fs_err::read_to_string(lock).expect("workspace Cargo.lock");
        let expected = format!("name = \"candle-core\"\nversion = \"{CANDLE_VERSION}\"");
        assert!(
            text.contains(&expected),
            "Cargo.lock has another candle-core"
        );
        assert!(
            text.contains("name = \"gemm\"\nversion = \"0.19.0\""),
            "gemm version moved"
        );
    }

    #[test]
    fn isa_is_detected() {
        let isa = isa_summary();
        assert!(!isa.arch.is_empty());
        assert!(thread_count() >= 1);
    }
}
