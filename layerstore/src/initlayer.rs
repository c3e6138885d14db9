//! The init layer of a container (`<mount-id>-init`), Docker's recipe: the files and
//! directories a container runtime expects to find, hidden from the container's diff.
//!
//! It is built as a small tar in memory and applied with [`driver_core::Driver::apply_diff`],
//! so it works the same on every driver. Directories that exist in the image (looked up
//! through the driver's [`LayerStack`], so a directory an upper layer deleted does not
//! count) get no entry: the image's directory stays as it is, xattrs included, whatever
//! the driver; missing ones are created `0755 root:root`.
//!
//! Content (exact):
//! ```text
//! /dev/ /dev/pts/ /dev/shm/ /proc/ /sys/ /etc/     directories
//! /etc/hosts        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t<host>\n"
//! /etc/hostname     "<host>\n"
//! /etc/resolv.conf  copy of the host's /etc/resolv.conf (empty when the host has none)
//! /etc/mtab         symlink -> /proc/mounts
//! /dev/console      empty file
//! ```
//! All files are `0644 root:root`; entries it creates have mtime 0 (the epoch), so the
//! init layer is identical on every driver and every run. `<host>` is the hostname given
//! at create time (`layerctl run --hostname`, checked by [`validate_hostname`]), else the
//! container name. These files live in the init layer, below the rw layer, so they never
//! enter `diff` or `commit`; a runtime that bind-mounts its own over them changes nothing
//! on disk.

use std::path::{Path, PathBuf};

use driver_core::LayerStack;

use crate::error::{IoCtx, Result, StoreError};
use crate::ids::ContainerName;

/// Directories of the init layer, parents first.
pub const INIT_DIRS: &[&str] = &["dev", "dev/pts", "dev/shm", "proc", "sys", "etc"];

/// mtime of the entries the init layer creates (the epoch): deterministic content.
pub const INIT_MTIME: u64 = 0;

/// The host file copied to `/etc/resolv.conf`.
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// Longest hostname: `HOST_NAME_MAX` of Linux (64 bytes with the NUL; sethostname(2)).
pub const HOSTNAME_MAX: usize = 64;

/// `/etc/hosts` of a container called `name`.
pub fn hosts_content(name: &ContainerName) -> String {
    hosts_for(name.as_str())
}

/// `/etc/hosts` of a container whose hostname is `host`.
pub fn hosts_for(host: &str) -> String {
    format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{host}\n")
}

/// Checks a hostname: 1..=[`HOSTNAME_MAX`] bytes of dot-separated labels of ASCII
/// letters, digits and `-`, no label empty or starting or ending with `-` (RFC 1123).
/// Errors: [`StoreError::InvalidId`] (kind `hostname`, exit 5 in the CLI).
pub fn validate_hostname(host: &str) -> Result<()> {
    let bad = |reason| {
        Err(StoreError::InvalidId {
            kind: "hostname",
            value: host.to_owned(),
            reason,
        })
    };
    if host.is_empty() || host.len() > HOSTNAME_MAX {
        return bad("must be 1 to 64 bytes");
    }
    for label in host.split('.') {
        if label.is_empty() || label.starts_with('-') || label.ends_with('-') {
            return bad("empty label or a label starting or ending with '-'");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return bad("only ASCII letters, digits, '-' and '.'");
        }
    }
    Ok(())
}

/// Whether the image's root (the driver's [`LayerStack`] of its top layer, whiteouts
/// and opaque directories honoured) has a directory at `rel`. A symlink among the
/// parents is not looked through (the image is untrusted): the path then does not
/// count as an image directory.
pub(crate) fn image_has_dir(image: &LayerStack, rel: &str) -> Result<bool> {
    Ok(image.lookup(Path::new(rel))?.is_some_and(|f| f.is_dir()))
}

/// Builds the init layer tar for container `name`. `image` is the image's root as the
/// driver stacks it ([`driver_core::Driver::stack`] of its top layer; `None` for an
/// image without layers), for the attributes of existing directories.
pub fn build_init_tar(name: &ContainerName, image: Option<&LayerStack>) -> Result<Vec<u8>> {
    build_init_tar_with(name.as_str(), image, Path::new(HOST_RESOLV_CONF))
}

/// [`build_init_tar`] with the hostname `host` (already validated) in `/etc/hostname`
/// and `/etc/hosts` instead of the container name.
pub fn build_init_tar_for_host(host: &str, image: Option<&LayerStack>) -> Result<Vec<u8>> {
    build_init_tar_with(host, image, Path::new(HOST_RESOLV_CONF))
}

