//! `-t` with the in-process runtime: the container gets a new pseudo-terminal, made in
//! its own devpts, as `runc run -t` and `docker run -t` give it; never the caller's
//! terminal (a process holding that one could push input into the caller's shell with
//! `TIOCSTI`).
//!
//! The OCI way (runtime-spec `process.terminal` with a console socket, as runc's
//! `tty.go` and youki's `tty.rs` do it):
//! 1. [`ConsoleSocket::bind`] listens on a unix socket; libcontainer is given its path
//!    (`ContainerBuilder::with_console_socket`) and connects to it while building;
//!    the container's init opens `/dev/pts/ptmx` after `pivot_root` and sends the
//!    master over it (`SCM_RIGHTS`) before the build returns;
//!    [`ConsoleSocket::receive_master`] takes it.
//! 2. [`RawMode::enter`] puts our terminal (stdin, when it is one) in raw mode, so keys
//!    (^C, ^Z, ^D) reach the container's terminal, whose line discipline acts on them;
//!    dropping it restores the saved mode (every exit path: errors, and the forwarded
//!    signals, which never kill us during a run).
//! 3. [`Relay::start`] copies stdin to the master and the master to stdout, each on a
//!    thread, and sets the master's window size from ours; [`Relay::resize`] does it
//!    again on SIGWINCH (the kernel then signals the container's foreground group).
//! 4. [`Relay::finish`] after the process ended: the rest of the output (up to the
//!    master's end, `EIO` once the container's last process closed the slave), then
//!    the input thread is stopped.

