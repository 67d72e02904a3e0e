//! Running the wrapped command: output shown live and stored redacted and capped, signals
//! forwarded, the child's process group stopped if the wrapper dies, exit status and peak memory
//! collected.
//!
//! - stdin is inherited; stdout and stderr are piped (the child therefore sees pipes, not a
//!   terminal). Each chunk read is shown at once, unredacted, on the wrapper's own stdout/stderr,
//!   and streamed to `stdout.log` / `stderr.log` in the run's log directory; nothing is held in
//!   memory beyond one line (see below) and the kept tail.
//! - **Stored logs are redacted.** Before bytes reach a log file they go through
//!   [`crate::redact::redact_secret_values`] (the values of secret-named environment variables of
//!   the wrapper and the child, and secret values of the command line, see
//!   [`LogPolicy::from_environment`]) and then [`crate::redact::redact_text`] (credentials in URLs,
//!   known token shapes). Redaction works on whole lines: a chunk is cut after its last newline
//!   and the rest waits for the next read, so a token split across two reads is redacted like any
//!   other. A line longer than [`MAX_LINE`] is cut after its last whitespace or control byte (a
//!   token or URL never contains one), or at [`MAX_LINE`] when it has none; only a secret inside
//!   such a run of over 1 MiB of printable non-space characters could be split.
//! - **Stored logs are capped.** Each log keeps the first and the last [`LogPolicy::keep_bytes`]
//!   bytes of the redacted output ([`DEFAULT_LOG_KEEP_BYTES`], 4 MiB each, or
//!   [`LOG_KEEP_ENV`] in bytes). When output was dropped, a line between the two parts says how
//!   many bytes were omitted and how many the command wrote in all; [`LogSummary`] reports the
//!   same numbers to the caller.
//! - The child runs in a process group of its own, apart from the wrapper's. SIGINT, SIGTERM
//!   and SIGHUP sent to the wrapper (including Ctrl-C at the terminal, which reaches only the
//!   wrapper's group) are forwarded once to the child's whole group, so
//!   `sh -c 'python train.py'` stops as a unit.
//! - **A wrapper that dies (even by SIGKILL) takes the child's group with it.** Before the child,
//!   the wrapper starts a watchdog: `sh` leading a new process group, which the child then joins,
//!   ignoring the signals forwarded to that group and reading a pipe whose only writer is the
//!   wrapper. When the child has ended the wrapper writes `done`; if the pipe closes without it
//!   (the wrapper died), the watchdog sends SIGTERM to the group and SIGKILL one second later.
//!   This needs no `unsafe` (a parent-death signal would have to be set between fork and exec),
//!   has no window in which the child runs unwatched, and covers every process of the group, not
//!   only the direct child. Not covered: a descendant that leaves the group (`setsid`). Without
//!   `/bin/sh` the run goes on unwatched, with a warning, the child leading its own group.
//! - Peak RSS is `getrusage(RUSAGE_CHILDREN)`'s maximum after the child is reaped, so it covers
//!   the child and every descendant it waited for. The wrapper must not have run other children
//!   before (environment probes run afterwards for this reason; the watchdog is reaped only after
//!   the measurement).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Errors starting or supervising the child.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The command could not be started.
    #[error("cannot start '{program}': {source}")]
    Spawn {
        /// argv[0].
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A log file could not be created.
    #[error("{}: cannot create log: {source}", path.display())]
    Log {
        /// The log file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Signal handling could not be set up.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// Waiting for the child failed.
    #[error("waiting for the command failed: {0}")]
    Wait(std::io::Error),
    /// An empty command line.
    #[error("no command given after `--`")]
    NoCommand,
    /// [`LOG_KEEP_ENV`] is not a number of bytes.
    #[error("{LOG_KEEP_ENV}={value}: expected a number of bytes, e.g. {LOG_KEEP_ENV}=4194304")]
    BadLogKeep {
        /// The value found.
        value: String,
    },
}

/// Longest line redaction waits for before cutting it (see the module docs).
pub const MAX_LINE: usize = 1 << 20;
/// Bytes kept at the start and, again, at the end of each stored log by default.
pub const DEFAULT_LOG_KEEP_BYTES: u64 = 4 << 20;
/// Environment variable that sets [`LogPolicy::keep_bytes`] (a number of bytes).
pub const LOG_KEEP_ENV: &str = "TRAINPROV_LOG_KEEP_BYTES";

/// How stored logs are redacted and capped.
#[derive(Clone, Default)]
pub struct LogPolicy {
    /// Bytes kept at the start and at the end of each log; the middle is dropped.
    pub keep_bytes: u64,
    /// Literal values replaced by `***` wherever they appear (secret values of the environment
    /// and the command line).
    pub secrets: Vec<String>,
}

impl std::fmt::Debug for LogPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogPolicy")
            .field("keep_bytes", &self.keep_bytes)
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl LogPolicy {
    /// The policy for a command `argv` started with the wrapper's environment changed by `env`:
    /// keeps [`LOG_KEEP_ENV`] bytes (default [`DEFAULT_LOG_KEEP_BYTES`]) at each end, and
    /// redacts the values of every secret-named variable of the wrapper's and the child's
    /// environment ([`crate::redact::secret_env_values`]) and the secret values of the command
    /// line ([`crate::redact::secret_argv_values`]).
    pub fn from_environment(
        argv: &[OsString],
        env: &[(String, Option<String>)],
    ) -> Result<LogPolicy, ProcessError> {
        let keep_bytes = match std::env::var(LOG_KEEP_ENV) {
            Ok(value) if !value.trim().is_empty() => value
                .trim()
                .parse()
                .map_err(|_| ProcessError::BadLogKeep { value })?,
            _ => DEFAULT_LOG_KEEP_BYTES,
        };
        let mut vars: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        vars.extend(
            env.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.clone()?))),
        );
        let mut secrets = crate::redact::secret_env_values(vars);
        let argv: Vec<String> = argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        secrets.extend(crate::redact::secret_argv_values(&argv));
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Ok(LogPolicy {
            keep_bytes,
            secrets,
        })
    }
}

