//! Running a process in a container root through an OCI runtime.
//!
//! The boundary is the OCI runtime bundle: `config.json` (built by [`spec`]) whose
//! `root.path` is the container's mounted root. Two runtimes take it:
//! - [`Runtime::InProcess`] (default, config `[run] runtime = "libcontainer"`): youki's
//!   `libcontainer` crate inside this process, as the `youki run` command does
//!   (`ContainerBuilder::as_init(bundle).build()`, `start()`, wait while forwarding
//!   signals, `delete(true)`); state under [`STATE_ROOT`]`/libcontainer`.
//! - [`Runtime::External`] (`[run] runtime = "runc"`, or a path): `RUNTIME --root
//!   STATE_ROOT/<name> --log FILE --log-format json run --bundle DIR ID`; the runtime
//!   forwards signals to the container itself, we forward ours to it; its stderr is
//!   relayed by [`stderr_relay`]. With `-t`: `create --console-socket` + `start`
//!   (`external_tty`), so the pty has its size before the process runs.
//!
//! `-t` (`process.terminal`): a new pty of the container's devpts, its master received
//! on a console socket and relayed by us ([`tty`]), on both runtimes.
//!
//! Signals: from the start of a run, SIGINT, SIGTERM, SIGHUP and SIGQUIT only mark
//! themselves pending (see [`signals`]); once the process runs they are blocked, read
//! from a signalfd (or from the handler's record, when another thread took one) and
//! forwarded to it (the in-process container's init, or the
//! runtime process), and a pending one is forwarded first. The container's exit
//! status is ours (`128 + N` for signal N, the shell's rule).

mod external_tty;
pub mod loopback;
pub mod signals;
pub mod spec;
pub mod stderr_relay;
pub mod tty;
pub mod volume;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Where runtimes keep their state (tmpfs on a normal system; gone at reboot, as the
/// runtime's view of running containers should be).
pub const STATE_ROOT: &str = "/run/layerctl";

/// Exit code of a run whose runtime failed before or while starting the process
/// (Docker's `125`: the container command never ran).
pub const EXIT_RUNTIME: i32 = 125;

/// Why a run failed, with its exit code ([`RunError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A bad flag value (volume spec, `-e`, user, no command): exit 2.
    #[error("{0}")]
    Usage(String),
    /// A volume that cannot be prepared: exit 5.
    #[error("volume {}: {reason}", path.display())]
    Volume {
        /// The host or container path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The runtime could not start the process: exit [`EXIT_RUNTIME`].
    #[error("runtime {runtime}: {message}")]
    Runtime {
        /// `libcontainer` or the runtime binary.
        runtime: String,
        /// The runtime's error.
        message: String,
    },
    /// The process ran and exited with a non-zero status: that status, no message.
    #[error("the container process exited with status {0}")]
    Exited(i32),
}

impl RunError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Usage(_) => 2,
            RunError::Volume { .. } => 5,
            RunError::Runtime { .. } => EXIT_RUNTIME,
            RunError::Exited(n) => *n,
        }
    }
}

/// The runtime that runs a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runtime {
    /// youki's libcontainer in this process.
    InProcess,
    /// A runtime binary taking runc's command line (runc, crun, youki).
    External(PathBuf),
}

/// Name of the in-process runtime in config and `--runtime`.
pub const IN_PROCESS: &str = "libcontainer";

impl Runtime {
    /// `libcontainer` (or empty) is the in-process runtime; anything else a binary name
    /// or path.
    pub fn from_name(name: &str) -> Runtime {
        if name.is_empty() || name == IN_PROCESS {
            Runtime::InProcess
        } else {
            Runtime::External(PathBuf::from(name))
        }
    }

    /// Its name for messages.
    pub fn name(&self) -> String {
        match self {
            Runtime::InProcess => IN_PROCESS.to_owned(),
            Runtime::External(p) => p.display().to_string(),
        }
    }

    /// Runs bundle `bundle` as container `id` in the foreground; returns the process's
    /// exit status (`128 + N` when killed by signal N). Errors: [`RunError::Runtime`]
    /// when the process could not be started; the runtime's state for `id` is removed
    /// in every case.
    pub fn run(&self, id: &str, bundle: &Path) -> Result<i32, RunError> {
        match self {
            Runtime::InProcess => run_in_process(id, bundle),
            Runtime::External(bin) => run_external(bin, id, bundle),
        }
    }
}

