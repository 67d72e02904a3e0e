//! Keeping secrets out of records: environment allow-list, secret-looking names dropped,
//! credentials in URLs redacted.
//!
//! Everything trainprov records about a run ends up in a signed attestation and in the registry,
//! both of which are meant to be shared. A secret that slips in cannot be taken back, so this
//! module errs on the side of redacting too much. It works in three layers:
//!
//! 1. **Environment variables** pass through an allow-list ([`ENV_ALLOW_LIST`]): only names
//!    that influence results (threads, determinism switches, locale, toolchain, interpreter) are
//!    kept at all. Then every name that [`is_secret_name`] flags is dropped *even if
//!    allow-listed*, and every value goes through [`redact_text`]. See [`filtered_env`].
//! 2. **Names**: [`is_secret_name`] decides whether a variable, flag, query parameter or header
//!    names a secret. The exact rule is written on that function.
//! 3. **Values**: [`redact_url`] removes the `user:password@` part of every `scheme://` URL in a
//!    text and the values of secret-named query and fragment parameters;
//!    [`redact_known_tokens`] replaces tokens whose shape is published by their issuer (GitHub,
//!    Hugging Face, AWS, ...), wherever they appear. [`redact_text`] does both.
//!
//! Stored command output goes through [`redact_log_text`]: the values of secret-named
//! environment variables ([`secret_env_values`]) and of secret command-line arguments
//! ([`secret_argv_values`]) are replaced wherever they appear, then [`redact_text`] applies.
//!
//! Command lines are handled by [`redact_arg`] and [`redact_argv`], which understand
//! `--flag=value`, `--flag value`, `NAME=value` (shell and Hydra style) and
//! `Header: value` (curl `-H`).
//!
//! Every redacted value becomes [`REDACTED`] (`***`). Replay (`trainprov retrain`) can tell
//! that a value was redacted and must be supplied again.
//!
//! ```
//! use recorder::redact::{redact_argv, redact_url};
//! assert_eq!(redact_url("https://bob:hunter2@example.com/x"), "https://***@example.com/x");
//! let argv: Vec<String> = ["train.py", "--hf-token", "hf_abc", "--lr=0.1"].map(String::from).into();
//! assert_eq!(redact_argv(&argv), ["train.py", "--hf-token", "***", "--lr=0.1"]);
//! ```
//!
//! Known limits: a password that contains a raw `/`, `?` or `#` (invalid in a URL; it must be
//! percent-encoded) ends the authority early and is not recognised; a secret passed as a plain
//! positional argument or after a flag with an innocent name (`curl -u user:pass`) is caught
//! only when it has a known token shape.

use std::collections::BTreeMap;

/// What every redacted value is replaced with.
pub const REDACTED: &str = "***";