/// What happened to one stream's stored log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LogStats {
    /// Bytes the command wrote to the stream.
    pub total_bytes: u64,
    /// Bytes in the stored log (after redaction and capping, including the omission line).
    pub stored_bytes: u64,
    /// Whether the middle of the output was dropped.
    pub truncated: bool,
}

/// Both streams' [`LogStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LogSummary {
    /// `stdout.log`.
    pub stdout: LogStats,
    /// `stderr.log`.
    pub stderr: LogStats,
}

/// How the child ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildOutcome {
    /// Exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Signal that killed it, if any.
    pub signal: Option<i32>,
    /// Signal the wrapper received and forwarded, if any.
    pub forwarded_signal: Option<i32>,
    /// Wall-clock time.
    pub wall: Duration,
    /// Peak resident set size of the child tree.
    pub peak_rss_bytes: Option<u64>,
    /// The stdout copy.
    pub stdout_log: PathBuf,
    /// The stderr copy.
    pub stderr_log: PathBuf,
    /// What the stored logs hold.
    pub logs: LogSummary,
}

impl ChildOutcome {
    /// The exit code the wrapper should pass through: the child's, or 128 + signal.
    pub fn pass_through_code(&self) -> i32 {
        match (self.exit_code, self.signal) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => 1,
        }
    }

    /// Whether the run counts as successful (exit 0 and no interruption).
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && self.signal.is_none() && self.forwarded_signal.is_none()
    }

    /// Whether a signal stopped (or was forwarded to) the run.
    pub fn interrupted(&self) -> bool {
        self.signal.is_some() || self.forwarded_signal.is_some()
    }
}

/// Where the child's stdout is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    /// stdout to stdout, stderr to stderr.
    Normal,
    /// Both to stderr, keeping the wrapper's stdout free for machine output (`--json`).
    AllToStderr,
    /// Not shown; only logged.
    Hidden,
}

/// Runs `argv` in `cwd`, teeing output into `log_dir`.
pub fn run_teed(
    argv: &[OsString],
    cwd: &Path,
    log_dir: &Path,
    screen: Screen,
) -> Result<ChildOutcome, ProcessError> {
    run_teed_with_env(argv, cwd, log_dir, screen, &[])
}

