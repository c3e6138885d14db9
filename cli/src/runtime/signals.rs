//! Signals during a run: none may kill `layerctl` half way (that would leave the root
//! mounted and a half container); they go to the container process instead.
//!
//! [`install`] (at the start of a run) gives SIGINT, SIGTERM, SIGHUP and SIGQUIT a
//! handler that only records them; a handler (unlike an ignored disposition) is reset
//! by `execve`, so the runtime and the container start with default dispositions.
//! [`block`] (around the wait) blocks them and SIGCHLD in this thread; the caller then
//! forwards what [`take_pending`] and [`Blocked::signalfd`] give. A thread that does
//! not block them (made before the run) may take one: the handler records it there.

use std::sync::atomic::{AtomicU32, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// Signals a run forwards to the container process.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Bit `n` set: signal `n` arrived while only the recording handler was installed.
static PENDING: AtomicU32 = AtomicU32::new(0);

extern "C" fn record(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    if (0..32).contains(&sig) {
        PENDING.fetch_or(1 << sig, Ordering::SeqCst);
    }
}

/// Installs the recording handler for [`FORWARDED`] signals (process-wide, for the
/// rest of the run). Errors are logged: a failure only means default behaviour.
pub fn install() {
    let act = SigAction::new(
        SigHandler::Handler(record),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for &sig in FORWARDED {
        // SAFETY: `record` only does an atomic fetch_or on a static, which is
        // async-signal-safe; no other code of ours installs a handler for these signals.
        #[allow(unsafe_code)]
        let r = unsafe { sigaction(sig, &act) };
        if let Err(e) = r {
            tracing::warn!(?sig, error = %e, "cannot install signal handler");
        }
    }
}

/// Takes the signals recorded by the handler so far, in signal number order.
pub fn take_pending() -> Vec<Signal> {
    let bits = PENDING.swap(0, Ordering::SeqCst);
    FORWARDED
        .iter()
        .copied()
        .filter(|s| bits & (1 << (*s as i32)) != 0)
        .collect()
}

/// [`FORWARDED`] and SIGCHLD blocked in this thread until dropped.
#[derive(Debug)]
pub struct Blocked {
    set: SigSet,
}

/// Blocks [`FORWARDED`] and SIGCHLD in the calling thread. Processes started while
/// they are blocked inherit the mask (a runtime binary spawned with
/// `std::process::Command` did: runc then kept SIGUSR1/SIGUSR2/SIGWINCH blocked for the
/// container; libcontainer's clone too), so block only after the runtime is started.
pub fn block() -> Blocked {
    let mut set = SigSet::empty();
    for &s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    if let Err(e) = set.thread_block() {
        tracing::warn!(error = %e, "cannot block signals");
    }
    Blocked { set }
}

impl Blocked {
    /// A non-blocking signalfd of the blocked signals (readable when one is pending
    /// for this thread or the process).
    pub fn signalfd(&self) -> nix::Result<SignalFd> {
        SignalFd::with_flags(&self.set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        if let Err(e) = self.set.thread_unblock() {
            tracing::warn!(error = %e, "cannot unblock signals");
        }
    }
}
