//! Reading members of image archives: a directory (OCI layout) or a tar file indexed
//! once (member name -> data offset via `raw_file_position()`), then read by seeking.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{IoCtx, Result, StoreError};

/// Largest JSON document (manifest, index, config) we read into memory.
pub(crate) const MAX_JSON: u64 = 16 << 20;

/// Where a regular file member's data lives in the tar.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Member {
    offset: u64,
    size: u64,
}

/// A source of named members.
#[derive(Debug)]
pub(crate) enum Archive {
    /// A directory.
    Dir(PathBuf),
    /// A tar file and its index.
    Tar {
        file: PathBuf,
        members: HashMap<String, Member>,
    },
}

/// Normalizes a member name: strips `./` and trailing `/`; refuses absolute names and `..`.
pub(crate) fn normalize(name: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(parts.join("/"))
}

/// Hops followed when a member is a link to a link.
const MAX_LINK_HOPS: usize = 8;

/// Resolves a symlink target found at member `name` to an archive path, refusing
/// anything that climbs above the archive root.
fn resolve_symlink(name: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    parts.pop(); // the link itself
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Indexes the regular-file members of the tar `file`, reading headers only. Members
/// that are hard or symbolic links to a regular member (legacy `docker save` links
/// duplicate `layer.tar`s) are indexed as that member.
pub(crate) fn index_tar(file: &Path) -> Result<HashMap<String, Member>> {
    let f = File::open(file).ctx("open", file)?;
    let mut a = tar::Archive::new(f);
    let mut members = HashMap::new();
    let mut links: Vec<(String, String)> = Vec::new();
    let bad = |e: std::io::Error| StoreError::Stream {
        what: format!("tar index of {}", file.display()),
        source: e,
    };
    for e in a.entries_with_seek().map_err(bad)? {
        let e = e.map_err(bad)?;
        let kind = e.header().entry_type();
        let path = e.path().map_err(bad)?;
        let Some(n) = path.to_str().and_then(normalize) else {
            continue;
        };
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                members.insert(
                    n,
                    Member {
                        offset: e.raw_file_position(),
                        size: e.size(),
                    },
                );
            }
            tar::EntryType::Link | tar::EntryType::Symlink => {
                let target = e.link_name().map_err(bad)?;
                let target = target
                    .as_deref()
                    .and_then(|t| t.to_str())
                    .map(str::to_owned);
                let resolved = match (kind, target) {
                    (tar::EntryType::Link, Some(t)) => normalize(&t),
                    (_, Some(t)) => resolve_symlink(&n, &t),
                    _ => None,
                };
                if let Some(r) = resolved {
                    links.push((n, r));
                }
            }
            _ => {}
        }
    }
    for _ in 0..MAX_LINK_HOPS {
        let mut progress = false;
        for (name, target) in &links {
            if !members.contains_key(name) {
                if let Some(m) = members.get(target).copied() {
                    members.insert(name.clone(), m);
                    progress = true;
                }
            }
        }
        if !progress {
            break;
        }
    }
    Ok(members)
}

