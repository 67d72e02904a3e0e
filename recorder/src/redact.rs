//! Keeping secrets out of records: environment allow-list, secret-looking names dropped,
//! credentials in URLs redacted.
//!
//! Everything trainprov records about a run ends up in a signed attestation and in the registry,
//! both of which are meant to be shared. A secret that slips in cannot be taken back, so this
//! module errs on the side of redacting too much. It works in these layers:
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
//! 4. **Config files**: [`redact_config`] gives the view of a config that may be shown
//!    (YAML, TOML, INI, `.env` line by line; JSON as a tree): values of secret-named keys and
//!    of whole secret sections or nested blocks become `***`, and it lists what it hid. The
//!    original bytes are only stored, never shown (see `crate::record`).
//! 5. **Home directory**: [`home_relative`] writes paths under `$HOME` as `~/…` in what is
//!    recorded; [`expand_home_dir`] turns them back on replay.
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

// ----- Structured configs --------------------------------------------------------------------

/// A config file as it may be shown (in a Statement, a BOM, a log): every secret value replaced
/// by [`REDACTED`]. See [`redact_config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactedConfig {
    /// The text to show.
    pub text: String,
    /// Where values were replaced, in order: key paths (`hub_token`, `hub.auth.password`,
    /// `secrets`), or `line N` for a token or URL credential outside a `key: value` line.
    /// Empty when `text` is the original, byte for byte.
    pub redacted: Vec<String>,
}

/// Redacts a config file's text for display. `name` is the file name (only its extension is
/// used).
///
/// - **JSON** (a `.json` name, or text that starts with `{` or `[` and parses as JSON): every
///   member whose name [`is_secret_name`] flags has its value replaced by `"***"`, whatever its
///   type (a string, number, array or object: the whole subtree), except `true`, `false`, `null`
///   and empty values; every other string goes through [`redact_text`]. When something was
///   replaced, the result is re-serialized (pretty-printed); otherwise the text is kept.
/// - **Everything else** (YAML, TOML, INI, `.env`, `.properties`, `key=value` files) line by line:
///   a line `KEY: VALUE`, `KEY = VALUE` or `KEY=VALUE` (optionally quoted `KEY`, a YAML `- `
///   list marker or a shell `export `) whose `KEY` is secret has its value replaced by `***`
///   (quotes kept). A secret `KEY` with an empty value or a YAML block indicator (`|`, `>`) hides
///   every following line indented deeper (a nested mapping or a block scalar); a secret section
///   header (`[secrets]`, `[hub.auth]`) hides every value up to the next header. Inline tables
///   and flow mappings (`db = { user = "u", password = "p" }`) are redacted pair by pair. Every
///   line then goes through [`redact_text`] (URL credentials, known token shapes), comments
///   included.
///
/// Values that cannot be secrets are kept: `true`, `false`, `yes`, `no`, `null`, `~`, `None`
/// and empty strings, so `use_auth_token: true` stays readable.
///
/// ```
/// use recorder::redact::redact_config;
/// let shown = redact_config("train.yaml", "lr: 0.1\nhub_token: hf_abc\npush: true\n");
/// assert_eq!(shown.text, "lr: 0.1\nhub_token: ***\npush: true\n");
/// assert_eq!(shown.redacted, ["hub_token"]);
/// ```
pub fn redact_config(name: &str, text: &str) -> RedactedConfig {
    let json_name = name.to_ascii_lowercase().ends_with(".json");
    let json_text = matches!(text.trim_start().as_bytes().first(), Some(b'{' | b'['));
    if json_name || json_text {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
            return redact_json_config(text, value);
        }
    }
    redact_config_lines(text)
}

fn redact_json_config(text: &str, mut value: serde_json::Value) -> RedactedConfig {
    let mut redacted = Vec::new();
    redact_json_value(&mut value, "", &mut redacted);
    if redacted.is_empty() {
        // Keys are not walked above: a token used as a key is still caught here.
        let shown = redact_text(text);
        if shown != text {
            redacted.push("a key".to_string());
        }
        return RedactedConfig {
            text: shown,
            redacted,
        };
    }
    let pretty = serde_json::to_string_pretty(&value).unwrap_or_default() + "\n";
    let shown = redact_text(&pretty);
    if shown != pretty {
        redacted.push("a key".to_string());
    }
    RedactedConfig {
        text: shown,
        redacted,
    }
}

