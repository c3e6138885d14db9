//! A small disk that fills up: a tmpfs of a given size, for tests of ENOSPC paths.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `size` bytes mounted at `dir`, unmounted (lazily) on drop: a disk that
/// fills up.
#[derive(Debug)]
pub struct SmallDisk {
    /// The mount point.
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` bytes; panics when `mount` fails.
    pub fn mount(size: u64) -> SmallDisk {
        let tmp = tempfile::Builder::new()
            .prefix("layerctl-e2e-disk-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let dir = tmp.path().join("disk");
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount a tmpfs at {}", dir.display());
        SmallDisk { dir, _tmp: tmp }
    }

    /// Writes into `dir` (on this disk, or a mount whose writes land on it) until the
    /// disk is full (`ENOSPC`); returns the bytes written.
    pub fn fill(dir: &Path) -> u64 {
        let mut written = 0;
        for i in 0.. {
            let mut f = match std::fs::File::create(dir.join(format!("fill-{i}"))) {
                Ok(f) => f,
                Err(e) if e.raw_os_error() == Some(libc_enospc()) => return written,
                Err(e) => panic!("fill {}: {e}", dir.display()),
            };
            let chunk = vec![0x5a_u8; 256 << 10];
            loop {
                match f.write(&chunk) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) if e.raw_os_error() == Some(libc_enospc()) => {
                        let _ = f.sync_all();
                        if written > 0 {
                            return written;
                        }
                        break;
                    }
                    Err(e) => panic!("fill {}: {e}", dir.display()),
                }
            }
        }
        unreachable!()
    }
}

fn libc_enospc() -> i32 {
    nix::errno::Errno::ENOSPC as i32
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