/// Removes what runs killed with SIGKILL left under [`STATE_ROOT`]: bundle directories
/// `bundles/<name>.<pid>` whose pid is gone, and in-process runtime state of containers
/// that are stopped (their init is gone). A live run's bundle and state are kept.
/// Errors are logged: this is housekeeping before a run.
pub fn sweep_stale() {
    let bundles = Path::new(STATE_ROOT).join("bundles");
    if let Ok(rd) = std::fs::read_dir(&bundles) {
        for e in rd.flatten() {
            let name = e.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.rsplit_once('.'))
                .and_then(|(_, p)| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                if !driver_core::fsutil::pid_alive(pid) {
                    tracing::debug!(bundle = %e.path().display(), "removing a killed run's bundle");
                    if let Err(err) = std::fs::remove_dir_all(e.path()) {
                        tracing::warn!(bundle = %e.path().display(), error = %err, "stale bundle left");
                    }
                }
            }
        }
    }
    let state_root = Path::new(STATE_ROOT).join(IN_PROCESS);
    if let Ok(rd) = std::fs::read_dir(&state_root) {
        for e in rd.flatten() {
            let dir = e.path();
            if !dir.is_dir() {
                // A killed `-t` run's console socket, `tty-<pid>.sock`.
                let name = e.file_name();
                let pid = name
                    .to_str()
                    .and_then(|n| n.strip_prefix("tty-")?.strip_suffix(".sock"))
                    .and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|p| !driver_core::fsutil::pid_alive(p)) {
                    let _ = std::fs::remove_file(&dir);
                }
                continue;
            }
            // A live run owns it: never touched, whatever its status (a container being
            // built has no pid yet and loads as Stopped; another run's sweep deleted
            // and killed it). Otherwise: the run that owns it is gone (its state may
            // even be empty: libcontainer rewrites state.json in place), or, with no
            // owner recorded, the container stopped by itself.
            let owner = std::fs::read_to_string(owner_file(&dir))
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok());
            if owner.is_some_and(driver_core::fsutil::pid_alive) {
                continue;
            }
            let owner_gone = owner.is_some();
            let loaded = libcontainer::container::Container::load(dir.clone());
            let stopped = loaded
                .as_ref()
                .is_ok_and(|c| c.status() == libcontainer::container::ContainerStatus::Stopped);
            if !(owner_gone || stopped) {
                continue;
            }
            tracing::debug!(state = %dir.display(), "removing a killed run's runtime state");
            if let Ok(mut c) = loaded {
                if let Err(err) = c.delete(true) {
                    tracing::warn!(state = %dir.display(), error = %err, "delete of a killed run's container failed");
                }
            }
            remove_in_process_state(&dir);
        }
    }
}

/// The pid of a live `layerctl run` of container `name` whose root is mounted at
/// `root`: a bundle `bundles/<name>.<pid>` whose pid runs and whose `config.json`
/// names `root` as `root.path` (bundle names do not say which store a run belongs to;
/// the mounted root does). A run writes its bundle while it holds the store lock, and
/// removes it before it takes the lock again to unmount, so a command holding the
/// exclusive lock sees every run whose process may be using the root.
pub fn live_run_of(name: &str, root: &Path) -> Option<u32> {
    let bundles = Path::new(STATE_ROOT).join("bundles");
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_owned());
    for e in std::fs::read_dir(&bundles).ok()?.flatten() {
        let file_name = e.file_name();
        let Some((n, pid)) = file_name.to_str().and_then(|s| s.rsplit_once('.')) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if n != name || !driver_core::fsutil::pid_alive(pid) {
            continue;
        }
        let Ok(text) = std::fs::read(e.path().join("config.json")) else {
            continue;
        };
        let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&text) else {
            continue;
        };
        let Some(path) = spec["root"]["path"].as_str().map(Path::new) else {
            continue;
        };
        if std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned()) == root {
            return Some(pid);
        }
    }
    None
}