fn json_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn redact_json_value(value: &mut serde_json::Value, path: &str, redacted: &mut Vec<String>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (key, member) in map.iter_mut() {
                let member_path = json_path(path, key);
                let hides = match &*member {
                    Value::Null | Value::Bool(_) => false,
                    Value::String(s) => is_secret_scalar(s),
                    Value::Number(_) => true,
                    Value::Array(a) => !a.is_empty(),
                    Value::Object(o) => !o.is_empty(),
                };
                if hides && is_secret_name(key) {
                    *member = Value::String(REDACTED.to_string());
                    redacted.push(member_path);
                } else {
                    redact_json_value(member, &member_path, redacted);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                redact_json_value(item, &format!("{path}[{i}]"), redacted);
            }
        }
        Value::String(s) => {
            let shown = redact_text(s);
            if shown != *s {
                *s = shown;
                redacted.push(if path.is_empty() {
                    "(root)".to_string()
                } else {
                    path.to_string()
                });
            }
        }
        Value::Bool(_) | Value::Null | Value::Number(_) => {}
    }
}

/// Whether a config value (unquoted, comment removed) can hold a secret.
fn is_secret_scalar(value: &str) -> bool {
    let bare = value.trim().trim_matches(|c| c == '"' || c == '\'');
    !bare.is_empty()
        && !is_boolean_word(bare)
        && !matches!(
            bare.to_ascii_lowercase().as_str(),
            "null" | "~" | "none" | "nil"
        )
}

/// A `KEY: VALUE` / `KEY = VALUE` line, split. Byte offsets are into the line.
struct KeyLine<'a> {
    key: &'a str,
    /// Where the value (after the separator and its spaces) starts.
    value_start: usize,
}

/// Splits `line` at its first `=` or its first `:` followed by a space or the end of the line,
/// whichever comes first; `None` when the part before is not key-like.
fn parse_key_line(line: &str) -> Option<KeyLine<'_>> {
    let indent = line.len() - line.trim_start().len();
    let mut start = indent;
    let rest = &line[start..];
    for marker in ["- ", "export "] {
        if rest.starts_with(marker) {
            start += marker.len();
            break;
        }
    }
    let body = &line[start..];
    let bytes = body.as_bytes();
    let (key, sep) = if let Some(quote) = bytes.first().filter(|b| matches!(**b, b'"' | b'\'')) {
        let close = body[1..].find(*quote as char)? + 1;
        let after = body[close + 1..].trim_start();
        let sep = close + 1 + (body.len() - close - 1 - after.len());
        if !after.starts_with([':', '=']) {
            return None;
        }
        (&body[1..close], sep)
    } else {
        let sep = bytes.iter().enumerate().position(|(i, &b)| {
            b == b'=' || (b == b':' && bytes.get(i + 1).is_none_or(|n| n.is_ascii_whitespace()))
        })?;
        (body[..sep].trim(), sep)
    };
    if key.is_empty()
        || key.len() > 128
        || key.starts_with(['#', ';', '[', '{', '-'])
        || key.contains(['{', '}', '(', ')', '"', '\''])
    {
        return None;
    }
    let after = &body[sep + 1..];
    let value_start = start + sep + 1 + (after.len() - after.trim_start().len());
    Some(KeyLine { key, value_start })
}

/// The value without a trailing ` # comment` / ` ; comment` (outside quotes).
fn strip_comment(value: &str) -> &str {
    let bytes = value.as_bytes();
    let mut quote: Option<u8> = None;
    for (i, &b) in bytes.iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if (b == b'#' || b == b';') && (i == 0 || bytes[i - 1].is_ascii_whitespace()) => {
                return value[..i].trim_end();
            }
            None => {}
        }
    }
    value.trim_end()
}

/// `***`, quoted like `value` was.
fn redacted_like(value: &str) -> String {
    match value.as_bytes().first() {
        Some(&q @ (b'"' | b'\'')) => format!("{0}{REDACTED}{0}", q as char),
        _ => REDACTED.to_string(),
    }
}