/// Entries looked at by [`sniff`].
const SNIFF_ENTRIES: usize = 16;

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What the first entries of a tar say it is ([`sniff`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sniffed {
    /// A docker-save or OCI archive: one of its first entries is `manifest.json`,
    /// `oci-layout`, `index.json`, `repositories`, `blobs/sha256/..`, `<64 hex>/..` or
    /// `<64 hex>.json`.
    ImageArchive,
    /// An image archive tarred with its own top directory `X` (`tar -cf x.tar
    /// layout/`): every one of its first entries is below one `X/`, and `X/oci-layout`
    /// or `X/manifest.json` is among them. Neither an image archive (whose members sit
    /// at the top) nor a root filesystem.
    NestedImageArchive(String),
    /// Anything else (a root filesystem), or a tar whose first entries cannot be read
    /// (the import that follows reports the tar's own error).
    Other,
}

/// Reads the names of the first entries of tar `file` (plain or compressed) and says
/// what it is, stopping at the first telling name (so big members are not
/// decompressed).
pub(crate) fn sniff(file: &Path) -> Sniffed {
    let Ok(f) = File::open(file) else {
        return Sniffed::Other;
    };
    let Ok((_, d)) = super::decompress::decoder(std::io::BufReader::new(f)) else {
        return Sniffed::Other;
    };
    let mut a = tar::Archive::new(d);
    let Ok(entries) = a.entries() else {
        return Sniffed::Other;
    };
    // The one top directory of every name so far (None once two differ or a name is
    // unreadable), and whether an image-archive member stands right below it.
    let mut top: Option<Option<String>> = None;
    let mut nested_marker = false;
    for e in entries.take(SNIFF_ENTRIES) {
        let Ok(e) = e else {
            return Sniffed::Other;
        };
        let Some(name) = e.path().ok().and_then(|p| p.to_str().and_then(normalize)) else {
            top = Some(None);
            continue;
        };
        let first = name.split('/').next().unwrap_or("");
        if matches!(
            name.as_str(),
            "manifest.json" | "oci-layout" | "index.json" | "repositories"
        ) || name.starts_with("blobs/sha256/")
            || name == "blobs"
            || is_hex64(first)
            || first.strip_suffix(".json").is_some_and(is_hex64)
        {
            return Sniffed::ImageArchive;
        }
        let rest = name.split_once('/').map_or("", |(_, r)| r);
        match &top {
            None => top = Some(Some(first.to_owned())),
            Some(Some(t)) if t != first => top = Some(None),
            _ => {}
        }
        nested_marker |= matches!(rest, "oci-layout" | "manifest.json");
    }
    match top {
        Some(Some(dir)) if nested_marker => Sniffed::NestedImageArchive(dir),
        _ => Sniffed::Other,
    }
}

impl Archive {
    /// The file or directory, for messages.
    pub(crate) fn path(&self) -> &Path {
        match self {
            Archive::Dir(p) => p,
            Archive::Tar { file, .. } => file,
        }
    }

    /// Whether member `name` is there (any file type; [`Self::open`] says what is wrong
    /// with it).
    pub(crate) fn has(&self, name: &str) -> bool {
        let Some(n) = normalize(name) else {
            return false;
        };
        match self {
            Archive::Dir(d) => d.join(&n).symlink_metadata().is_ok(),
            Archive::Tar { members, .. } => members.contains_key(&n),
        }
    }

    /// Opens member `name` and returns a reader of exactly its bytes and its size.
    pub(crate) fn open(&self, name: &str) -> Result<(Box<dyn Read>, u64)> {
        let missing = || StoreError::BadArchive {
            file: self.path().to_owned(),
            reason: format!("member {name:?} is missing or not a safe relative path"),
        };
        let n = normalize(name).ok_or_else(missing)?;
        match self {
            Archive::Dir(d) => {
                let p = d.join(&n);
                // Symlinked blobs are fine (a shared blob cache), but only to a regular
                // file: a layer blob that is /dev/zero read zeros until the size limit
                // (64 GiB by default) at full CPU, and a FIFO blocked the open forever.
                // O_NONBLOCK only keeps the open of a FIFO from blocking; it does
                // nothing to a regular file's reads.
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&p)
                    .map_err(|_| missing())?;
                let meta = f.metadata().ctx("stat", &p)?;
                if !meta.is_file() {
                    return Err(StoreError::BadArchive {
                        file: self.path().to_owned(),
                        reason: format!("member {name:?} is not a regular file"),
                    });
                }
                Ok((Box::new(f), meta.len()))
            }
            Archive::Tar { file, members } => {
                let m = members.get(&n).ok_or_else(missing)?;
                let mut f = File::open(file).ctx("open", file)?;
                f.seek(SeekFrom::Start(m.offset)).ctx("seek", file)?;
                Ok((Box::new(f.take(m.size)), m.size))
            }
        }
    }

    /// Reads a small member (JSON) whole.
    pub(crate) fn read_small(&self, name: &str) -> Result<Vec<u8>> {
        let (r, size) = self.open(name)?;
        if size > MAX_JSON {
            return Err(StoreError::BadArchive {
                file: self.path().to_owned(),
                reason: format!("member {name:?} is {size} bytes, more than {MAX_JSON} allowed"),
            });
        }
        let mut buf = Vec::with_capacity(size as usize);
        r.take(MAX_JSON)
            .read_to_end(&mut buf)
            .map_err(|e| StoreError::Stream {
                what: format!("{name} in {}", self.path().display()),
                source: e,
            })?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_symlinks_inside_the_archive() {
        assert_eq!(
            resolve_symlink("b/layer.tar", "../a/layer.tar").as_deref(),
            Some("a/layer.tar")
        );
        assert_eq!(resolve_symlink("b/x", "y").as_deref(), Some("b/y"));
        assert_eq!(resolve_symlink("b/x", "../../etc/passwd"), None);
        assert_eq!(resolve_symlink("b/x", "/etc/passwd"), None);
    }

    #[test]
    fn indexes_links_as_their_targets() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "a/layer.tar", &b"abc"[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "b/layer.tar", "../a/layer.tar")
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        h.set_mode(0o644);
        b.append_link(&mut h, "c/layer.tar", "b/layer.tar").unwrap();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.tar");
        std::fs::write(&p, b.into_inner().unwrap()).unwrap();
        let a = Archive::Tar {
            members: index_tar(&p).unwrap(),
            file: p,
        };
        for n in ["a/layer.tar", "b/layer.tar", "c/layer.tar"] {
            assert_eq!(a.read_small(n).unwrap(), b"abc", "{n}");
        }
    }

    /// A layout directory's blob may be a symlink to a regular file, never to a device
    /// or a FIFO: /dev/zero streamed zeros into the import until the size limit.
    #[test]
    fn directory_members_must_be_regular_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("real"), b"abc").unwrap();
        std::os::unix::fs::symlink(d.path().join("real"), d.path().join("linked")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.path().join("zero")).unwrap();
        nix::unistd::mkfifo(&d.path().join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::fs::create_dir(d.path().join("dir")).unwrap();
        let a = Archive::Dir(d.path().to_owned());
        assert_eq!(a.read_small("linked").unwrap(), b"abc");
        for bad in ["zero", "fifo", "dir"] {
            match a.open(bad) {
                Err(StoreError::BadArchive { reason, .. }) => {
                    assert!(reason.contains("not a regular file"), "{bad}: {reason}")
                }
                Err(e) => panic!("{bad}: {e}"),
                Ok(_) => panic!("{bad}: opened"),
            }
        }
    }

    #[test]
    fn normalizes_names() {
        assert_eq!(normalize("./a/b/").as_deref(), Some("a/b"));
        assert_eq!(normalize("manifest.json").as_deref(), Some("manifest.json"));
        assert_eq!(normalize("../x"), None);
        assert_eq!(normalize("/etc/passwd"), None);
        assert_eq!(normalize("a/../../b"), None);
        assert_eq!(normalize("."), None);
    }
}
