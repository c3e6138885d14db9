//! Counted mounts: the kernel backend mounts its plan; the userspace backend starts a
//! server process per mounted layer and stops it on the last unmount. Dead userspace
//! mounts (server gone, "Transport endpoint is not connected") are detected and
//! detached by the next mount, unmount or cleanup.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use driver_core::error::{DriverError, IoContext, Result};
use driver_core::fsutil::write_atomic;
use driver_core::mountinfo::{mount_root_state, MountRootState};
use driver_core::refcount::{Liveness, RefsGuard};
use driver_core::{Driver, LayerId, MountOpts};
use nix::mount::{umount2, MntFlags};

use crate::server::ServeArgs;
use crate::{AufsDriver, Backend};

/// How long an unmounted server may take to exit before it is killed.
const SERVER_EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts of an unmount that meets EBUSY (10 ms apart).
const UMOUNT_BUSY_RETRIES: u32 = 50;

/// What the kernel says about a mount point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Nothing mounted there.
    None,
    /// Mounted and answering.
    Live,
    /// Mounted, but its FUSE server is gone.
    Dead,
}

/// The stored count of `id` mounted at `mnt` in state `st`: the count file only while
/// the mount is there and answering (a dead server's mount counts 0 until detached).
fn count(g: &RefsGuard<'_>, id: &LayerId, mnt: &Path, st: State) -> Result<u32> {
    match st {
        State::Live => g.get(id, Liveness::KernelMount(mnt)),
        State::None | State::Dead => Ok(0),
    }
}

/// Whether `mnt` is mounted, and whether it answers. Asked of the path itself (statx
/// `STATX_ATTR_MOUNT_ROOT`, then `statfs` of a mount root; O(1)), never of the whole
/// mount table: every `mount`, `unmount`, `remove` and store open asks this, and a
/// busy host's `/proc/self/mountinfo` is thousands of lines. A statx failing with
/// `ENOTCONN`/`ECONNABORTED` is a mount whose server is gone ([`State::Dead`]), not an
/// I/O error.
pub(crate) fn state(mnt: &Path) -> Result<State> {
    match mount_root_state(mnt)? {
        MountRootState::NotMounted => return Ok(State::None),
        MountRootState::Disconnected => return Ok(State::Dead),
        MountRootState::Mounted => {}
    }
    // statfs always reaches the server (stat may be answered from the kernel's
    // attribute cache, which outlives the server).
    match nix::sys::statfs::statfs(mnt).map_err(|e| std::io::Error::from_raw_os_error(e as i32)) {
        Ok(_) => Ok(State::Live),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)
            ) =>
        {
            Ok(State::Dead)
        }
        Err(e) => Err(DriverError::io("stat mount point", mnt, e)),
    }
}

/// The server pid recorded for `id`, if it still runs and still serves `mnt` (a reused
/// pid serving something else is not ours).
fn server_pid(d: &AufsDriver, id: &LayerId) -> Option<i32> {
    let pid: i32 = fs::read_to_string(d.layout.pid_file(id))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": the state follows the last ')'.
    let st = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
    if st == 'Z' || st == 'X' {
        return None;
    }
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mnt = d.layout.mnt(id);
    let want = mnt.as_os_str().as_encoded_bytes();
    cmdline.split(|b| *b == 0).any(|a| a == want).then_some(pid)
}

fn remove_pid_file(d: &AufsDriver, id: &LayerId) {
    let p = d.layout.pid_file(id);
    if let Err(e) = fs::remove_file(&p) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %p.display(), error = %e, "removing server pid file");
        }
    }
}