/// Redacts secret pairs of an inline table or flow mapping (`{ user = "u", password = "p" }`).
fn redact_inline_pairs(value: &str, path: &str, redacted: &mut Vec<String>) -> String {
    if !value.contains('{') {
        return value.to_string();
    }
    let mut ranges = Vec::new();
    let mut seg_start = 0;
    let bytes = value.as_bytes();
    for i in 0..=bytes.len() {
        let boundary = i == bytes.len() || matches!(bytes[i], b'{' | b'}' | b',');
        if !boundary {
            continue;
        }
        let segment = &value[seg_start..i];
        if let Some(pair) = parse_key_line(segment) {
            let pair_value = segment[pair.value_start..].trim_end();
            if is_secret_name(pair.key) && is_secret_scalar(pair_value) {
                let start = seg_start + pair.value_start;
                ranges.push((start, start + pair_value.len()));
                redacted.push(json_path(path, pair.key));
            }
        }
        seg_start = (i + 1).min(bytes.len());
    }
    apply_ranges(value, ranges)
}

/// The line-oriented half of [`redact_config`].
fn redact_config_lines(text: &str) -> RedactedConfig {
    let mut out = String::with_capacity(text.len());
    let mut redacted: Vec<String> = Vec::new();
    // Open YAML mappings: (indent, key) of keys with an empty value.
    let mut parents: Vec<(usize, String)> = Vec::new();
    let mut section = String::new();
    let mut section_is_secret = false;
    // A secret key whose value is every following line indented deeper.
    let mut hidden_below: Option<usize> = None;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let body = line.trim_end_matches(['\n', '\r']);
        let eol = &line[body.len()..];
        let indent = body.len() - body.trim_start().len();
        let trimmed = body.trim_start();
        let is_comment = trimmed.starts_with('#') || trimmed.starts_with(';');
        if let Some(block_indent) = hidden_below {
            if trimmed.is_empty() || is_comment {
                out.push_str(&redact_text(body));
                out.push_str(eol);
                continue;
            }
            if indent > block_indent {
                let content = &body[indent..];
                let keep = parse_key_line(body)
                    .map(|k| k.value_start)
                    .filter(|&v| v < body.len())
                    .unwrap_or(indent + usize::from(content.starts_with("- ")) * 2);
                out.push_str(&body[..keep]);
                out.push_str(REDACTED);
                out.push_str(eol);
                continue;
            }
            hidden_below = None;
        }
        if trimmed.starts_with('[') {
            let name = trimmed.trim_start_matches('[');
            if let Some(end) = name.find(']') {
                section = name[..end].trim().trim_matches('"').to_string();
                section_is_secret = is_secret_name(&section);
                parents.clear();
                push_shown(&mut out, &mut redacted, body, n);
                out.push_str(eol);
                continue;
            }
        }
        let parsed = if is_comment {
            None
        } else {
            parse_key_line(body)
        };
        let Some(pair) = parsed else {
            push_shown(&mut out, &mut redacted, body, n);
            out.push_str(eol);
            continue;
        };
        while parents.last().is_some_and(|(i, _)| *i >= indent) {
            parents.pop();
        }
        let mut path = section.clone();
        for (_, parent) in &parents {
            path = json_path(&path, parent);
        }
        let path = json_path(&path, pair.key);
        let raw_value = &body[pair.value_start.min(body.len())..];
        let value = strip_comment(raw_value);
        let secret = section_is_secret || is_secret_name(pair.key);
        let block = value.is_empty()
            || (value.starts_with(['|', '>'])
                && value[1..]
                    .bytes()
                    .all(|b| matches!(b, b'-' | b'+' | b'0'..=b'9')));
        if secret && block {
            // The value is the block below (a nested mapping, a list or a block scalar).
            hidden_below = Some(indent);
            redacted.push(path);
            out.push_str(&redact_text(body));
        } else if secret && is_secret_scalar(value) {
            out.push_str(&body[..pair.value_start]);
            out.push_str(&redacted_like(value));
            redacted.push(path);
        } else {
            if value.is_empty() {
                parents.push((indent, pair.key.to_string()));
            }
            let inline = redact_inline_pairs(raw_value, &path, &mut redacted);
            let line = format!("{}{inline}", &body[..pair.value_start.min(body.len())]);
            let shown = redact_text(&line);
            if shown != line && redacted.last() != Some(&path) {
                redacted.push(path);
            }
            out.push_str(&shown);
        }
        out.push_str(eol);
    }
    RedactedConfig {
        text: out,
        redacted,
    }
}

