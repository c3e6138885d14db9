//! `-t` with a runtime binary: `create --console-socket` + `start`, the pty relayed
//! by us ([`super::tty`]), as containerd's shim drives runc.
//!
//! `runc run` with `process.terminal` makes the pty and relays it itself, but sets the
//! pty's window size only after the process has started (runc 1.1 `signals.go`
//! `forward` calls `tty.resize()` once `run` returned), so a container that asks for
//! its size at once (`stty size`) may get 0x0. Here the size is set between `create`
//! (the init has made the pty and sent us its master; the process has not run yet)
//! and `start`:
//! 1. `RUNTIME create --bundle B --console-socket S --pid-file P ID`; we become the
//!    child subreaper first, so the container's init (runc create's child) is ours to
//!    wait for once `create` exits.
//! 2. The master from S; raw mode, relay and window size as for the in-process runtime.
//! 3. `RUNTIME start ID`; we wait for the init (pid from P), forwarding signals to it
//!    (as `runc run` does), SIGWINCH resizing the pty instead.
//! 4. `RUNTIME delete --force ID`.
//!
//! The runtime's own stderr (only its messages: the container's stdio is the pty) goes
//! to a file of the bundle; a failure is one line of ours, the log's error (else that
//! file's last line).

use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::{error_chain, rt_err, runtime_error, signals, tty, wait_forwarding, RunError};
use super::{forward, RELAY_DRAIN};

/// Runs bundle `bundle` (with `process.terminal`) as container `id` through a runtime
/// binary; `cmd()` is the runtime's command with its global flags (`--root`, `--log
/// LOG`). Returns the process's status, `128 + N` for signal N. Errors:
/// [`RunError::Runtime`] when create or start fails, or the pty cannot be set up; the
/// runtime's container is deleted in every case.
pub fn run(
    name: &str,
    cmd: &dyn Fn() -> Command,
    id: &str,
    bundle: &Path,
    log: &Path,
    state_root: &Path,
) -> Result<i32, RunError> {
    let errs = bundle.join("runtime.stderr");
    let stderr_file = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&errs)
            .map_err(|e| rt_err(name, format!("open {}: {e}", errs.display())))
    };
    let delete = || {
        let st = cmd()
            .args(["delete", "--force", id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        tracing::debug!(?st, id, "runtime delete");
    };
    // The runtime's failure: its log's error entry, else the last line it printed.
    let failure = |what: &str| {
        let msg = runtime_error(log).unwrap_or_else(|| {
            let text = std::fs::read_to_string(&errs).unwrap_or_default();
            let last = text.lines().rev().find(|l| !l.trim().is_empty());
            last.map_or_else(|| format!("{what} failed"), str::to_owned)
        });
        rt_err(name, msg)
    };
    // Short (a sockaddr_un path), unique to this run.
    let console =
        tty::ConsoleSocket::bind(state_root.join(format!("tty-{}.sock", std::process::id())))
            .map_err(|e| rt_err(name, error_chain(&e)))?;
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| rt_err(name, format!("become child subreaper: {e}")))?;
    let pid_file = bundle.join("init.pid");
    let created = cmd()
        .arg("create")
        .arg("--bundle")
        .arg(bundle)
        .arg("--console-socket")
        .arg(console.path())
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_file()?)
        .status()
        .map_err(|e| rt_err(name, format!("start {name} create: {e}")))?;
    if !created.success() {
        delete();
        return Err(failure("create"));
    }
    let master = console.receive_master();
    drop(console);
    let init = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|p| *p > 0)
        .map(Pid::from_raw);
    let (master, init) = match (master, init) {
        (Ok(m), Some(p)) => (m, p),
        (Err(e), _) => {
            delete();
            return Err(rt_err(name, error_chain(&e)));
        }
        (_, None) => {
            delete();
            return Err(rt_err(name, format!("no pid in {}", pid_file.display())));
        }
    };
    let blocked = signals::block();
    // Raw until `raw` drops: on every return below.
    let raw = match tty::RawMode::enter() {
        Ok(r) => r,
        Err(e) => {
            delete();
            return Err(rt_err(name, error_chain(&e)));
        }
    };
    let relay = match tty::Relay::start(master) {
        Ok(r) => r,
        Err(e) => {
            delete();
            return Err(rt_err(name, error_chain(&e)));
        }
    };
    let started = cmd()
        .args(["start", id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_file()?)
        .status();
    if !started.as_ref().is_ok_and(|s| s.success()) {
        // The init waits for start: it never ran; it goes with delete --force.
        forward(init, Signal::SIGKILL);
        delete();
        let _ = nix::sys::wait::waitpid(init, None);
        return Err(match started {
            Ok(_) => failure("start"),
            Err(e) => rt_err(name, format!("start {name} start: {e}")),
        });
    }
    let status = wait_forwarding(init, &blocked, &mut |sig| {
        if sig == Signal::SIGWINCH {
            relay.resize();
            true
        } else {
            false
        }
    });
    relay.finish(RELAY_DRAIN);
    drop(raw);
    drop(blocked);
    delete();
    status.map_err(|e| rt_err(name, e))
}