/// `<state dir>.owner`: the pid of the run that made an in-process container's state.
fn owner_file(state_dir: &Path) -> PathBuf {
    let mut s = state_dir.as_os_str().to_owned();
    s.push(".owner");
    PathBuf::from(s)
}

fn rt_err(runtime: &str, message: impl std::fmt::Display) -> RunError {
    RunError::Runtime {
        runtime: runtime.to_owned(),
        message: message.to_string(),
    }
}

/// Exit status of a process whose command exists but cannot be executed (`ENOEXEC`: a
/// binary for another architecture, a script without `#!`; `EACCES`): 126, as Docker
/// and POSIX shells give.
pub const EXIT_CANNOT_EXEC: i32 = 126;

/// Exit status when `execvp` says ENOENT though the command was found (an ELF whose
/// interpreter, e.g. `/lib/ld-musl-aarch64.so.1`, is missing): 127, as Docker gives.
pub const EXIT_NOT_FOUND: i32 = 127;

/// libcontainer's [`DefaultExecutor`](libcontainer::workload::default::DefaultExecutor)
/// (validation, environment), with the `execvp` done here: when it fails (after the
/// start handshake, so no error reaches `run`), the container's init process wrote
/// nothing and exited 255. Now it writes one line on its stderr, `layerctl: exec
/// /bin/sh: Exec format error (os error 8)` (runc says `exec /bin/sh: exec format
/// error`), and exits [`EXIT_CANNOT_EXEC`].
#[derive(Clone)]
struct ReportingExecutor(libcontainer::workload::default::DefaultExecutor);