/// Environment variables that are recorded, exact names or prefixes (an entry ending in `*`
/// matches every name that starts with the part before the `*`). Names are case-sensitive,
/// as on Linux.
///
/// Groups, and why each is here:
/// - **Thread pools** (`OMP_*`, `MKL_*`, `OPENBLAS_*`, `BLIS_NUM_THREADS`, `GOTO_NUM_THREADS`,
///   `VECLIB_MAXIMUM_THREADS`, `NUMEXPR_*`, `KMP_*`, `GOMP_*`, `RAYON_NUM_THREADS`,
///   `RAYON_RS_NUM_CPUS`, `TOKENIZERS_PARALLELISM`): the number of threads decides how
///   reductions are split, which can change floating-point results. `MKL_CBWR` (conditional
///   numerical reproducibility) and `OPENBLAS_CORETYPE` / `MKL_ENABLE_INSTRUCTIONS` pick the
///   SIMD kernels.
/// - **GPU selection and determinism** (`CUDA_VISIBLE_DEVICES`, `CUDA_DEVICE_ORDER`,
///   `CUDA_LAUNCH_BLOCKING`, `CUDA_MODULE_LOADING`, `CUBLAS_WORKSPACE_CONFIG`,
///   `NVIDIA_TF32_OVERRIDE`, `NVIDIA_VISIBLE_DEVICES`, `TF_DETERMINISTIC_OPS`,
///   `TF_CUDNN_DETERMINISTIC`, `TF_ENABLE_ONEDNN_OPTS`, `TORCH_*`, `PYTORCH_*`, `XLA_FLAGS`,
///   `XLA_PYTHON_CLIENT_*`, `JAX_*`, `CANDLE_*`): which device runs and whether
///   non-deterministic kernels or TF32 are allowed.
/// - **Interpreter** (`PYTHONHASHSEED`, `PYTHONPATH`, `PYTHONHOME`, `PYTHONNOUSERSITE`,
///   `PYTHONOPTIMIZE`, `PYTHONUTF8`, `PYTHONIOENCODING`, `VIRTUAL_ENV`, `CONDA_DEFAULT_ENV`,
///   `CONDA_PREFIX`): hash seeds change set/dict iteration order; the paths decide which
///   packages are imported.
/// - **Model hubs, offline mode and caches** (`HF_HUB_OFFLINE`, `TRANSFORMERS_OFFLINE`,
///   `HF_DATASETS_OFFLINE`, `HF_HOME`, `HF_HUB_CACHE`, `HF_DATASETS_CACHE`,
///   `TRANSFORMERS_CACHE`, `HF_ENDPOINT`): where weights and data were read from.
/// - **Locale and time** (`LANG`, `LANGUAGE`, `LC_*`, `TZ`): `LC_NUMERIC` and `LC_COLLATE`
///   change number parsing and sort order in text pipelines.
/// - **Toolchain and loader** (`PATH`, `LD_LIBRARY_PATH`, `LD_PRELOAD`, `RUSTFLAGS`,
///   `CARGO_ENCODED_RUSTFLAGS`, `CARGO_BUILD_TARGET`, `CARGO_BUILD_RUSTFLAGS`, `CC`, `CXX`,
///   `CFLAGS`, `CXXFLAGS`): which programs and shared libraries (BLAS, libcuda) were found and
///   how native code was compiled. `PATH`-like values hold paths only; they still go through
///   [`redact_text`].
/// - **trainprov itself** (`TRAINPROV_*`): e.g. the registry location.
///
/// Deliberately absent: `HOME`, `USER`, `LOGNAME`, `HOSTNAME`, `PWD`, `SSH_*`, `DISPLAY`,
/// proxy variables (they often carry credentials) and package-index URLs
/// (`PIP_INDEX_URL` and friends routinely embed tokens). They identify a person or machine
/// and do not change results.
pub const ENV_ALLOW_LIST: &[&str] = &[
    // Thread pools and BLAS kernel selection.
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
    "TOKENIZERS_PARALLELISM",
    // GPU selection and determinism switches.
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "CUDA_LAUNCH_BLOCKING",
    "CUDA_MODULE_LOADING",
    "CUBLAS_WORKSPACE_CONFIG",
    "NVIDIA_TF32_OVERRIDE",
    "NVIDIA_VISIBLE_DEVICES",
    "TF_DETERMINISTIC_OPS",
    "TF_CUDNN_DETERMINISTIC",
    "TF_ENABLE_ONEDNN_OPTS",
    "TORCH_*",
    "PYTORCH_*",
    "XLA_FLAGS",
    "XLA_PYTHON_CLIENT_*",
    "JAX_*",
    "CANDLE_*",
    // Interpreter.
    "PYTHONHASHSEED",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONNOUSERSITE",
    "PYTHONOPTIMIZE",
    "PYTHONUTF8",
    "PYTHONIOENCODING",
    "VIRTUAL_ENV",
    "CONDA_DEFAULT_ENV",
    "CONDA_PREFIX",
    // Model hubs: offline mode and caches.
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_DATASETS_CACHE",
    "TRANSFORMERS_CACHE",
    "HF_ENDPOINT",
    // Locale and time.
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    // Toolchain and dynamic loader.
    "PATH",
    "LD_LIBRARY_PATH",
    "LD_PRELOAD",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_RUSTFLAGS",
    "CC",
    "CXX",
    "CFLAGS",
    "CXXFLAGS",
    // trainprov itself.
    "TRAINPROV_*",
];

/// Whether `name` is matched by an entry of [`ENV_ALLOW_LIST`] (exactly, or by prefix for an
/// entry ending in `*`). This does not apply the secret-name rule; [`filtered_env`] does both.
pub fn is_allowed_env_name(name: &str) -> bool {
    ENV_ALLOW_LIST
        .iter()
        .any(|entry| match entry.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix) && name.len() > prefix.len(),
            None => name == *entry,
        })
}

/// Fragments that mark a secret wherever they occur in the name's lowercase alphanumeric
/// form (`AWS_SECRET_ACCESS_KEY` -> `awssecretaccesskey`).
const STRONG_FRAGMENTS: &[&str] = &[
    "secret",
    "passw",
    "passphrase",
    "credential",
    "cookie",
    "apikey",
    "privatekey",
    "accesskey",
    "authtoken",
    "accesstoken",
    "refreshtoken",
    "bearer",
    "oauth",
    "sessionid",
    "csrf",
    "xsrf",
];

/// Words that mark a secret when they appear as a whole word of the name.
const SECRET_WORDS: &[&str] = &[
    "token",
    "key",
    "auth",
    "authorization",
    "session",
    "sig",
    "signature",
    "pass",
    "pw",
    "pwd",
    "pat",
    "jwt",
    "otp",
];