pub(crate) fn build_init_tar_with(
    name: &str,
    image: Option<&LayerStack>,
    resolv_conf: &Path,
) -> Result<Vec<u8>> {
    // A fixed time, so the init layer is the same on every driver and every run.
    let now = INIT_MTIME;
    let resolv = match std::fs::read(resolv_conf) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).ctx("read", resolv_conf),
    };
    let mut b = tar::Builder::new(Vec::new());
    let out = PathBuf::from("init layer");
    for dir in INIT_DIRS {
        let found = match image {
            Some(stack) => image_has_dir(stack, dir)?,
            None => false,
        };
        if found {
            // The image has it: no entry, so every driver keeps the image's directory
            // as it is (mode, owner, xattrs, times; driver_core::apply's union rules).
            continue;
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(now);
        h.set_size(0);
        b.append_data(&mut h, format!("{dir}/"), std::io::empty())
            .ctx("build init tar", &out)?;
    }
    let hostname = format!("{name}\n");
    let hosts = hosts_for(name);
    let files: [(&str, &[u8]); 4] = [
        ("etc/hosts", hosts.as_bytes()),
        ("etc/hostname", hostname.as_bytes()),
        ("etc/resolv.conf", &resolv),
        ("dev/console", b""),
    ];
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(now);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data)
            .ctx("build init tar", &out)?;
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(now);
    h.set_size(0);
    b.append_link(&mut h, "etc/mtab", "/proc/mounts")
        .ctx("build init tar", &out)?;
    b.into_inner().ctx("build init tar", &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_tar_lists_the_recipe() {
        let d = tempfile::tempdir().unwrap();
        let layer = d.path().join("layer");
        std::fs::create_dir_all(layer.join("proc")).unwrap();
        std::fs::set_permissions(
            layer.join("proc"),
            std::os::unix::fs::PermissionsExt::from_mode(0o555),
        )
        .unwrap();
        let name = ContainerName::new("web1").unwrap();
        let stack = LayerStack::new(vec![layer], driver_core::WhiteoutFormat::Delete);
        let tar =
            build_init_tar_with(name.as_str(), Some(&stack), &d.path().join("missing")).unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let mut seen = Vec::new();
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            if p == "dev/" {
                assert_eq!(e.header().mode().unwrap(), 0o755, "a missing dir is 0755");
            }
            if p == "etc/mtab" {
                assert_eq!(
                    e.link_name().unwrap().unwrap().to_str(),
                    Some("/proc/mounts")
                );
            }
            seen.push(p);
        }
        for want in [
            "dev/",
            "dev/pts/",
            "dev/shm/",
            "sys/",
            "etc/",
            "etc/hosts",
            "etc/hostname",
            "etc/resolv.conf",
            "dev/console",
            "etc/mtab",
        ] {
            assert!(seen.iter().any(|s| s == want), "{want} in {seen:?}");
        }
        // The image's own /proc stays as it is: no entry for it.
        assert!(!seen.iter().any(|s| s == "proc/"), "{seen:?}");
        assert!(hosts_content(&name).ends_with("127.0.1.1\tweb1\n"));
        // A symlinked parent in the image is not looked through.
        let evil = d.path().join("evil");
        std::fs::create_dir_all(&evil).unwrap();
        std::os::unix::fs::symlink("/", evil.join("dev")).unwrap();
        let evil = LayerStack::new(vec![evil], driver_core::WhiteoutFormat::Delete);
        assert!(!image_has_dir(&evil, "dev/pts").unwrap());
    }
}

#[cfg(test)]
mod hostname_tests {
    use super::*;

    #[test]
    fn hostnames() {
        for ok in ["a", "web-1", "box.example.org", &"x".repeat(63)] {
            assert!(validate_hostname(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", "a b", "a/b", "ä", &"x".repeat(65)] {
            let e = validate_hostname(bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    StoreError::InvalidId {
                        kind: "hostname",
                        ..
                    }
                ),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn host_goes_into_hostname_and_hosts() {
        let d = tempfile::tempdir().unwrap();
        let tar = build_init_tar_with("box1", None, &d.path().join("missing")).unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let mut files = std::collections::BTreeMap::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            files.insert(p, s);
        }
        assert_eq!(files["etc/hostname"], "box1\n");
        assert!(files["etc/hosts"].ends_with("127.0.1.1\tbox1\n"));
    }
}