use std::io::{IoSliceMut, IsTerminal, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::sys::termios::{self, SetArg, Termios};

/// How long the console socket waits for the master once the build has returned (it
/// is sent before; this only bounds a runtime that broke that order).
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// How long stopping the input thread may take (it wakes at once unless it is stuck
/// in a write to the master).
const INPUT_STOP: Duration = Duration::from_secs(1);

/// A failure to set up or run the container's terminal.
#[derive(Debug, thiserror::Error)]
pub enum TtyError {
    /// The console socket failed.
    #[error("console socket {}: {op}: {source}", path.display())]
    Socket {
        /// What was done: bind, accept, receive.
        op: &'static str,
        /// The socket's path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The runtime sent no file descriptor.
    #[error("console socket {}: no pty master received", path.display())]
    NoMaster {
        /// The socket's path.
        path: PathBuf,
    },
    /// Our terminal or the relay failed.
    #[error("terminal: {op}: {source}")]
    Terminal {
        /// What was done.
        op: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn sock_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> TtyError + 'a {
    move |source| TtyError::Socket {
        op,
        path: path.to_owned(),
        source,
    }
}

fn term_err(op: &'static str) -> impl FnOnce(Errno) -> TtyError {
    move |e| TtyError::Terminal {
        op,
        source: e.into(),
    }
}

/// A listening console socket; its file is removed on drop.
#[derive(Debug)]
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    /// Listens at `path` (a stale file there is replaced). Errors: [`TtyError::Socket`]
    /// (`path` longer than a `sockaddr_un` holds, 107 bytes, is one).
    pub fn bind(path: PathBuf) -> Result<ConsoleSocket, TtyError> {
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(sock_err("bind", &path))?;
        // The runtime has connected before we accept (see the module doc): never wait.
        listener
            .set_nonblocking(true)
            .map_err(sock_err("bind", &path))?;
        Ok(ConsoleSocket { listener, path })
    }

    /// The socket's path, for `ContainerBuilder::with_console_socket`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts the runtime's connection and receives the pty master it sends. Call
    /// after the container was built. Errors: no connection, no message within
    /// [`RECV_TIMEOUT`], or a message without a descriptor.
    pub fn receive_master(&self) -> Result<OwnedFd, TtyError> {
        let path = &self.path;
        let (stream, _) = self.listener.accept().map_err(sock_err("accept", path))?;
        stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_read_timeout(Some(RECV_TIMEOUT)))
            .map_err(sock_err("accept", path))?;
        let mut name = [0u8; 256];
        let mut iov = [IoSliceMut::new(&mut name)];
        let mut space = nix::cmsg_space!([RawFd; 2]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| sock_err("receive", path)(e.into()))?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        for c in msg
            .cmsgs()
            .map_err(|e| sock_err("receive", path)(e.into()))?
        {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: `fd` was just installed in this process by recvmsg
                    // (SCM_RIGHTS); nothing else refers to it, so the OwnedFd is its only
                    // owner and closes it exactly once.
                    #[allow(unsafe_code)]
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        // One descriptor is sent; extra ones (none expected) close with `fds`.
        if fds.is_empty() {
            return Err(TtyError::NoMaster { path: path.clone() });
        }
        Ok(fds.swap_remove(0))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::debug!(path = %self.path.display(), error = %e, "console socket left");
        }
    }
}

/// Our terminal (stdin) in raw mode until dropped; the saved mode is then restored.
#[derive(Debug)]
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Raw mode on stdin when it is a terminal (`None` when it is not: nothing to do).
    /// The change applies at once (`TCSANOW`), so input typed ahead stays queued.
    pub fn enter() -> Result<Option<RawMode>, TtyError> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let saved = termios::tcgetattr(stdin.as_fd()).map_err(term_err("tcgetattr"))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .map_err(term_err("tcsetattr raw"))?;
        Ok(Some(RawMode { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        if let Err(e) = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &self.saved) {
            tracing::warn!(error = %e, "cannot restore the terminal's mode");
        }
    }
}

/// The copy between our stdio and the container's pty master.
#[derive(Debug)]
pub struct Relay {
    master: OwnedFd,
    /// Written (closed) to stop the input thread.
    stop: Option<OwnedFd>,
    input: Option<JoinHandle<()>>,
    output_done: mpsc::Receiver<()>,
}

impl Relay {
    /// Starts the two copying threads and sets the master's window size from ours.
    /// Start it with the forwarded signals blocked (the threads inherit the mask, so
    /// the signals stay for the waiting thread). Errors: a descriptor that cannot be
    /// duplicated, no pipe.
    pub fn start(master: OwnedFd) -> Result<Relay, TtyError> {
        let dup = |m: &OwnedFd| {
            m.try_clone().map_err(|source| TtyError::Terminal {
                op: "dup pty master",
                source,
            })
        };
        let (out_master, in_master) = (dup(&master)?, dup(&master)?);
        let (stop_r, stop_w) = nix::unistd::pipe().map_err(term_err("pipe"))?;
        let (done, output_done) = mpsc::channel();
        std::thread::spawn(move || {
            copy_output(out_master);
            let _ = done.send(());
        });
        let input = std::thread::spawn(move || copy_input(in_master, stop_r));
        let relay = Relay {
            master,
            stop: Some(stop_w),
            input: Some(input),
            output_done,
        };
        relay.resize();
        Ok(relay)
    }

    /// Sets the master's window size to our terminal's (stdin's, else stdout's); no
    /// terminal: nothing. Failures are logged.
    pub fn resize(&self) {
        let ws = rustix::termios::tcgetwinsize(std::io::stdin())
            .or_else(|_| rustix::termios::tcgetwinsize(std::io::stdout()));
        let Ok(ws) = ws else { return };
        if let Err(e) = rustix::termios::tcsetwinsize(&self.master, ws) {
            tracing::warn!(error = %e, "cannot set the container terminal's size");
        }
    }

    /// After the process ended: waits up to `drain` for the output to reach its end,
    /// then stops the input thread.
    pub fn finish(mut self, drain: Duration) {
        if self.output_done.recv_timeout(drain).is_err() {
            tracing::warn!("the container's terminal is still open after it exited");
        }
        self.stop_input();
    }

    fn stop_input(&mut self) {
        // Closing the pipe's write end wakes the input thread's poll. A thread stuck
        // writing to a master nobody reads is left behind (it ends with us), never
        // waited for.
        drop(self.stop.take());
        if let Some(h) = self.input.take() {
            let deadline = std::time::Instant::now() + INPUT_STOP;
            while !h.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if h.is_finished() {
                let _ = h.join();
            } else {
                tracing::debug!("the terminal input thread is still writing; left behind");
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop_input();
    }
}

/// Master -> stdout until the master's end (`EIO` when no slave is open) or an error.
fn copy_output(master: OwnedFd) {
    let mut buf = vec![0u8; 32 * 1024];
    let stdout = std::io::stdout();
    loop {
        let n = match nix::unistd::read(&master, &mut buf) {
            Ok(0) | Err(Errno::EIO) => return,
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "reading the container's terminal failed");
                return;
            }
        };
        let mut out = stdout.lock();
        if let Err(e) = out.write_all(&buf[..n]).and_then(|()| out.flush()) {
            tracing::warn!(error = %e, "writing the container's output failed");
            return;
        }
    }
}

/// Stdin -> master until stdin ends, `stop` becomes readable (closed), or an error.
fn copy_input(master: OwnedFd, stop: OwnedFd) {
    let mut buf = vec![0u8; 4096];
    let stdin = std::io::stdin();
    let stdin: BorrowedFd<'_> = stdin.as_fd();
    loop {
        let mut fds = [
            PollFd::new(stdin, PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "poll on stdin failed");
                return;
            }
        }
        if fds[1].any().unwrap_or(true) {
            return;
        }
        if !fds[0].any().unwrap_or(false) {
            continue;
        }
        let n = match nix::unistd::read(stdin, &mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(Errno::EINTR | Errno::EAGAIN) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "stdin ended");
                return;
            }
        };
        if let Err(e) = write_all(&master, &buf[..n]) {
            tracing::debug!(error = %e, "the container's terminal took no more input");
            return;
        }
    }
}

fn write_all(fd: &OwnedFd, mut bytes: &[u8]) -> nix::Result<()> {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