/// A word before a [`SECRET_WORDS`] word that gives it an ML or data meaning
/// (`pad_token`, `sort_key`).
const INNOCENT_BEFORE: &[&str] = &[
    "bos", "eos", "pad", "unk", "sep", "cls", "mask", "special", "start", "end", "stop", "sort",
    "group", "text", "label", "column", "dataset", "data", "input", "output", "prompt", "target",
];

/// A word after a [`SECRET_WORDS`] word that gives it an ML or data meaning
/// (`eos_token_id`, `num_key_value_heads`).
const INNOCENT_AFTER: &[&str] = &[
    "id",
    "ids",
    "type",
    "len",
    "length",
    "count",
    "limit",
    "index",
    "idx",
    "column",
    "col",
    "field",
    "embedding",
    "embeddings",
    "value",
    "values",
];

/// Whether a variable, flag, query-parameter or header name looks like it names a secret.
///
/// The rule, applied case-insensitively:
/// 1. Split the name into words at every character that is not a letter or digit and at each
///    lower-to-upper case change (`hubToken` -> `hub`, `token`; `HF_API_KEY` -> `hf`, `api`,
///    `key`).
/// 2. The name is secret if the concatenation of its words contains one of `secret`, `passw`
///    (password, passwd), `passphrase`, `credential`, `cookie`, `apikey`, `privatekey`,
///    `accesskey`, `authtoken`, `accesstoken`, `refreshtoken`, `bearer`, `oauth`,
///    `sessionid`, `csrf`, `xsrf`.
/// 3. Otherwise it is secret if one of its words is exactly `token`, `key`, `auth`,
///    `authorization`, `session`, `sig`, `signature`, `pass`, `pw`, `pwd`, `pat`, `jwt` or `otp`
///    — unless that word is qualified by its neighbour with a machine-learning or data meaning:
///    the word before is one of `bos eos pad unk sep cls mask special start end stop sort group
///    text label column dataset data input output prompt target`, or the word after is one of
///    `id ids type len length count limit index idx column col field embedding embeddings value
///    values`.
///
/// Whole words keep `max_tokens`, `tokenizer_name`, `TOKENIZERS_PARALLELISM`, `keyboard` and
/// `author` out; the neighbour rule keeps `pad_token`, `eos_token_id` and `num_key_value_heads`
/// out, so the argv of a typical training script survives for replay. `HF_TOKEN`,
/// `GITHUB_TOKEN`, `--use_auth_token`, `WANDB_API_KEY`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `PGPASSWORD`, `MYSQL_PWD`, `GITHUB_PAT`, `X-Amz-Signature` and
/// `Authorization` are secret.
pub fn is_secret_name(name: &str) -> bool {
    let words = split_words(name);
    let compact: String = words.concat();
    if STRONG_FRAGMENTS.iter().any(|f| compact.contains(f)) {
        return true;
    }
    words.iter().enumerate().any(|(i, word)| {
        if !SECRET_WORDS.contains(&word.as_str()) {
            return false;
        }
        let before = i
            .checked_sub(1)
            .and_then(|j| words.get(j))
            .is_some_and(|w| INNOCENT_BEFORE.contains(&w.as_str()));
        let after = words
            .get(i + 1)
            .is_some_and(|w| INNOCENT_AFTER.contains(&w.as_str()));
        !(before || after)
    })
}

/// Splits a name into lowercase words (see [`is_secret_name`]).
fn split_words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut prev: Option<char> = None;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            prev = None;
            continue;
        }
        if let Some(p) = prev {
            if c.is_uppercase() && (p.is_lowercase() || p.is_numeric()) && !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
        }
        current.extend(c.to_lowercase());
        prev = Some(c);
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// Query or fragment parameters that carry secrets although [`is_secret_name`] does not flag
/// them as general names (`code` is an OAuth authorization code, `sas` an Azure token).
const SECRET_QUERY_PARAMS: &[&str] = &["code", "sas"];

fn is_secret_param(name: &str) -> bool {
    let decoded: String = url::form_urlencoded::parse(name.as_bytes())
        .map(|(k, _)| k.into_owned())
        .next()
        .unwrap_or_default();
    is_secret_name(&decoded) || SECRET_QUERY_PARAMS.contains(&decoded.to_ascii_lowercase().as_str())
}

/// Schemes whose user name cannot be a credential (`ssh://git@host/...`).
fn keeps_user_name(scheme: &str) -> bool {
    matches!(
        scheme.to_ascii_lowercase().as_str(),
        "ssh" | "git+ssh" | "ssh+git" | "sftp"
    )
}

/// Bytes that end a URL inside free text.
fn ends_url(b: u8) -> bool {
    b.is_ascii_whitespace()
        || b.is_ascii_control()
        || matches!(b, b'"' | b'\'' | b'<' | b'>' | b'`')
}