impl libcontainer::workload::Executor for ReportingExecutor {
    fn exec(
        &self,
        spec: &libcontainer::oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorError> {
        use std::ffi::CString;
        use std::io::Write;
        let args: Vec<String> = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default();
        let Some(cargs) = args
            .iter()
            .map(|a| CString::new(a.as_bytes()).ok())
            .collect::<Option<Vec<CString>>>()
            .filter(|a| !a.is_empty())
        else {
            return self.0.exec(spec); // its own error for no or NUL-holding arguments
        };
        let err = match nix::unistd::execvp(&cargs[0], &cargs) {
            Err(e) => e,
            Ok(never) => match never {},
        };
        let _ = writeln!(
            std::io::stderr(),
            "layerctl: exec {}: {}",
            args[0],
            std::io::Error::from(err)
        );
        std::process::exit(if err == nix::errno::Errno::ENOENT {
            EXIT_NOT_FOUND
        } else {
            EXIT_CANNOT_EXEC
        });
    }

    fn validate(
        &self,
        spec: &libcontainer::oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        self.0.validate(spec)
    }
}

fn run_in_process(id: &str, bundle: &Path) -> Result<i32, RunError> {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::container::Container;
    use libcontainer::syscall::syscall::SyscallType;
    use libcontainer::workload::default::DefaultExecutor;

    let state_root = Path::new(STATE_ROOT).join(IN_PROCESS);
    std::fs::create_dir_all(&state_root)
        .map_err(|e| rt_err(IN_PROCESS, format!("create {}: {e}", state_root.display())))?;
    let state_dir = state_root.join(id);
    // A state directory left by a killed run of this container: delete it first.
    if state_dir.exists() {
        match Container::load(state_dir.clone()) {
            Ok(mut c) => {
                if let Err(e) = c.delete(true) {
                    tracing::warn!(error = %e, id, "delete of a stale libcontainer container failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, id, "stale libcontainer state unreadable"),
        }
        let _ = std::fs::remove_dir_all(&state_dir);
    }
    let spec = oci_spec::runtime::Spec::load(bundle.join("config.json")).ok();
    // `process.terminal`: a new pty, its master sent to our console socket (see
    // [`tty`]); libcontainer takes a console socket only for a detached build (its
    // `check_terminal`), which changes nothing else: the init is still our child and
    // we wait for it as for any run.
    let terminal = spec
        .as_ref()
        .and_then(|s| s.process().as_ref())
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let console = if terminal {
        // Short (a sockaddr_un path), unique to this run.
        let path = state_root.join(format!("tty-{}.sock", std::process::id()));
        Some(tty::ConsoleSocket::bind(path).map_err(|e| rt_err(IN_PROCESS, error_chain(&e)))?)
    } else {
        None
    };
    // The owner is recorded before the state exists, so that no other run's
    // `sweep_stale` takes the container being built for a killed run's.
    if let Err(e) = std::fs::write(owner_file(&state_dir), std::process::id().to_string()) {
        tracing::warn!(error = %e, id, "cannot record the run owning the runtime state");
    }
    let built = ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_executor(ReportingExecutor(DefaultExecutor {}))
        .with_console_socket(console.as_ref().map(|c| c.path().to_owned()))
        .with_root_path(&state_root)
        .and_then(|b| b.validate_id())
        .map(|b| b.as_init(bundle).with_systemd(false).with_detach(terminal))
        .and_then(|b| b.build());
    let mut container = match built {
        Ok(c) => c,
        Err(e) => {
            remove_in_process_state(&state_dir);
            return Err(rt_err(IN_PROCESS, error_chain(&e)));
        }
    };
    let fail = |container: &mut Container, message: String| {
        let _ = container.delete(true);
        remove_in_process_state(&state_dir);
        rt_err(IN_PROCESS, message)
    };
    let master = match console.as_ref().map(|c| c.receive_master()).transpose() {
        Ok(m) => m,
        Err(e) => return Err(fail(&mut container, error_chain(&e))),
    };
    drop(console);
    // runc brings the new network namespace's loopback up; libcontainer does not.
    let new_netns = spec.as_ref().is_some_and(has_new_netns);
    if let (true, Some(pid)) = (new_netns, container.pid()) {
        if let Err(e) = loopback::bring_up(pid.as_raw()) {
            return Err(fail(&mut container, format!("loopback: {e}")));
        }
    }
    let blocked = signals::block();
    // Our terminal goes raw only now, and is restored when `raw` drops: on every
    // return below (the forwarded signals never end this process during a run).
    let (raw, relay) = match master.map(|m| (tty::RawMode::enter(), m)) {
        None => (None, None),
        Some((Ok(raw), m)) => match tty::Relay::start(m) {
            Ok(r) => (raw, Some(r)),
            Err(e) => return Err(fail(&mut container, error_chain(&e))),
        },
        Some((Err(e), _)) => return Err(fail(&mut container, error_chain(&e))),
    };
    if let Err(e) = container.start() {
        return Err(fail(&mut container, error_chain(&e)));
    }
    let Some(pid) = container.pid() else {
        return Err(fail(
            &mut container,
            "started container has no init pid".into(),
        ));
    };
    // libcontainer's Pid is from its own nix version. With a pty, SIGWINCH resizes it
    // (the kernel signals the container's foreground group) instead of going to init.
    let status = wait_forwarding(Pid::from_raw(pid.as_raw()), &blocked, &mut |sig| match (
        &relay, sig,
    ) {
        (Some(r), Signal::SIGWINCH) => {
            r.resize();
            true
        }
        _ => false,
    });
    if let Some(r) = relay {
        r.finish(RELAY_DRAIN);
    }
    drop(raw);
    drop(blocked);
    if let Err(e) = container.delete(true) {
        tracing::warn!(error = %e, id, "libcontainer delete failed");
    }
    remove_in_process_state(&state_dir);
    status.map_err(|e| rt_err(IN_PROCESS, e))
}

/// Whether the runtime config asks for a new network namespace (no path: not joined).
fn has_new_netns(spec: &oci_spec::runtime::Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
        .iter()
        .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network && n.path().is_none())
}

fn remove_in_process_state(dir: &Path) {
    let _ = std::fs::remove_file(owner_file(dir));
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "runtime state left"),
    }
}

/// The error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

fn run_external(bin: &Path, id: &str, bundle: &Path) -> Result<i32, RunError> {
    let name = bin.display().to_string();
    let base = bin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "runtime".into());
    let state_root = Path::new(STATE_ROOT).join(&base);
    std::fs::create_dir_all(&state_root)
        .map_err(|e| rt_err(&name, format!("create {}: {e}", state_root.display())))?;
    // The runtime's own log goes to a file (json lines); its stderr is a pipe relayed
    // to ours without its fatal line (see [`stderr_relay`]), so a failure is one line
    // of ours.
    let log = bundle.join("runtime.log");
    let base_cmd = || {
        let mut c = Command::new(bin);
        c.arg("--root")
            .arg(&state_root)
            .arg("--log")
            .arg(&log)
            .arg("--log-format")
            .arg("json");
        c
    };
    // A container left by a killed run of this container: delete it first.
    if state_root.join(id).exists() {
        let st = base_cmd().args(["delete", "--force", id]).status();
        tracing::debug!(?st, id, "deleted a stale runtime container");
    }
    // `process.terminal`: create, pty size, start (see [`external_tty`]).
    let terminal = oci_spec::runtime::Spec::load(bundle.join("config.json"))
        .ok()
        .and_then(|s| s.process().as_ref().and_then(|p| p.terminal()))
        .unwrap_or(false);
    if terminal {
        return external_tty::run(&name, &base_cmd, id, bundle, &log, &state_root);
    }
    // Spawned before the signals are blocked: a Go runtime (runc) keeps the blockable
    // signals it inherits blocked (SIGUSR1, SIGUSR2, SIGWINCH) in every thread, and the
    // container's init inherits that mask, so its traps for them never ran. A signal
    // that comes before `block` is recorded by the handler and forwarded first.
    let mut child = base_cmd()
        .arg("run")
        .arg("--bundle")
        .arg(bundle)
        .arg(id)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| rt_err(&name, format!("start {}: {e}", bin.display())))?;
    let blocked = signals::block();
    let pid = Pid::from_raw(child.id() as i32);
    // Started with the forwarded signals blocked, so the relay thread never takes one.
    let relay = child.stderr.take().map(|from| {
        let log = log.clone();
        let (done, finished) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            stderr_relay::relay(from, std::io::stderr(), &log);
            let _ = done.send(());
        });
        finished
    });
    let status = wait_forwarding(pid, &blocked, &mut |_| false);
    drop(blocked);
    // The pipe ends when the runtime and the container's processes (gone with its PID
    // namespace) have closed it; a process that escaped with it must not hold the run.
    if let Some(finished) = relay {
        if finished.recv_timeout(RELAY_DRAIN).is_err() {
            tracing::warn!(id, "the runtime's stderr is still open after it exited");
        }
    }
    // The runtime reaped; std's Child must not wait again (it would get ECHILD).
    let _ = child.try_wait();
    let status = status.map_err(|e| rt_err(&name, e))?;
    if let Some(msg) = runtime_error(&log) {
        // The runtime failed to start the process (its log has an error entry).
        let _ = base_cmd().args(["delete", "--force", id]).status();
        return Err(rt_err(&name, msg));
    }
    Ok(status)
}

