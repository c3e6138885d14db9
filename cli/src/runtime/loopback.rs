//! Bringing `lo` up in a container's new network namespace.
//!
//! runc does it (its loopback "network strategy"); youki's libcontainer leaves the new
//! namespace's `lo` down, so the in-process runtime does it between `build` (the init
//! process exists, namespaces made, waiting for `start`) and `start`: a short-lived
//! thread of ours `setns`es into `/proc/<pid>/ns/net` (only that thread moves) and sets
//! IFF_UP on `lo` with SIOCGIFFLAGS / SIOCSIFFLAGS, as `ip link set lo up` does.

use std::os::fd::AsRawFd;

use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

/// Sets `lo` up in the network namespace of process `pid`. Errors: the failing step
/// and its errno, as text (the caller makes it a runtime error).
pub fn bring_up(pid: i32) -> Result<(), String> {
    let ns_path = format!("/proc/{pid}/ns/net");
    let ns = std::fs::File::open(&ns_path).map_err(|e| format!("open {ns_path}: {e}"))?;
    std::thread::spawn(move || -> Result<(), String> {
        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {ns_path}: {e}"))?;
        let sock = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| format!("socket: {e}"))?;
        // SAFETY: ifreq is plain old data (a name array and a union of integers and
        // sockaddrs), valid when zeroed; the ioctls read and write only that struct,
        // which lives for both calls; the fd is a socket we own.
        #[allow(unsafe_code)]
        unsafe {
            let mut ifr: libc::ifreq = std::mem::zeroed();
            for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
                *d = *s as libc::c_char;
            }
            if libc::ioctl(
                sock.as_raw_fd(),
                libc::SIOCGIFFLAGS,
                &mut ifr as *mut libc::ifreq,
            ) < 0
            {
                return Err(format!(
                    "SIOCGIFFLAGS lo: {}",
                    std::io::Error::last_os_error()
                ));
            }
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(
                sock.as_raw_fd(),
                libc::SIOCSIFFLAGS,
                &ifr as *const libc::ifreq,
            ) < 0
            {
                return Err(format!(
                    "SIOCSIFFLAGS lo: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        Ok(())
    })
    .join()
    .map_err(|_| "loopback thread panicked".to_owned())?
}