/// Removes credentials from every `scheme://` URL inside `text`, which may be a bare URL, a
/// `PATH`-like list or a whole sentence.
///
/// - The user-info part (`user:password@`, or a lone `token@`) becomes `***@`:
///   `https://user:tok@host/x` -> `https://***@host/x`. A user name without a password is kept
///   for SSH schemes (`ssh://git@github.com/org/repo`), whose user names are not credentials.
///   scp-like remotes (`git@github.com:org/repo.git`) have no `://`, cannot hold a password,
///   and are left as they are.
/// - In the query (`?a=1&token=...`) and the fragment (`#access_token=...`, the OAuth implicit
///   flow), the value of every parameter whose name [`is_secret_name`] flags, plus `code` and
///   `sas`, becomes `***` (`?sig=...`, `?X-Amz-Signature=...`, `?access_token=...`).
///
/// Everything else, including the order of parameters, is kept byte for byte.
pub fn redact_url(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut search = 0;
    while let Some(found) = text[search..].find("://") {
        let sep = search + found;
        let start = sep + 3;
        let end = start
            + bytes[start..]
                .iter()
                .position(|&b| ends_url(b))
                .unwrap_or(bytes.len() - start);
        let authority_end = start
            + bytes[start..end]
                .iter()
                .position(|&b| matches!(b, b'/' | b'?' | b'#'))
                .unwrap_or(end - start);
        if let Some(at) = text[start..authority_end].rfind('@') {
            let userinfo = &text[start..start + at];
            let scheme_start = bytes[..sep]
                .iter()
                .rposition(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))
                .map_or(0, |p| p + 1);
            let scheme = &text[scheme_start..sep];
            let harmless = keeps_user_name(scheme) && !userinfo.contains(':');
            if !userinfo.is_empty() && !harmless {
                ranges.push((start, start + at));
            }
        }
        // Query and fragment parameters.
        let tail = &text[authority_end..end];
        if let Some(q) = tail.find(['?', '#']) {
            let mut pos = authority_end + q + 1;
            // Parameters are separated by '&' or ';'; '#' starts the fragment's own list.
            for part in text[pos..end].split(['&', ';', '#']) {
                if let Some((name, value)) = part.split_once('=') {
                    if !value.is_empty() && is_secret_param(name) {
                        let value_start = pos + name.len() + 1;
                        ranges.push((value_start, value_start + value.len()));
                    }
                }
                pos += part.len() + 1;
            }
        }
        search = start;
    }
    apply_ranges(text, ranges)
}

/// Replaces each of the (possibly overlapping) byte ranges with [`REDACTED`].
fn apply_ranges(text: &str, mut ranges: Vec<(usize, usize)>) -> String {
    if ranges.is_empty() {
        return text.to_string();
    }
    ranges.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (start, end) in ranges {
        if end <= copied {
            continue;
        }
        let start = start.max(copied);
        out.push_str(&text[copied..start]);
        // Ranges that merely touch or overlap a previous one extend it.
        if !out.ends_with(REDACTED) || start > copied {
            out.push_str(REDACTED);
        }
        copied = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// Whether a run of token characters has the published shape of an issued credential.
fn is_known_token(word: &str) -> bool {
    fn tail_len(word: &str, prefix: &str) -> Option<usize> {
        word.strip_prefix(prefix).map(str::len)
    }
    let alnum = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric());
    // GitHub classic tokens: ghp_, gho_, ghu_, ghs_, ghr_ + 36 base62 characters.
    for prefix in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
        if let Some(rest) = word.strip_prefix(prefix) {
            if rest.len() >= 30 && alnum(rest) {
                return true;
            }
        }
    }
    // GitHub fine-grained, GitLab, npm, PyPI.
    if tail_len(word, "github_pat_").is_some_and(|n| n >= 20)
        || tail_len(word, "glpat-").is_some_and(|n| n >= 20)
        || tail_len(word, "pypi-").is_some_and(|n| n >= 50)
    {
        return true;
    }
    if let Some(rest) = word.strip_prefix("npm_") {
        if rest.len() >= 30 && alnum(rest) {
            return true;
        }
    }
    // Hugging Face: hf_ + 34 letters.
    if let Some(rest) = word.strip_prefix("hf_") {
        if rest.len() >= 30 && alnum(rest) {
            return true;
        }
    }
    // OpenAI / Anthropic style: sk- followed by a long tail.
    if tail_len(word, "sk-").is_some_and(|n| n >= 20) {
        return true;
    }
    // Slack: xoxb-, xoxp-, xoxa-, xoxr-, xoxs-, xoxo-.
    if word.len() >= 15 && word.starts_with("xox") && word.as_bytes().get(4) == Some(&b'-') {
        return true;
    }
    // AWS access key ids: AKIA / ASIA + 16 upper-case letters or digits.
    if word.len() == 20
        && (word.starts_with("AKIA") || word.starts_with("ASIA"))
        && word[4..]
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return true;
    }
    // Google API keys: AIza + 35 characters.
    if word.len() == 39 && word.starts_with("AIza") {
        return true;
    }
    false
}