/// Appends `body` through [`redact_text`], noting `line N` when something was replaced.
fn push_shown(out: &mut String, redacted: &mut Vec<String>, body: &str, index: usize) {
    let shown = redact_text(body);
    if shown != body {
        redacted.push(format!("line {}", index + 1));
    }
    out.push_str(&shown);
}

// ----- Home directory ---------------------------------------------------------------------------

/// Bytes after which a path may start inside a larger value (`--data=/home/…`,
/// `PATH=/a:/home/…`, `"/home/…"`).
fn path_may_start_after(b: u8) -> bool {
    b.is_ascii_whitespace()
        || matches!(
            b,
            b'=' | b':'
                | b','
                | b';'
                | b'"'
                | b'\''
                | b'('
                | b'['
                | b'{'
                | b'@'
                | b'<'
                | b'>'
                | b'`'
        )
}

/// Bytes at which a path may end (or continue with `/`).
fn path_may_end_at(b: u8) -> bool {
    b == b'/' || path_may_start_after(b) || matches!(b, b')' | b']' | b'}')
}

/// Whether a path found at `start..end` of `text` stands on its own: at the start of `text`,
/// after a delimiter or after `//` (a `file://` URI), and followed by `/`, a delimiter or the
/// end.
fn stands_alone(text: &str, start: usize, end: usize) -> bool {
    let bytes = text.as_bytes();
    let before =
        start == 0 || path_may_start_after(bytes[start - 1]) || text[..start].ends_with("//");
    let after = end == bytes.len() || path_may_end_at(bytes[end]);
    before && after
}

/// The home directories to hide: `$HOME` as set and, when it differs, its canonical form,
/// longest first. Empty when `$HOME` is unset, relative or `/`.
pub fn home_dirs() -> Vec<String> {
    let Some(home) = std::env::var_os("HOME").map(std::path::PathBuf::from) else {
        return Vec::new();
    };
    let mut homes = Vec::new();
    for candidate in [Some(home.clone()), std::fs::canonicalize(&home).ok()]
        .into_iter()
        .flatten()
    {
        let text = candidate.display().to_string();
        let text = text.trim_end_matches('/');
        if candidate.is_absolute() && !text.is_empty() && !homes.iter().any(|h| h == text) {
            homes.push(text.to_string());
        }
    }
    homes.sort_by_key(|h| std::cmp::Reverse(h.len()));
    homes
}

/// Replaces each of `homes` (absolute directories) with `~` wherever it appears as a whole path
/// prefix in `text`: `/home/alice/data` -> `~/data`, `file:///home/alice/x` -> `file://~/x`,
/// `--out=/home/alice/o` -> `--out=~/o`, `/home/alice` -> `~`. `/home/alicia` and
/// `/mnt/home/alice` are left alone (the match must stand on its own, see the module docs).
///
/// ```
/// use recorder::redact::home_relative;
/// let homes = ["/home/alice".to_string()];
/// assert_eq!(home_relative("--data=/home/alice/d", &homes), "--data=~/d");
/// assert_eq!(home_relative("file:///home/alice/d", &homes), "file://~/d");
/// assert_eq!(home_relative("/home/alicia/d", &homes), "/home/alicia/d");
/// ```
pub fn home_relative(text: &str, homes: &[String]) -> String {
    let mut text = text.to_string();
    for home in homes.iter().filter(|h| h.starts_with('/') && h.len() > 1) {
        let mut ranges = Vec::new();
        let mut search = 0;
        while let Some(found) = text[search..].find(home.as_str()) {
            let start = search + found;
            let end = start + home.len();
            if stands_alone(&text, start, end) {
                ranges.push((start, end));
                search = end;
            } else {
                // `home` starts with the one-byte '/', so start + 1 is a char boundary.
                search = start + 1;
            }
        }
        if !ranges.is_empty() {
            let mut out = String::with_capacity(text.len());
            let mut copied = 0;
            for (start, end) in ranges {
                out.push_str(&text[copied..start]);
                out.push('~');
                copied = end;
            }
            out.push_str(&text[copied..]);
            text = out;
        }
    }
    text
}