/// The last `"level":"error"` message of a runc-style json log, if any.
fn runtime_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "error")
        .find_map(|v| v["msg"].as_str().map(str::to_owned))
}

/// How long a run waits, after the process ended, for the rest of its output to be
/// relayed (the pipe or pty is normally at its end already: the PID namespace is gone).
const RELAY_DRAIN: Duration = Duration::from_secs(5);

/// How often the wait looks at signals the recording handler took (see
/// [`wait_forwarding`]).
const PENDING_POLL_MS: u16 = 100;

/// Waits for `pid` (our child) to end, forwarding the blocked signals to it, except
/// those `local` takes (returns true for). Returns its exit status, `128 + N` for
/// death by signal N. Reaps `pid` only, never another child (`waitpid(pid)`, not
/// `waitpid(-1)`): the aufs driver's reaper thread waits for its FUSE server itself.
///
/// Other threads of this process may not block the signals (the aufs driver's thread
/// that reaps its server is made before a run blocks them), and a process-directed
/// signal goes to any thread that does not block it. So the end of the process is
/// seen through a pidfd, not SIGCHLD (which such a thread would drop: its default
/// action is to ignore it), and the signals arrive through a signalfd when this thread
/// gets them and through [`signals::take_pending`] (the recording handler ran in
/// another thread), looked at every [`PENDING_POLL_MS`].
fn wait_forwarding(
    pid: Pid,
    blocked: &signals::Blocked,
    local: &mut dyn FnMut(Signal) -> bool,
) -> Result<i32, String> {
    let mut deliver = |sig: Signal| {
        if sig != Signal::SIGCHLD && !local(sig) {
            forward(pid, sig);
        }
    };
    let pidfd = rustix::process::Pid::from_raw(pid.as_raw())
        .ok_or_else(|| format!("bad pid {pid}"))
        .and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
                .map_err(|e| format!("pidfd_open {pid}: {e}"))
        })?;
    let sigfd = blocked.signalfd().map_err(|e| format!("signalfd: {e}"))?;
    loop {
        // Signals that arrived before they were blocked, or in another thread.
        for sig in signals::take_pending() {
            deliver(sig);
        }
        // Only `pid`: any other child of this process has its own waiter (the aufs
        // driver's thread reaps its FUSE server's status), which must not lose it.
        loop {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                Ok(WaitStatus::StillAlive) => break,
                // Stopped/continued (not asked for) or a ptrace event: still running.
                Ok(_) => break,
                Err(nix::errno::Errno::ECHILD) => {
                    return Err(format!("process {pid} is not our child"))
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("waitpid {pid}: {e}")),
            }
        }
        let mut fds = [
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::from(PENDING_POLL_MS)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        loop {
            match sigfd.read_signal() {
                Ok(Some(info)) => {
                    if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                        deliver(sig);
                    }
                }
                Ok(None) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("read signalfd: {e}")),
            }
        }
    }
}