/// Waits for the server of `id` to exit (it does once its mount is gone); kills it
/// after [`SERVER_EXIT_TIMEOUT`].
fn wait_server_exit(d: &AufsDriver, id: &LayerId) {
    let start = Instant::now();
    while let Some(pid) = server_pid(d, id) {
        if start.elapsed() > SERVER_EXIT_TIMEOUT {
            tracing::warn!(%id, pid, "aufs server did not exit after unmount; killing it");
            if let Err(e) = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            ) {
                tracing::warn!(%id, pid, error = %e, "killing aufs server");
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    remove_pid_file(d, id);
}

/// Detaches a dead mount of `id` and stops whatever is left of its server.
fn detach(d: &AufsDriver, id: &LayerId) -> Result<()> {
    let mnt = d.layout.mnt(id);
    tracing::warn!(%id, mnt = %mnt.display(), "detaching dead aufs mount (its server is gone)");
    umount2(&mnt, MntFlags::MNT_DETACH).map_err(|e| DriverError::Unmount {
        target: mnt.clone(),
        source: std::io::Error::from_raw_os_error(e as i32),
    })?;
    if let Some(pid) = server_pid(d, id) {
        if let Err(e) = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        ) {
            tracing::warn!(%id, pid, error = %e, "killing hung aufs server");
        }
    }
    // A server killed mid copy-up left its temp in the branch.
    crate::create::sweep_copyup_temps(&d.layout, id)?;
    remove_pid_file(d, id);
    Ok(())
}

/// Starts the userspace server for `id` and waits until its mount answers.
fn start_server(d: &AufsDriver, id: &LayerId, cmd: &crate::options::ServerCommand) -> Result<()> {
    let mnt = d.layout.mnt(id);
    let args = ServeArgs {
        mountpoint: mnt.clone(),
        branches: d.stack(id)?.branches().to_vec(),
        threads: d.opts.threads,
        passthrough: d.opts.passthrough,
    };
    let log_path = d.layout.log_file(id);
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .ctx("open server log", &log_path)?;
    let mut c = Command::new(&cmd.program);
    c.args(&cmd.args)
        .args(args.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    // Its own process group: a Ctrl-C meant for `layerctl` does not kill the mount.
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    let mut child = c.spawn().ctx("start aufs server", &cmd.program)?;
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let read = out.read_line(&mut line);
    if read.is_err() || line.trim() != "ready" {
        let status = child.wait();
        let mut tail = String::new();
        if let Ok(mut f) = fs::File::open(&log_path) {
            let _ = f.read_to_string(&mut tail);
        }
        let tail: String = tail.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
        return Err(DriverError::Mount {
            target: mnt,
            fstype: "fuse.aufs".into(),
            source: std::io::Error::other(format!(
                "server {} exited ({status:?}) before it was ready: {tail}",
                cmd.program.display()
            )),
        });
    }
    let pid = child.id();
    if state(&mnt)? != State::Live {
        // Never leave the server and its mount behind: the kernel finds the mount by
        // the path we gave the server, whatever mountinfo calls it.
        if let Err(e) = umount2(&mnt, MntFlags::MNT_DETACH) {
            tracing::warn!(mnt = %mnt.display(), error = %e, "detaching a mount that does not answer");
        }
        if let Err(e) = child.kill() {
            tracing::warn!(pid, error = %e, "stopping an aufs server whose mount does not answer");
        }
        let _ = child.wait();
        return Err(DriverError::Mount {
            target: mnt,
            fstype: "fuse.aufs".into(),
            source: std::io::Error::other(
                "the server said ready but no live mount answers at this path (statx sees no \
                 mount root there, or statfs fails); the server was stopped",
            ),
        });
    }
    set_read_ahead(&mnt);
    // Reap it when it exits, so no zombie is left while this process lives on, and
    // say how it ended when that was not a clean exit.
    let served = mnt.clone();
    std::thread::spawn(move || match child.wait() {
        Ok(status) => match abnormal_exit(status) {
            Some(how) => tracing::warn!(
                pid,
                mnt = %served.display(),
                "aufs server {how} (its mount, if still there, no longer answers)"
            ),
            None => tracing::debug!(pid, mnt = %served.display(), "aufs server exited"),
        },
        Err(e) => {
            tracing::warn!(pid, mnt = %served.display(), error = %e, "waiting for the aufs server")
        }
    });
    write_atomic(&d.layout.pid_file(id), pid.to_string().as_bytes())?;
    tracing::debug!(%id, pid, "aufs server started");
    Ok(())
}

/// How a server's exit was not clean: `None` for exit status 0 (it exits so after its
/// mount is unmounted), else "exited with status N" or "was killed by signal N (NAME)".
fn abnormal_exit(status: std::process::ExitStatus) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = status.signal() {
        let name = nix::sys::signal::Signal::try_from(sig)
            .map(|s| s.as_str())
            .unwrap_or("unknown");
        let core = if status.core_dumped() {
            ", core dumped"
        } else {
            ""
        };
        return Some(format!("was killed by signal {sig} ({name}{core})"));
    }
    match status.code() {
        Some(0) => None,
        Some(n) => Some(format!("exited with status {n}")),
        None => Some(format!("ended ({status})")),
    }
}

/// Read-ahead of a userspace aufs mount, KiB: 4 MiB, written to the mount's
/// `/sys/class/bdi/<major>:<minor>/read_ahead_kb` once the mount answered (the INIT
/// reply has then set it: the kernel caps the server's `max_readahead` at the bdi's
/// default, 128 KiB, so only sysfs can raise it). Reads through FUSE's page cache
/// (every file with `passthrough = false`, files under 1 MiB with `true`) then ask the
/// server for up to `max_pages` (1 MiB) per READ instead of 128 KiB: a cold `cat` of a
/// 512 MiB file with `passthrough = false`, 7 alternating runs, median 228 ms at 128 KiB,
/// 201 ms at 4 MiB, kernel overlay 201 ms (BENCHMARKS.md, aufs, fourth session).
pub const READ_AHEAD_KB: u32 = 4096;

/// Sets [`READ_AHEAD_KB`] on the FUSE mount at `mnt`; a failure (no sysfs) is logged.
fn set_read_ahead(mnt: &Path) {
    let r = nix::sys::stat::stat(mnt)
        .map_err(std::io::Error::from)
        .and_then(|st| {
            let dev = st.st_dev;
            let p = format!(
                "/sys/class/bdi/{}:{}/read_ahead_kb",
                libc::major(dev),
                libc::minor(dev)
            );
            fs::write(&p, READ_AHEAD_KB.to_string())
        });
    if let Err(e) = r {
        tracing::info!(mnt = %mnt.display(), error = %e, "cannot set the mount's read-ahead");
    }
}

fn mount_kernel(d: &AufsDriver, id: &LayerId, opts: &MountOpts) -> Result<()> {
    let stack = d.stack(id)?;
    let (rw, ro) = stack
        .branches()
        .split_first()
        .expect("a stack has its own branch");
    let plan = crate::kernel::plan(&d.layout.mnt(id), rw, ro, opts.mount_label.as_deref())?;
    crate::kernel::execute(&plan)
}

pub(crate) fn mount(d: &AufsDriver, id: &LayerId, opts: &MountOpts) -> Result<PathBuf> {
    d.check_exists(id)?;
    if !opts.options.is_empty() {
        return Err(DriverError::InvalidOption {
            key: opts.options.join(","),
            reason: "aufs takes no extra mount options".into(),
        });
    }
    let mnt = d.layout.mnt(id);
    let g = d.refs.lock()?;
    let mut st = state(&mnt)?;
    if st == State::None && !mnt.is_dir() {
        fs::create_dir_all(&mnt).ctx("create mount point", &mnt)?;
    }
    if st == State::Dead {
        detach(d, id)?;
        g.set(id, 0)?;
        st = State::None;
    }
    let n = count(&g, id, &mnt, st)?;
    if n == 0 {
        match &d.backend {
            Backend::Kernel => mount_kernel(d, id, opts)?,
            Backend::Userspace(cmd) => {
                if opts.mount_label.is_some() {
                    return Err(DriverError::InvalidOption {
                        key: "mount_label".into(),
                        reason: "the userspace aufs takes no SELinux context".into(),
                    });
                }
                if d.layout.pid_file(id).exists() {
                    // The last server of this layer never unmounted (killed, machine
                    // crashed): sweep the copy-up temps it may have left.
                    crate::create::sweep_copyup_temps(&d.layout, id)?;
                    remove_pid_file(d, id);
                }
                start_server(d, id, cmd)?
            }
        }
    }
    g.set(id, n + 1)?;
    Ok(mnt)
}

pub(crate) fn unmount(d: &AufsDriver, id: &LayerId) -> Result<()> {
    d.check_exists(id)?;
    let mnt = d.layout.mnt(id);
    let g = d.refs.lock()?;
    let st = state(&mnt)?;
    if st == State::Dead {
        detach(d, id)?;
        return g.set(id, 0);
    }
    let n = count(&g, id, &mnt, st)?;
    if n == 0 {
        tracing::debug!(%id, "unmount of a layer that is not mounted");
        return Ok(());
    }
    if n > 1 {
        return g.set(id, n - 1);
    }
    // A fork in this process (another thread starting a server) briefly holds copies
    // of its open files until exec closes them: retry a short EBUSY.
    let mut tries = 0;
    let r = loop {
        match umount2(&mnt, MntFlags::empty()) {
            Err(nix::errno::Errno::EBUSY) if tries < UMOUNT_BUSY_RETRIES => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            r => break r,
        }
    };
    r.map_err(|e| match e {
        nix::errno::Errno::EBUSY => DriverError::Busy {
            id: id.to_string(),
            reason: format!("{} is in use", mnt.display()),
        },
        e => DriverError::Unmount {
            target: mnt.clone(),
            source: std::io::Error::from_raw_os_error(e as i32),
        },
    })?;
    if let Backend::Userspace(_) = d.backend {
        wait_server_exit(d, id);
    }
    g.set(id, 0)
}

pub(crate) fn mount_count(d: &AufsDriver, id: &LayerId) -> Result<u32> {
    d.check_exists(id)?;
    let g = d.refs.lock()?;
    let mnt = d.layout.mnt(id);
    count(&g, id, &mnt, state(&mnt)?)
}

/// Detaches `id`'s mount if its server is gone (and resets its count).
pub(crate) fn detach_if_dead(d: &AufsDriver, id: &LayerId) -> Result<()> {
    let g = d.refs.lock()?;
    if state(&d.layout.mnt(id))? == State::Dead {
        detach(d, id)?;
        g.set(id, 0)?;
    }
    Ok(())
}

/// Detaches every dead mount below `mnt/` and resets its count.
pub(crate) fn detach_dead_mounts(d: &AufsDriver) -> Result<()> {
    let root = d.layout.mnt_root();
    for e in fs::read_dir(&root).ctx("read directory", &root)? {
        let e = e.ctx("read directory", &root)?;
        let Ok(id) = LayerId::new(e.file_name().to_string_lossy().as_ref()) else {
            continue;
        };
        if state(&e.path())? == State::Dead {
            let g = d.refs.lock()?;
            detach(d, &id)?;
            g.set(&id, 0)?;
        }
    }
    Ok(())
}

/// [`Driver::crash_mount`] for aufs: the userspace backend's server is killed
/// (SIGKILL) and this waits until its mount answers ENOTCONN; the kernel backend's
/// mount is detached lazily, as the trait's default does. Counts are left as they are.
pub(crate) fn crash(d: &AufsDriver, id: &LayerId, mnt: &Path) -> Result<bool> {
    let Backend::Userspace(_) = d.backend else {
        return driver_core::driver::crash_mount_by_detach(id, mnt);
    };
    if state(mnt)? != State::Live {
        return Ok(false);
    }
    let Some(pid) = server_pid(d, id) else {
        return Ok(false);
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .map_err(|e| DriverError::io("kill aufs server", mnt, std::io::Error::from(e)))?;
    let start = Instant::now();
    while state(mnt)? != State::Dead {
        if start.elapsed() > SERVER_EXIT_TIMEOUT {
            return Err(DriverError::io(
                "wait for the killed aufs server's mount to die",
                mnt,
                std::io::Error::from(std::io::ErrorKind::TimedOut),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    tracing::warn!(%id, pid, "crash_mount: aufs server killed");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_server_exit_is_abnormal_unless_status_zero() {
        // Raw wait statuses: exit code N is N << 8, death by signal S is S.
        let st = std::process::ExitStatus::from_raw;
        assert_eq!(abnormal_exit(st(0)), None);
        assert_eq!(
            abnormal_exit(st(1 << 8)).as_deref(),
            Some("exited with status 1")
        );
        assert_eq!(
            abnormal_exit(st(9)).as_deref(),
            Some("was killed by signal 9 (SIGKILL)")
        );
        assert_eq!(
            abnormal_exit(st(11 | 0x80)).as_deref(),
            Some("was killed by signal 11 (SIGSEGV, core dumped)")
        );
    }

    #[test]
    fn a_killed_server_is_reported_by_the_reaper() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        child.kill().unwrap();
        let st = child.wait().unwrap();
        assert_eq!(
            abnormal_exit(st).as_deref(),
            Some("was killed by signal 9 (SIGKILL)")
        );
        let ok = Command::new("true").status().unwrap();
        assert_eq!(abnormal_exit(ok), None);
    }
}