/// Replaces every credential with a published shape (GitHub `ghp_...`/`github_pat_...`,
/// GitLab `glpat-...`, Hugging Face `hf_...`, npm `npm_...`, PyPI `pypi-...`, `sk-...` API keys,
/// Slack `xox?-...`, AWS `AKIA...`/`ASIA...` key ids, Google `AIza...` keys) with `***`,
/// wherever it appears in `text`. A token is a maximal run of ASCII letters, digits, `_` and `-`.
pub fn redact_known_tokens(text: &str) -> String {
    let bytes = text.as_bytes();
    let is_token_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    let mut ranges = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !is_token_byte(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_token_byte(bytes[i]) {
            i += 1;
        }
        if is_known_token(&text[start..i]) {
            ranges.push((start, i));
        }
    }
    apply_ranges(text, ranges)
}

/// [`redact_url`] then [`redact_known_tokens`]: what every recorded free-form value goes
/// through.
pub fn redact_text(text: &str) -> String {
    redact_known_tokens(&redact_url(text))
}

/// Values that cannot be secrets and that boolean flags take (`--use_auth_token True`).
fn is_boolean_word(value: &str) -> bool {
    matches!(
        value.to_ascii_lowercase().as_str(),
        "true" | "false" | "yes" | "no"
    )
}

/// `NAME` of a `NAME=value` argument: shell assignments and Hydra overrides
/// (`model.api_key=...`, `+db.password=...`).
fn is_assignment_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'+' | b'~'))
}

/// `Name` of a `Name: value` HTTP header argument (curl `-H`).
fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn redact_value(name: &str, value: &str) -> String {
    if !value.is_empty() && is_secret_name(name) && !is_boolean_word(value) {
        REDACTED.to_string()
    } else {
        // The value may itself be an assignment or a header (`--env=HF_TOKEN=...`,
        // `--header=Authorization: ...`).
        redact_arg(value)
    }
}

/// Redacts one command-line argument on its own.
///
/// - `--name=value` / `-name=value` and `NAME=value` (shell assignments, Hydra overrides): the
///   value becomes `***` when [`is_secret_name`] flags the name (boolean words `true`, `false`,
///   `yes`, `no` are kept); otherwise the value is redacted again as an argument of its own,
///   so `--env=HF_TOKEN=...` and `--header=Authorization: ...` are caught.
/// - `Name: value` with a header-like name (`Authorization: Bearer ...`, `X-Api-Key: ...`,
///   `Cookie: ...`): the value becomes `***` when the name is secret.
/// - Anything else goes through [`redact_text`] (URLs with credentials, known token shapes).
///
/// The two-token form `--api-key VALUE` needs the neighbouring argument: use [`redact_argv`].
pub fn redact_arg(arg: &str) -> String {
    if let Some((name, value)) = arg.split_once('=') {
        let bare = name.trim_start_matches('-');
        let is_flag = name.starts_with('-') && !bare.is_empty();
        if is_flag || is_assignment_name(name) {
            return format!("{name}={}", redact_value(bare, value));
        }
    }
    if let Some((name, value)) = arg.split_once(':') {
        if is_header_name(name) && !value.starts_with("//") && is_secret_name(name) {
            let value = value.trim_start();
            if !value.is_empty() {
                return format!("{name}: {REDACTED}");
            }
        }
    }
    redact_text(arg)
}

/// Whether `arg` looks like an option rather than a value: `--long-option` or `-x`.
fn looks_like_option(arg: &str) -> bool {
    (arg.starts_with("--") && arg.len() > 2)
        || (arg.len() == 2 && arg.starts_with('-') && arg.as_bytes()[1].is_ascii_alphabetic())
}

/// Redacts a whole command line: every argument as by [`redact_arg`], and additionally the
/// argument after a bare option whose name is secret (`["--api-key", "abc"]` ->
/// `["--api-key", "***"]`). That following argument is kept when it looks like another option
/// (`--x` or `-x`) or is a boolean word, so a boolean flag such as `--use_auth_token` does not
/// swallow its neighbour.
pub fn redact_argv(argv: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut value_is_secret = false;
    for arg in argv {
        if std::mem::take(&mut value_is_secret) && !looks_like_option(arg) && !is_boolean_word(arg)
        {
            out.push(REDACTED.to_string());
            continue;
        }
        out.push(redact_arg(arg));
        if arg.starts_with('-') && !arg.contains('=') {
            let name = arg.trim_start_matches('-');
            value_is_secret = !name.is_empty() && is_secret_name(name);
        }
    }
    out
}