/// The inverse of [`home_relative`] for one home directory: every `~` standing on its own as a
/// path prefix (`~`, `~/x`, `--out=~/x`, `file://~/x`) becomes `home`. `a~b` and `~user` are
/// left alone. With `home` empty, `text` is returned unchanged.
pub fn expand_home(text: &str, home: &str) -> String {
    let home = home.trim_end_matches('/');
    if home.is_empty() || !text.contains('~') {
        return text.to_string();
    }
    let mut ranges = Vec::new();
    for (i, _) in text.match_indices('~') {
        if stands_alone(text, i, i + 1) {
            ranges.push(i);
        }
    }
    let mut out = String::with_capacity(text.len() + ranges.len() * home.len());
    let mut copied = 0;
    for i in ranges {
        out.push_str(&text[copied..i]);
        out.push_str(home);
        copied = i + 1;
    }
    out.push_str(&text[copied..]);
    out
}

/// [`expand_home`] with this process's `$HOME` (unchanged when it is unset): how replay turns
/// a recorded `~/…` path back into one on this machine.
pub fn expand_home_dir(text: &str) -> String {
    let home = std::env::var("HOME").unwrap_or_default();
    expand_home(text, &home)
}

/// A recorded path from a `file://` URI or a plain path, `~` expanded with this process's
/// `$HOME` (see [`expand_home_dir`]). `None` for other URI schemes.
pub fn recorded_path(uri_or_path: &str) -> Option<std::path::PathBuf> {
    let path = match uri_or_path.strip_prefix("file://") {
        Some(path) => path,
        None if uri_or_path.contains("://") => return None,
        None => uri_or_path,
    };
    Some(std::path::PathBuf::from(expand_home_dir(path)))
}