fn forward(pid: Pid, sig: Signal) {
    tracing::debug!(?sig, %pid, "forwarding signal");
    if let Err(e) = kill(pid, sig) {
        tracing::warn!(?sig, %pid, error = %e, "forwarding a signal failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_names() {
        assert_eq!(Runtime::from_name("libcontainer"), Runtime::InProcess);
        assert_eq!(Runtime::from_name("runc"), Runtime::External("runc".into()));
    }

    #[test]
    fn runtime_log_error_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log");
        std::fs::write(
            &p,
            "{\"level\":\"warning\",\"msg\":\"w\"}\nnot json\n{\"level\":\"error\",\"msg\":\"exec: \\\"nope\\\": not found\"}\n",
        )
        .unwrap();
        assert_eq!(
            runtime_error(&p).as_deref(),
            Some("exec: \"nope\": not found")
        );
        std::fs::write(&p, "{\"level\":\"info\",\"msg\":\"i\"}\n").unwrap();
        assert_eq!(runtime_error(&p), None);
    }

    /// Another child that ends while a run waits (the aufs driver's FUSE server, whose
    /// reaper thread waits for it) keeps its exit status for its owner. Before: the wait
    /// loop reaped any child (`waitpid(-1)`) and threw the other's status away, so its
    /// owner's wait failed with ECHILD.
    #[test]
    fn the_wait_reaps_only_the_container_process() {
        let mut other = Command::new("sh").args(["-c", "exit 5"]).spawn().unwrap();
        let mut ours = Command::new("sh")
            .args(["-c", "sleep 0.3; exit 3"])
            .spawn()
            .unwrap();
        // `other` is a zombie before the wait starts.
        std::thread::sleep(Duration::from_millis(100));
        let blocked = signals::block();
        let status = wait_forwarding(Pid::from_raw(ours.id() as i32), &blocked, &mut |_| false);
        drop(blocked);
        assert_eq!(status, Ok(3));
        // Reaped by the wait above: std's Child has nothing left to wait for.
        assert!(ours.try_wait().is_err());
        let st = other
            .wait()
            .expect("the other child's status is still ours to take");
        assert_eq!(st.code(), Some(5));
        // Not our child at all: an error, not a hang.
        let status = wait_forwarding(Pid::from_raw(1), &signals::block(), &mut |_| false);
        assert!(status.is_err(), "{status:?}");
    }

    #[test]
    fn exit_codes() {
        assert_eq!(RunError::Usage("x".into()).exit_code(), 2);
        assert_eq!(RunError::Exited(7).exit_code(), 7);
        assert_eq!(rt_err("runc", "x").exit_code(), EXIT_RUNTIME);
    }
}
