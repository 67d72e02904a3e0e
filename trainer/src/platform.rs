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

/// Forward multiply-accumulates per micro-batch below which one compute thread is the
/// default; above it, one more thread per this much work, up to the cores there are.
///
/// Why so much: candle's element-wise pool and gemm's rayon workers spin at a barrier after
/// every operation, and a training step is hundreds of small operations, so a second thread
/// only pays for itself when each matmul is large. Measured on a 2-core machine
/// (`BENCHMARKS.md`, `bench/bench-train.sh`): two threads were 60-80% slower than one on the
/// small configs (up to 0.3 G MACs per micro-batch) and slower still on the 135M-class config
/// (the machine shared with other work). Results do not depend on the thread count (the
/// determinism contract), only the speed does.
pub const MACS_PER_THREAD: u64 = 64_000_000_000;

/// How the compute thread count was decided (recorded as `threadsChosenBy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ThreadSource {
    /// The user set `RAYON_NUM_THREADS` or `CANDLE_NUM_THREADS`; left as it was.
    #[serde(rename = "environment")]
    Environment,
    /// [`default_threads`] from the work size.
    #[serde(rename = "work size")]
    WorkSize,
}

impl ThreadSource {
    /// The recorded spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ThreadSource::Environment => "environment",
            ThreadSource::WorkSize => "work size",
        }
    }
}

/// Forward multiply-accumulates of one micro-batch of `tokens` tokens: every linear layer of
/// every decoder layer, the language-model head, and the two attention matmuls
/// (`tokens × seq_len × heads × head_dim` each).
pub fn forward_macs(config: &crate::LlamaConfig, tokens: usize, seq_len: usize) -> u64 {
    let layer: u64 = crate::model::LINEAR_MODULES
        .iter()
        .map(|m| {
            let (i, o) = crate::model::linear_in_out(config, m);
            (i * o) as u64
        })
        .sum();
    let attention = 2 * (seq_len * config.num_attention_heads * config.head_dim()) as u64;
    let head = (config.hidden_size * config.vocab_size) as u64;
    (tokens as u64).saturating_mul(config.num_hidden_layers as u64 * (layer + attention) + head)
}

/// The default compute thread count for `macs` forward multiply-accumulates per micro-batch on
/// `cores` cores: one below [`MACS_PER_THREAD`], then one per [`MACS_PER_THREAD`], at most
/// `cores`.
pub fn default_threads(macs: u64, cores: usize) -> usize {
    let wanted = (macs / MACS_PER_THREAD).max(1);
    usize::try_from(wanted)
        .unwrap_or(usize::MAX)
        .clamp(1, cores.max(1))
}

static THREAD_SOURCE: std::sync::OnceLock<ThreadSource> = std::sync::OnceLock::new();

/// Sets candle's thread counts for a job of `macs` forward multiply-accumulates per
/// micro-batch, unless the user already chose (`RAYON_NUM_THREADS` or `CANDLE_NUM_THREADS` set):
/// both variables get [`default_threads`]. Call it once, first thing, before any candle
/// operation and before other threads start (candle reads the variables when it sizes its
/// pools). Returns the count and why; [`thread_source`] repeats the answer for the record.
pub fn apply_default_threads(macs: u64) -> (usize, ThreadSource) {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    let source = if set("RAYON_NUM_THREADS") || set("CANDLE_NUM_THREADS") {
        ThreadSource::Environment
    } else {
        // Without the variables candle's count is its default: the physical cores it may use.
        let n = default_threads(macs, thread_count()).to_string();
        std::env::set_var("RAYON_NUM_THREADS", &n);
        std::env::set_var("CANDLE_NUM_THREADS", &n);
        ThreadSource::WorkSize
    };
    let source = *THREAD_SOURCE.get_or_init(|| source);
    (thread_count(), source)
}

/// How the thread count of this process was decided: [`apply_default_threads`]'s answer, or
/// [`ThreadSource::Environment`] when it was not called (candle's own default, or the
/// variables).
pub fn thread_source() -> ThreadSource {
    THREAD_SOURCE
        .get()
        .copied()
        .unwrap_or(ThreadSource::Environment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_threads_grow_with_work() {
        assert_eq!(default_threads(0, 8), 1);
        assert_eq!(default_threads(MACS_PER_THREAD - 1, 8), 1);
        assert_eq!(default_threads(MACS_PER_THREAD, 8), 1);
        assert_eq!(default_threads(2 * MACS_PER_THREAD, 8), 2);
        assert_eq!(default_threads(5 * MACS_PER_THREAD + 7, 8), 5);
        assert_eq!(default_threads(u64::MAX, 8), 8);
        assert_eq!(default_threads(u64::MAX, 0), 1);
    }

    /// The configs of `bench/bench-train.sh`: the small ones and the 135M-class one at the
    /// benchmark's batch get one thread (where two were measured slower); a 0.5B-class model
    /// at a batch of 4×256 tokens gets two on a 2-core machine.
    #[test]
    fn default_threads_of_the_benchmark_configs() {
        let small = crate::LlamaConfig::new(256, 1024, 4, 8, 4, 1024);
        assert_eq!(default_threads(forward_macs(&small, 8 * 128, 128), 2), 1);
        let mut smol = crate::LlamaConfig::new(576, 1536, 30, 9, 3, 49152);
        smol.tie_word_embeddings = true;
        let macs = forward_macs(&smol, 2 * 64, 64);
        // 30 layers of 3.5M multiply-accumulates per token each, plus the 28M of the head.
        assert_eq!(
            macs,
            128 * (30 * (3_538_944 + 2 * 64 * 9 * 64) + 576 * 49152)
        );
        assert_eq!(default_threads(macs, 2), 1);
        let qwen = crate::LlamaConfig::new(896, 4864, 24, 14, 2, 151936);
        assert_eq!(default_threads(forward_macs(&qwen, 4 * 256, 256), 2), 2);
    }

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