/// A `--param KEY=VALUE` value as recorded: `***` when `key` is secret (and the value is not a
/// boolean word), otherwise the value through [`redact_text`].
pub fn redact_param(key: &str, value: &str) -> String {
    if is_secret_name(key) && is_secret_scalar(value) {
        REDACTED.to_string()
    } else {
        redact_text(value)
    }
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

    fn hf() -> String {
        format!("hf_{}", "AbCdEfGhIj".repeat(4))
    }

    #[test]
    fn issue11_yaml_config_secrets_are_redacted() {
        let text = format!(
            "model: llama\n\
             hub_token: {hf}  # mine\n\
             push_to_hub: true\n\
             use_auth_token: true\n\
             pad_token: \"<pad>\"\n\
             wandb:\n  project: x\n  api_key: \"{PLANTED}\"\n\
             secrets:\n  a: {PLANTED}\n  - {PLANTED}\n\
             password: |\n  {PLANTED}\n  more\n\
             notes: see https://u:{PLANTED}@host/x\n\
             eos_token_id: 2\n\
             # old token {hf}\n",
            hf = hf()
        );
        let shown = redact_config("train.yaml", &text);
        assert!(!shown.text.contains(PLANTED), "{}", shown.text);
        assert!(!shown.text.contains(&hf()), "{}", shown.text);
        assert!(shown.text.contains("hub_token: ***\n"), "{}", shown.text);
        assert!(
            shown.text.contains("  api_key: \"***\"\n"),
            "{}",
            shown.text
        );
        for kept in [
            "push_to_hub: true",
            "use_auth_token: true",
            "pad_token: \"<pad>\"",
            "eos_token_id: 2",
            "  project: x",
            "model: llama",
        ] {
            assert!(shown.text.contains(kept), "{kept} kept: {}", shown.text);
        }
        assert_eq!(
            shown.redacted,
            [
                "hub_token",
                "wandb.api_key",
                "secrets",
                "password",
                "notes",
                "line 17"
            ]
        );
        assert_eq!(shown.text.lines().count(), text.lines().count());
    }

    #[test]
    fn issue11_toml_ini_env_config_secrets_are_redacted() {
        let text = format!(
            "[train]\nlr = 0.1\nhub.token = \"{PLANTED}\"\n\
             db = {{ user = \"u\", password = \"{PLANTED}\" }}\n\
             [credentials]\nuser = \"bob\"\nvalue = '{PLANTED}'\n\
             [output]\ndir = \"out\"\n"
        );
        let shown = redact_config("train.toml", &text);
        assert!(!shown.text.contains(PLANTED), "{}", shown.text);
        assert!(shown.text.contains("hub.token = \"***\""), "{}", shown.text);
        assert!(shown.text.contains("user = \"u\""), "{}", shown.text);
        assert!(shown.text.contains("dir = \"out\""), "{}", shown.text);
        assert_eq!(
            shown.redacted,
            [
                "train.hub.token",
                "train.db.password",
                "credentials.user",
                "credentials.value"
            ]
        );
        let env = format!(
            "export HF_TOKEN={}\nOMP_NUM_THREADS=4\nPGPASSWORD={PLANTED}\n",
            hf()
        );
        let shown = redact_config(".env", &env);
        assert_eq!(
            shown.text,
            "export HF_TOKEN=***\nOMP_NUM_THREADS=4\nPGPASSWORD=***\n"
        );
        let ini = format!("[hub]\nendpoint: https://hf.example\nauth_token: {PLANTED}\n");
        let shown = redact_config("setup.cfg", &ini);
        assert_eq!(
            shown.text,
            "[hub]\nendpoint: https://hf.example\nauth_token: ***\n"
        );
    }

    #[test]
    fn issue11_json_config_secrets_are_redacted_as_a_tree() {
        let text = format!(
            r#"{{"lr": 0.1, "hub": {{"token": "{PLANTED}", "repo": "a/b"}},
               "secrets": {{"x": "{PLANTED}"}}, "pin": 1234, "password": null,
               "use_auth_token": true, "notes": ["{hf}"]}}"#,
            hf = hf()
        );
        let shown = redact_config("config.json", &text);
        assert!(!shown.text.contains(PLANTED), "{}", shown.text);
        assert!(!shown.text.contains(&hf()), "{}", shown.text);
        let value: serde_json::Value = serde_json::from_str(&shown.text).expect("still JSON");
        assert_eq!(value["hub"]["token"], "***");
        assert_eq!(value["hub"]["repo"], "a/b");
        assert_eq!(value["secrets"], "***");
        assert_eq!(value["pin"], 1234, "pin is not a secret name");
        assert!(value["password"].is_null());
        assert_eq!(value["use_auth_token"], true);
        assert_eq!(value["notes"][0], "***");
        let mut redacted = shown.redacted.clone();
        redacted.sort();
        assert_eq!(redacted, ["hub.token", "notes[0]", "secrets"]);
    }

    #[test]
    fn issue11_example_configs_are_shown_unchanged() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for name in [
            "examples/tiny-llama/train.toml",
            "examples/wrap-python/train.toml",
        ] {
            let text = std::fs::read_to_string(root.join(name)).expect("example config");
            let shown = redact_config(name, &text);
            assert_eq!(shown.redacted, Vec::<String>::new(), "{name}");
            assert_eq!(shown.text, text, "{name}");
        }
        let json = "{\n  \"model_type\": \"llama\",\n  \"num_key_value_heads\": 2\n}\n";
        assert_eq!(redact_config("config.json", json).text, json);
    }

    #[test]
    fn issue11_home_directory_becomes_tilde_and_back() {
        let homes = ["/home/alice".to_string()];
        for (recorded, shown) in [
            ("/home/alice/ws/data", "~/ws/data"),
            ("/home/alice", "~"),
            ("file:///home/alice/ws/data", "file://~/ws/data"),
            ("git+file:///home/alice/repo", "git+file://~/repo"),
            ("--out=/home/alice/o", "--out=~/o"),
            ("/usr/bin:/home/alice/bin", "/usr/bin:~/bin"),
            ("output_dir: \"/home/alice/x\"", "output_dir: \"~/x\""),
            ("/home/alicia/x", "/home/alicia/x"),
            ("/mnt/home/alice/x", "/mnt/home/alice/x"),
            ("relative/home/alice", "relative/home/alice"),
        ] {
            assert_eq!(home_relative(recorded, &homes), shown, "{recorded}");
        }
        for (shown, replayed) in [
            ("~/ws/data", "/home/bob/ws/data"),
            ("~", "/home/bob"),
            ("file://~/ws/data", "file:///home/bob/ws/data"),
            ("--out=~/o", "--out=/home/bob/o"),
            ("a~b", "a~b"),
            ("~alice/x", "~alice/x"),
        ] {
            assert_eq!(expand_home(shown, "/home/bob/"), replayed, "{shown}");
        }
        assert_eq!(home_relative("/home/alice/x", &[]), "/home/alice/x");
        assert_eq!(expand_home("~/x", ""), "~/x");
    }
}
