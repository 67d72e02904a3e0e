//! Running the wrapped command: stdio teed to log files, signals forwarded, exit status and peak
//! memory collected.
//!
//! - stdin is inherited; stdout and stderr are piped and copied, chunk by chunk, both to the
//!   wrapper's own stdout/stderr and to `stdout.log` / `stderr.log` (the child therefore sees
//!   pipes, not a terminal).
//! - The child runs in its own process group. SIGINT, SIGTERM and SIGHUP sent to the wrapper
//!   (including Ctrl-C at the terminal, which reaches only the wrapper's group) are forwarded
//!   once to the child's whole group, so `sh -c 'python train.py'` stops as a unit.
//! - Peak RSS is `getrusage(RUSAGE_CHILDREN)`'s maximum after the child is reaped, so it covers
//!   the child and every descendant it waited for. The wrapper must not have run other children
//!   before (environment probes run afterwards for this reason).

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
pub fn run_teed_with_env(
    argv: &[OsString],
    cwd: &Path,
    log_dir: &Path,
    screen: Screen,
    env: &[(String, Option<String>)],
) -> Result<ChildOutcome, ProcessError> {
    let (program, args) = argv.split_first().ok_or(ProcessError::NoCommand)?;
    std::fs::create_dir_all(log_dir).map_err(|source| ProcessError::Log {
        path: log_dir.to_path_buf(),
        source,
    })?;
    let stdout_log = log_dir.join("stdout.log");
    let stderr_log = log_dir.join("stderr.log");
    let open = |path: &Path| {
        std::fs::File::create(path).map_err(|source| ProcessError::Log {
            path: path.to_path_buf(),
            source,
        })
    };
    let (out_file, err_file) = (open(&stdout_log)?, open(&stderr_log)?);

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
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        command.process_group(0);
    }
    let mut child = command.spawn().map_err(|source| ProcessError::Spawn {
        program: program.to_string_lossy().into_owned(),
        source,
    })?;
    let pid = child.id() as i32;
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
        Screen::Normal => tee(stdout_pipe, std::io::stdout(), out_file),
        Screen::AllToStderr => tee(stdout_pipe, std::io::stderr(), out_file),
    });
    let tee_err = std::thread::spawn(move || tee(stderr_pipe, std::io::stderr(), err_file));
    let status = child.wait().map_err(ProcessError::Wait)?;
    let wall = started.elapsed();
    let _ = tee_out.join();
    let _ = tee_err.join();
    signal_handle.close();
    let _ = forwarder.join();

    let peak_rss_bytes =
        nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
            .ok()
            .map(|u| u.max_rss().max(0) as u64 * 1024);
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
    })
}

/// Copies `source` to both `screen` and `log` until end of file. A closed screen (e.g. a pipe
/// to `head`) does not stop the log copy.
fn tee(source: Option<impl Read>, mut screen: impl Write, mut log: std::fs::File) {
    let Some(mut source) = source else { return };
    let mut buffer = [0u8; 64 * 1024];
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
        let _ = log.write_all(&buffer[..n]);
    }
    let _ = log.sync_all();
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
}