/// [`run_teed`] with environment changes: `(name, Some(value))` sets, `(name, None)` removes.
/// Logs follow [`LogPolicy::from_environment`].
pub fn run_teed_with_env(
    argv: &[OsString],
    cwd: &Path,
    log_dir: &Path,
    screen: Screen,
    env: &[(String, Option<String>)],
) -> Result<ChildOutcome, ProcessError> {
    let policy = LogPolicy::from_environment(argv, env)?;
    run_logged(argv, cwd, log_dir, screen, env, &policy)
}

/// Creates `path` for writing with mode 0600 (the registry is private).
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)
}

/// [`run_teed_with_env`] with an explicit [`LogPolicy`].
pub fn run_logged(
    argv: &[OsString],
    cwd: &Path,
    log_dir: &Path,
    screen: Screen,
    env: &[(String, Option<String>)],
    policy: &LogPolicy,
) -> Result<ChildOutcome, ProcessError> {
    let (program, args) = argv.split_first().ok_or(ProcessError::NoCommand)?;
    crate::paths::create_private_dir_all(log_dir).map_err(|source| ProcessError::Log {
        path: log_dir.to_path_buf(),
        source,
    })?;
    let stdout_log = log_dir.join("stdout.log");
    let stderr_log = log_dir.join("stderr.log");
    let open = |path: &Path| {
        create_private(path).map_err(|source| ProcessError::Log {
            path: path.to_path_buf(),
            source,
        })
    };
    let out_sink = LogSink::new(open(&stdout_log)?, "stdout", policy.clone());
    let err_sink = LogSink::new(open(&stderr_log)?, "stderr", policy.clone());

    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(ProcessError::Signals)?;
    let signal_handle = signals.handle();
    let started = Instant::now();
    let mut command = Command::new(program);
    for (name, value) in env {
        match value {
            Some(v) => command.env(name, v),
            None => command.env_remove(name),
        };
    }
    command
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The watchdog starts first and leads the group the child joins, so there is no moment at
    // which the child runs unwatched.
    let mut watchdog = Watchdog::start();
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        command.process_group(watchdog.as_ref().map_or(0, Watchdog::group));
    }
    let mut child = command.spawn().map_err(|source| ProcessError::Spawn {
        program: program.to_string_lossy().into_owned(),
        source,
    })?;
    let pid = watchdog.as_ref().map_or(child.id() as i32, Watchdog::group);
    let forwarded = Arc::new(AtomicI32::new(0));
    let forwarder = {
        let forwarded = Arc::clone(&forwarded);
        std::thread::spawn(move || {
            for signal in signals.forever() {
                if forwarded.swap(signal, Ordering::SeqCst) == 0 {
                    eprintln!("trainprov: received signal {signal}, forwarding it to the command");
                }
                let group = nix::unistd::Pid::from_raw(-pid);
                if let Ok(sig) = nix::sys::signal::Signal::try_from(signal) {
                    let _ = nix::sys::signal::kill(group, sig);
                }
            }
        })
    };
    let stdout_pipe = child.stdout.take();
    let stderr_pipe = child.stderr.take();
    let tee_out = std::thread::spawn(move || match screen {
        Screen::Normal => tee(stdout_pipe, std::io::stdout(), out_sink),
        Screen::AllToStderr => tee(stdout_pipe, std::io::stderr(), out_sink),
        Screen::Hidden => tee(stdout_pipe, std::io::sink(), out_sink),
    });
    let tee_err = std::thread::spawn(move || match screen {
        Screen::Hidden => tee(stderr_pipe, std::io::sink(), err_sink),
        _ => tee(stderr_pipe, std::io::stderr(), err_sink),
    });
    let status = child.wait().map_err(ProcessError::Wait)?;
    let wall = started.elapsed();
    let logs = LogSummary {
        stdout: tee_out.join().unwrap_or_default(),
        stderr: tee_err.join().unwrap_or_default(),
    };
    signal_handle.close();
    let _ = forwarder.join();

    let peak_rss_bytes =
        nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
            .ok()
            .map(|u| u.max_rss().max(0) as u64 * 1024);
    // Reaped only now, so that the watchdog does not count towards the child's peak RSS.
    if let Some(watchdog) = watchdog.as_mut() {
        watchdog.stand_down();
    }
    #[cfg(unix)]
    let signal = std::os::unix::process::ExitStatusExt::signal(&status);
    #[cfg(not(unix))]
    let signal = None;
    let forwarded_signal = Some(forwarded.load(Ordering::SeqCst)).filter(|s| *s != 0);
    Ok(ChildOutcome {
        exit_code: status.code(),
        signal,
        forwarded_signal,
        wall,
        peak_rss_bytes,
        stdout_log,
        stderr_log,
        logs,
    })
}