/// The environment as recorded: only names in [`ENV_ALLOW_LIST`], minus every name
/// [`is_secret_name`] flags (even if allow-listed), with each value passed through
/// [`redact_text`]. Sorted by name.
pub fn filtered_env(vars: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
    vars.into_iter()
        .filter(|(name, _)| is_allowed_env_name(name) && !is_secret_name(name))
        .map(|(name, value)| {
            let value = redact_text(&value);
            (name, value)
        })
        .collect()
}

/// Shortest value redacted by value in logs ([`secret_env_values`]): shorter values (`1`,
/// `true`, a port) would blank out unrelated text.
pub const MIN_SECRET_VALUE_LEN: usize = 6;

/// The values of the variables in `vars` whose name [`is_secret_name`] flags (allow-listed or
/// not), for redaction by value ([`redact_secret_values`]): `HF_TOKEN`'s value, whatever its
/// shape. Values shorter than [`MIN_SECRET_VALUE_LEN`] and boolean words are left out. Longest
/// first, without duplicates.
pub fn secret_env_values(vars: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let mut values: Vec<String> = vars
        .into_iter()
        .filter(|(name, value)| {
            is_secret_name(name)
                && value.chars().count() >= MIN_SECRET_VALUE_LEN
                && !is_boolean_word(value)
        })
        .map(|(_, value)| value)
        .collect();
    values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    values.dedup();
    values
}

/// The values [`redact_argv`] hides in `argv` (`--api-key VALUE`, `--token=VALUE`,
/// `HF_TOKEN=VALUE`, `Authorization: VALUE`), for redaction by value; same length rule as
/// [`secret_env_values`].
pub fn secret_argv_values(argv: &[String]) -> Vec<String> {
    let mut values = Vec::new();
    for (raw, shown) in argv.iter().zip(redact_argv(argv)) {
        let value = if shown == REDACTED && raw != REDACTED {
            Some(raw.as_str())
        } else if let Some(name) = shown.strip_suffix(&format!("={REDACTED}")) {
            raw.strip_prefix(name).and_then(|v| v.strip_prefix('='))
        } else if let Some(name) = shown.strip_suffix(&format!(": {REDACTED}")) {
            raw.strip_prefix(name)
                .and_then(|v| v.strip_prefix(':'))
                .map(str::trim)
        } else {
            None
        };
        if let Some(value) = value.filter(|v| v.chars().count() >= MIN_SECRET_VALUE_LEN) {
            values.push(value.to_string());
        }
    }
    values
}

/// Replaces every occurrence of each of `secrets` in `text` with [`REDACTED`]. Give the longest
/// first (as [`secret_env_values`] does) so that a secret containing another is replaced whole.
pub fn redact_secret_values(text: &str, secrets: &[String]) -> String {
    let mut out = std::borrow::Cow::Borrowed(text);
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if out.contains(secret.as_str()) {
            out = std::borrow::Cow::Owned(out.replace(secret.as_str(), REDACTED));
        }
    }
    out.into_owned()
}