/// The watchdog's script. It leads the child's process group and ignores the signals forwarded
/// to that group; see the module docs.
const WATCHDOG_SCRIPT: &str = r#"trap '' INT TERM HUP
IFS= read -r line
[ "$line" = done ] && exit 0
kill -s TERM -- "-$$" 2>/dev/null
sleep 1
kill -s KILL -- "-$$" 2>/dev/null
exit 0"#;

/// A process that stops the child's group when the wrapper dies (see the module docs).
struct Watchdog {
    process: std::process::Child,
}

impl Watchdog {
    /// Starts the watchdog in a new process group; `None` (after a warning) where `/bin/sh`
    /// cannot be started.
    fn start() -> Option<Watchdog> {
        let mut command = Command::new("/bin/sh");
        command
            .args(["-c", WATCHDOG_SCRIPT, "trainprov-watchdog"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt as _;
            // A group of its own (Ctrl-C at the terminal reaches only the wrapper's), which the
            // child joins.
            command.process_group(0);
        }
        match command.spawn() {
            Ok(process) => Some(Watchdog { process }),
            Err(e) => {
                eprintln!(
                    "trainprov: warning: cannot start the watchdog (/bin/sh: {e}); if trainprov is killed, the command keeps running"
                );
                None
            }
        }
    }

    /// The process group it leads, which the child joins.
    fn group(&self) -> i32 {
        i32::try_from(self.process.id()).unwrap_or(i32::MAX)
    }

    /// The child has ended: tell the watchdog to exit without killing anything, and reap it.
    fn stand_down(&mut self) {
        if let Some(mut stdin) = self.process.stdin.take() {
            let _ = stdin.write_all(b"done\n");
        }
        let _ = self.process.wait();
    }
}

/// The stored copy of one stream: redacted line by line, first and last `keep_bytes` kept.
struct LogSink {
    file: std::fs::File,
    stream: &'static str,
    policy: LogPolicy,
    /// Bytes read but not yet redacted: the current, unfinished line.
    pending: Vec<u8>,
    total: u64,
    head_written: u64,
    tail: VecDeque<u8>,
    dropped: u64,
}

impl LogSink {
    fn new(file: std::fs::File, stream: &'static str, policy: LogPolicy) -> LogSink {
        LogSink {
            file,
            stream,
            policy,
            pending: Vec::new(),
            total: 0,
            head_written: 0,
            tail: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Takes the next bytes the command wrote.
    fn feed(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        let before = self.pending.len();
        self.pending.extend_from_slice(chunk);
        let cut = match chunk.iter().rposition(|&b| b == b'\n') {
            Some(i) => before + i + 1,
            None if self.pending.len() < MAX_LINE => return,
            None => self
                .pending
                .iter()
                .rposition(|b| b.is_ascii_whitespace() || b.is_ascii_control())
                .map_or(self.pending.len(), |i| i + 1),
        };
        let rest = self.pending.split_off(cut);
        let ready = std::mem::replace(&mut self.pending, rest);
        self.emit_redacted(&ready);
    }

    fn emit_redacted(&mut self, segment: &[u8]) {
        let redacted = redact_segment(segment, &self.policy.secrets);
        self.emit(&redacted);
    }

    /// Keeps redacted bytes: the first `keep_bytes` go to the file, later ones to the tail.
    fn emit(&mut self, bytes: &[u8]) {
        let keep = self.policy.keep_bytes;
        let room = usize::try_from(keep.saturating_sub(self.head_written))
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let (head, rest) = bytes.split_at(room);
        if !head.is_empty() {
            let _ = self.file.write_all(head);
            self.head_written += head.len() as u64;
        }
        if rest.is_empty() {
            return;
        }
        self.tail.extend(rest);
        let limit = usize::try_from(keep).unwrap_or(usize::MAX);
        let excess = self.tail.len().saturating_sub(limit);
        if excess > 0 {
            self.tail.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    /// End of stream: redact what is left, write the omission line and the tail.
    fn finish(mut self) -> LogStats {
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() {
            self.emit_redacted(&rest);
        }
        let mut stored = self.head_written;
        if self.dropped > 0 {
            let line = format!(
                "\n[trainprov: {} bytes omitted here; the command wrote {} bytes to {}; stored are the first and the last {} bytes after redaction ({} to change)]\n",
                self.dropped, self.total, self.stream, self.policy.keep_bytes, LOG_KEEP_ENV
            );
            let _ = self.file.write_all(line.as_bytes());
            stored += line.len() as u64;
        }
        let (a, b) = self.tail.as_slices();
        let _ = self.file.write_all(a).and_then(|()| self.file.write_all(b));
        stored += self.tail.len() as u64;
        let _ = self.file.sync_all();
        LogStats {
            total_bytes: self.total,
            stored_bytes: stored,
            truncated: self.dropped > 0,
        }
    }
}

/// Redacts one run of whole lines: each valid UTF-8 stretch through
/// [`crate::redact::redact_log_text`], invalid bytes kept as they are.
fn redact_segment(segment: &[u8], secrets: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(segment.len());
    for chunk in segment.utf8_chunks() {
        let valid = chunk.valid();
        if !valid.is_empty() {
            out.extend_from_slice(crate::redact::redact_log_text(valid, secrets).as_bytes());
        }
        out.extend_from_slice(chunk.invalid());
    }
    out
}

/// Copies `source` to both `screen` (as read) and `log` (redacted, capped) until end of file. A
/// closed screen (e.g. a pipe to `head`) does not stop the log copy.
fn tee(source: Option<impl Read>, mut screen: impl Write, mut log: LogSink) -> LogStats {
    let Some(mut source) = source else {
        return log.finish();
    };
    let mut buffer = vec![0u8; 64 * 1024];
    let mut screen_ok = true;
    loop {
        let n = match source.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if screen_ok {
            screen_ok = screen
                .write_all(&buffer[..n])
                .and_then(|_| screen.flush())
                .is_ok();
        }
        log.feed(&buffer[..n]);
    }
    log.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<OsString> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn exit_code_and_logs_are_captured() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outcome = run_teed(
            &sh("echo out; echo err >&2; exit 3"),
            dir.path(),
            &dir.path().join("logs"),
            Screen::Normal,
        )
        .expect("run");
        assert_eq!(outcome.exit_code, Some(3));
        assert_eq!(outcome.pass_through_code(), 3);
        assert!(!outcome.succeeded());
        assert_eq!(
            std::fs::read_to_string(&outcome.stdout_log).expect("log"),
            "out\n"
        );
        assert_eq!(
            std::fs::read_to_string(&outcome.stderr_log).expect("log"),
            "err\n"
        );
        assert!(outcome.peak_rss_bytes.is_some_and(|b| b > 0));
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = run_teed(
            &["definitely-not-a-program-xyz".into()],
            dir.path(),
            &dir.path().join("l"),
            Screen::Normal,
        )
        .expect_err("must fail");
        assert!(
            err.to_string().contains("definitely-not-a-program-xyz"),
            "{err}"
        );
    }
    fn sink_with(keep: u64, secrets: &[&str]) -> (tempfile::TempDir, PathBuf, LogSink) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let file = create_private(&path).expect("create");
        let policy = LogPolicy {
            keep_bytes: keep,
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
        };
        (dir, path, LogSink::new(file, "stdout", policy))
    }

    #[test]
    fn issue11_token_split_across_reads_is_redacted() {
        let token = format!("hf_{}", "abcdefghij".repeat(4));
        let secret = "s3cr3t value with spaces";
        let text = format!("loss 1.0\nlogin {token} ok\npassword is {secret}!\nend");
        // Every split point of the text into two reads.
        for cut in 0..=text.len() {
            let (_dir, path, mut sink) = sink_with(DEFAULT_LOG_KEEP_BYTES, &[secret]);
            sink.feed(&text.as_bytes()[..cut]);
            sink.feed(&text.as_bytes()[cut..]);
            let stats = sink.finish();
            let stored = std::fs::read_to_string(&path).expect("log");
            assert_eq!(
                stored, "loss 1.0\nlogin *** ok\npassword is ***!\nend",
                "cut at {cut}"
            );
            assert_eq!(stats.total_bytes, text.len() as u64);
            assert!(!stats.truncated);
        }
        // One byte per read.
        let (_dir, path, mut sink) = sink_with(DEFAULT_LOG_KEEP_BYTES, &[secret]);
        for b in text.as_bytes() {
            sink.feed(std::slice::from_ref(b));
        }
        sink.finish();
        assert!(!std::fs::read_to_string(&path).expect("log").contains("hf_"));
    }

    #[test]
    fn issue11_a_long_line_without_newline_is_cut_between_tokens() {
        let token = format!("ghp_{}", "A1b2C3d4".repeat(5));
        let (_dir, path, mut sink) = sink_with(u64::MAX, &[]);
        // Over MAX_LINE of words without a newline, a token straddling the 1 MiB mark, in reads
        // of 64 KiB as the tee does.
        let mut text = "w ".repeat(MAX_LINE / 2 - 10).into_bytes();
        text.extend_from_slice(token.as_bytes());
        text.extend_from_slice(" tail".repeat(100_000).as_bytes());
        for chunk in text.chunks(64 * 1024) {
            sink.feed(chunk);
            assert!(sink.pending.len() <= MAX_LINE + 64 * 1024, "bounded memory");
        }
        sink.finish();
        let stored = std::fs::read(&path).expect("log");
        assert!(!stored.windows(4).any(|w| w == b"ghp_"), "token split");
        assert_eq!(stored.len(), text.len() - token.len() + REDACTED_LEN);
    }

    const REDACTED_LEN: usize = crate::redact::REDACTED.len();

    #[test]
    fn issue11_log_keeps_head_and_tail_and_counts_the_total() {
        let (_dir, path, mut sink) = sink_with(100, &[]);
        let text: String = (0..2000).map(|n| format!("{n}\n")).collect();
        for chunk in text.as_bytes().chunks(777) {
            sink.feed(chunk);
        }
        let stats = sink.finish();
        let stored = std::fs::read_to_string(&path).expect("log");
        assert!(stats.truncated);
        assert_eq!(stats.total_bytes, text.len() as u64);
        assert_eq!(stats.stored_bytes, stored.len() as u64);
        assert!(stored.starts_with(&text[..100]), "{stored}");
        assert!(stored.ends_with(&text[text.len() - 100..]), "{stored}");
        let omitted = text.len() - 200;
        assert!(
            stored.contains(&format!(
                "[trainprov: {omitted} bytes omitted here; the command wrote {} bytes to stdout",
                text.len()
            )),
            "{stored}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn issue11_logs_are_private_redacted_and_streamed() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = LogPolicy {
            keep_bytes: 1 << 20,
            secrets: vec!["planted-value-123".into()],
        };
        let outcome = run_logged(
            &sh("echo planted-value-123; head -c 5000000 /dev/zero; echo; echo end >&2"),
            dir.path(),
            &dir.path().join("logs"),
            Screen::Hidden,
            &[],
            &policy,
        )
        .expect("run");
        assert_eq!(outcome.logs.stdout.total_bytes, 18 + 5_000_000 + 1);
        assert!(outcome.logs.stdout.truncated);
        assert!(outcome.logs.stdout.stored_bytes < 3 << 20);
        let stored = std::fs::read(&outcome.stdout_log).expect("log");
        assert!(stored.starts_with(b"***\n\0"));
        for log in [&outcome.stdout_log, &outcome.stderr_log] {
            let mode = std::fs::metadata(log).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let mode = std::fs::metadata(dir.path().join("logs"))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn log_policy_collects_secret_values() {
        let argv: Vec<OsString> = [
            "python",
            "t.py",
            "--hf-token",
            "hf-from-argv",
            "--lr",
            "0.1",
        ]
        .map(OsString::from)
        .into();
        let env = vec![
            (
                "WANDB_API_KEY".to_string(),
                Some("wandb-value-1".to_string()),
            ),
            ("OMP_NUM_THREADS".to_string(), Some("4".to_string())),
        ];
        let policy = LogPolicy::from_environment(&argv, &env).expect("policy");
        assert!(policy.secrets.contains(&"hf-from-argv".to_string()));
        assert!(policy.secrets.contains(&"wandb-value-1".to_string()));
        assert!(!policy.secrets.contains(&"4".to_string()));
        assert!(!format!("{policy:?}").contains("wandb-value-1"));
    }
}