/// What stored command output goes through: [`redact_secret_values`], then [`redact_text`].
pub fn redact_log_text(text: &str, secrets: &[String]) -> String {
    redact_text(&redact_secret_values(text, secrets))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLANTED: &str = "s3cr3tPlanted";

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn secret_names() {
        for name in [
            "HF_TOKEN",
            "GITHUB_TOKEN",
            "hf_token",
            "use_auth_token",
            "hubToken",
            "WANDB_API_KEY",
            "OPENAI_API_KEY",
            "apiKey",
            "APIKey",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ACCESS_KEY_ID",
            "AWS_SESSION_TOKEN",
            "PGPASSWORD",
            "MYSQL_PWD",
            "passwd",
            "GITHUB_PAT",
            "X-Amz-Signature",
            "X-Amz-Credential",
            "sig",
            "Authorization",
            "Cookie",
            "NPM_CONFIG__AUTH",
            "client_secret",
            "access_token",
            "key",
            "private_key",
            "SSH_AUTH_SOCK",
        ] {
            assert!(is_secret_name(name), "{name} should be secret");
        }
        for name in [
            "max_tokens",
            "max_new_tokens",
            "tokenizer_name",
            "TOKENIZERS_PARALLELISM",
            "pad_token",
            "eos_token_id",
            "num_key_value_heads",
            "sort_key",
            "keyboard",
            "author",
            "lr",
            "OMP_NUM_THREADS",
            "PATH",
            "sigma",
            "passes",
            "output_dir",
            "CUBLAS_WORKSPACE_CONFIG",
        ] {
            assert!(!is_secret_name(name), "{name} should not be secret");
        }
    }

    #[test]
    fn url_userinfo_is_removed() {
        assert_eq!(redact_url("https://user:tok@host/x"), "https://***@host/x");
        let planted = format!("clone https://bob:{PLANTED}@github.com/org/repo.git now");
        let out = redact_url(&planted);
        assert!(!out.contains(PLANTED), "{out}");
        assert_eq!(out, "clone https://***@github.com/org/repo.git now");
        // A lone token as user name is a credential too.
        let out = redact_url(&format!("https://{PLANTED}@github.com/org/repo"));
        assert_eq!(out, "https://***@github.com/org/repo");
        // Two URLs in one PATH-like value.
        let out = redact_url(&format!(
            "https://a:{PLANTED}@one.example,https://b:{PLANTED}@two.example"
        ));
        assert!(!out.contains(PLANTED), "{out}");
        assert_eq!(out, "https://***@one.example,https://***@two.example");
    }

    #[test]
    fn harmless_urls_are_untouched() {
        for text in [
            "git@github.com:org/repo.git",
            "ssh://git@github.com/org/repo.git",
            "https://github.com/org/repo",
            "https://registry.npmjs.org/@scope/pkg",
            "/usr/local/bin:/usr/bin:/bin",
            "https://example.com/search?q=rust&page=2#top",
            "no urls here",
            "",
        ] {
            assert_eq!(redact_url(text), text);
        }
        // ssh with a password is still redacted.
        assert_eq!(
            redact_url(&format!("ssh://git:{PLANTED}@host/repo")),
            "ssh://***@host/repo"
        );
    }

    #[test]
    fn secret_query_and_fragment_values_are_removed() {
        let url = format!(
            "https://acct.blob.core.windows.net/c/f?sv=2024&sig={PLANTED}&se=2030&token={PLANTED}x"
        );
        let out = redact_url(&url);
        assert!(!out.contains(PLANTED), "{out}");
        assert_eq!(
            out,
            "https://acct.blob.core.windows.net/c/f?sv=2024&sig=***&se=2030&token=***"
        );
        let out = redact_url(&format!(
            "https://s3.amazonaws.com/b/k?X-Amz-Credential={PLANTED}&X-Amz-Signature={PLANTED}&x=1"
        ));
        assert_eq!(
            out,
            "https://s3.amazonaws.com/b/k?X-Amz-Credential=***&X-Amz-Signature=***&x=1"
        );
        let out = redact_url(&format!(
            "https://app.example/cb#access_token={PLANTED}&state=1"
        ));
        assert_eq!(out, "https://app.example/cb#access_token=***&state=1");
        let out = redact_url(&format!("https://u:{PLANTED}@h/p?api_key={PLANTED}#frag"));
        assert_eq!(out, "https://***@h/p?api_key=***#frag");
    }

    #[test]
    fn known_token_shapes_are_removed() {
        let gh = format!("ghp_{}", "A1b2C3d4".repeat(5));
        let hf = format!("hf_{}", "abcdefghij".repeat(4));
        let text = format!("push with {gh} and {hf}; AKIAIOSFODNN7EXAMPLE done");
        let out = redact_known_tokens(&text);
        assert_eq!(out, "push with *** and ***; *** done");
        // Short look-alikes stay.
        assert_eq!(
            redact_known_tokens("hf_hub sk-learn ghp_x"),
            "hf_hub sk-learn ghp_x"
        );
    }

    #[test]
    fn args_are_redacted() {
        assert_eq!(
            redact_arg(&format!("--password={PLANTED}")),
            "--password=***"
        );
        assert_eq!(redact_arg(&format!("--token={PLANTED}")), "--token=***");
        assert_eq!(redact_arg(&format!("HF_TOKEN={PLANTED}")), "HF_TOKEN=***");
        assert_eq!(
            redact_arg(&format!("model.api_key={PLANTED}")),
            "model.api_key=***"
        );
        assert_eq!(
            redact_arg(&format!("Authorization: Bearer {PLANTED}")),
            "Authorization: ***"
        );
        assert_eq!(
            redact_arg(&format!("--repo=https://x:{PLANTED}@host/r")),
            "--repo=https://***@host/r"
        );
        assert_eq!(
            redact_arg(&format!("https://x:{PLANTED}@host/r")),
            "https://***@host/r"
        );
        for keep in [
            "--lr=0.001",
            "lr=0.1",
            "--pad_token=<pad>",
            "--use_auth_token=true",
            "train.py",
            "C:/data",
            "--output_dir",
        ] {
            assert_eq!(redact_arg(keep), keep);
        }
    }

    #[test]
    fn nested_forms_are_redacted() {
        assert_eq!(
            redact_arg(&format!("--env=HF_TOKEN={PLANTED}")),
            "--env=HF_TOKEN=***"
        );
        assert_eq!(
            redact_arg(&format!("--header=Authorization: Bearer {PLANTED}")),
            "--header=Authorization: ***"
        );
        let argv = strings(&[
            "docker",
            "run",
            "-e",
            &format!("WANDB_API_KEY={PLANTED}"),
            "-H",
            &format!("X-Api-Key: {PLANTED}"),
            &format!("https://x.example/p?key={PLANTED}&v=1"),
            &format!("git+https://oauth2:{PLANTED}@gitlab.example/g/r.git"),
        ]);
        let out = redact_argv(&argv);
        assert!(out.iter().all(|a| !a.contains(PLANTED)), "{out:?}");
        assert_eq!(out[6], "https://x.example/p?key=***&v=1");
        assert_eq!(out[7], "git+https://***@gitlab.example/g/r.git");
    }

    #[test]
    fn arbitrary_text_never_panics() {
        // Non-ASCII around every delimiter the scanners slice at.
        assert_eq!(
            redact_url(&format!(
                "ü https://ü:{PLANTED}@hö.st/ä?token=é{PLANTED}€&é=1 ö"
            )),
            "ü https://***@hö.st/ä?token=***&é=1 ö"
        );
        let alphabet: Vec<char> = "ab:/@?&=#;-_ é€😀\"'tokenhf_ghp_AKIA0".chars().collect();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut text = String::new();
            for _ in 0..(state % 40) {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                let pick = usize::try_from(state >> 33).expect("31 bits fit") % alphabet.len();
                text.push(alphabet[pick]);
            }
            let _ = redact_text(&text);
            let _ = redact_arg(&text);
            let _ = is_secret_name(&text);
        }
    }

    #[test]
    fn argv_two_token_form() {
        let argv = strings(&[
            "python",
            "train.py",
            "--api-key",
            PLANTED,
            "--use_auth_token",
            "--epochs",
            "3",
            "--hf_token",
            "True",
            "--password",
            PLANTED,
            "--num_key_value_heads",
            "8",
            "--token",
        ]);
        let out = redact_argv(&argv);
        assert_eq!(
            out,
            strings(&[
                "python",
                "train.py",
                "--api-key",
                "***",
                "--use_auth_token",
                "--epochs",
                "3",
                "--hf_token",
                "True",
                "--password",
                "***",
                "--num_key_value_heads",
                "8",
                "--token",
            ])
        );
        assert!(out.iter().all(|a| !a.contains(PLANTED)));
    }

    #[test]
    fn env_is_allow_listed_and_redacted() {
        let vars = [
            ("OMP_NUM_THREADS", "4".to_string()),
            ("MKL_CBWR", "AVX2".to_string()),
            ("CUDA_VISIBLE_DEVICES", "0".to_string()),
            ("PATH", "/usr/bin:/bin".to_string()),
            ("HF_ENDPOINT", format!("https://me:{PLANTED}@hf.example")),
            ("TORCH_HOME", "/cache/torch".to_string()),
            ("TORCH_HUB_TOKEN", PLANTED.to_string()),
            ("HF_TOKEN", PLANTED.to_string()),
            ("AWS_SECRET_ACCESS_KEY", PLANTED.to_string()),
            ("HOME", "/home/alice".to_string()),
            ("USER", "alice".to_string()),
            ("OMP_", "prefix alone is not a name".to_string()),
            (
                "PIP_INDEX_URL",
                format!("https://u:{PLANTED}@pypi.example/simple"),
            ),
            ("LC_ALL", "C.UTF-8".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v));
        let env = filtered_env(vars);
        let keys: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "CUDA_VISIBLE_DEVICES",
                "HF_ENDPOINT",
                "LC_ALL",
                "MKL_CBWR",
                "OMP_NUM_THREADS",
                "PATH",
                "TORCH_HOME"
            ]
        );
        assert_eq!(env["HF_ENDPOINT"], "https://***@hf.example");
        let json = serde_json::to_string(&env).expect("a string map serializes");
        assert!(!json.contains(PLANTED), "{json}");
    }

    #[test]
    fn allow_list_names_required_by_issue_3() {
        for name in [
            "OMP_NUM_THREADS",
            "MKL_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "RAYON_NUM_THREADS",
            "CUBLAS_WORKSPACE_CONFIG",
            "CUDA_VISIBLE_DEVICES",
            "CUDA_LAUNCH_BLOCKING",
            "PYTHONHASHSEED",
            "TF_DETERMINISTIC_OPS",
            "TF_CUDNN_DETERMINISTIC",
            "NVIDIA_TF32_OVERRIDE",
            "LANG",
            "LC_ALL",
            "TZ",
            "PYTHONPATH",
            "VIRTUAL_ENV",
            "CONDA_DEFAULT_ENV",
            "HF_HUB_OFFLINE",
            "TRANSFORMERS_OFFLINE",
            "HF_DATASETS_OFFLINE",
            "PATH",
            "RUSTFLAGS",
            "CARGO_BUILD_TARGET",
            "OPENBLAS_CORETYPE",
        ] {
            assert!(is_allowed_env_name(name), "{name}");
            assert!(!is_secret_name(name), "{name}");
        }
    }
}
