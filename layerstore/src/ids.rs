//! Validated identifiers of the layer store. Strings travel only at the edges.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::error::StoreError;

/// Length of a sha256 digest in lowercase hex.
const HEX_LEN: usize = 64;

/// Longest container name: one path component, far from NAME_MAX.
pub const MAX_CONTAINER_NAME: usize = 128;

/// Longest image name (`registry/repo:tag`), as Docker's reference limit.
pub const MAX_IMAGE_NAME: usize = 255;

fn check_digest(kind: &'static str, s: &str) -> Result<String, StoreError> {
    let bad = |reason: &'static str| StoreError::InvalidId {
        kind,
        value: s.to_owned(),
        reason,
    };
    let hex = s
        .strip_prefix("sha256:")
        .ok_or_else(|| bad("must start with \"sha256:\""))?;
    if hex.len() != HEX_LEN {
        return Err(bad("must have 64 hex digits"));
    }
    if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad("only lowercase hex digits are allowed"));
    }
    Ok(s.to_owned())
}

macro_rules! digest_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates `s` as `sha256:<64 lowercase hex>`.
            pub fn new(s: &str) -> Result<Self, StoreError> {
                check_digest($kind, s).map($name)
            }

            /// Validates a bare 64-hex digest.
            pub fn from_hex(hex: &str) -> Result<Self, StoreError> {
                Self::new(&format!("sha256:{hex}"))
            }

            /// The id of a finished sha256 hash.
            pub fn from_sha256(h: Sha256) -> Self {
                $name(format!("sha256:{}", hex::encode(h.finalize())))
            }

            /// The sha256 of `data`.
            pub fn of_bytes(data: &[u8]) -> Self {
                Self::from_sha256(Sha256::new_with_prefix(data))
            }

            /// `sha256:<hex>`.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The 64 hex digits (used as directory names).
            pub fn hex(&self) -> &str {
                &self.0["sha256:".len()..]
            }

            /// The first 12 hex digits, as `docker images` shows them.
            pub fn short(&self) -> &str {
                &self.hex()[..12]
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = StoreError;
            fn from_str(s: &str) -> Result<Self, StoreError> {
                Self::new(s)
            }
        }
    };
}

digest_id!(
    /// sha256 of a layer's uncompressed tar.
    DiffId,
    "diff id"
);
digest_id!(
    /// Identity of a layer together with all its ancestors (OCI ChainID).
    ChainId,
    "chain id"
);
digest_id!(
    /// sha256 of an image's config JSON bytes.
    ImageId,
    "image id"
);

impl ChainId {
    /// ChainID of a base layer: its DiffID.
    pub fn base(diff: &DiffId) -> ChainId {
        ChainId(diff.0.clone())
    }

    /// ChainID of `diff` on top of `self`: `sha256(self + " " + diff)`.
    pub fn child(&self, diff: &DiffId) -> ChainId {
        ChainId::of_bytes(format!("{} {}", self.0, diff.0).as_bytes())
    }

    /// ChainID of `diff` on top of `parent` (base layer when `None`).
    pub fn of(parent: Option<&ChainId>, diff: &DiffId) -> ChainId {
        match parent {
            Some(p) => p.child(diff),
            None => ChainId::base(diff),
        }
    }

    /// The ChainIDs of every prefix of `diffs`, bottom to top.
    pub fn chain(diffs: &[DiffId]) -> Vec<ChainId> {
        let mut out: Vec<ChainId> = Vec::with_capacity(diffs.len());
        for d in diffs {
            let c = ChainId::of(out.last(), d);
            out.push(c);
        }
        out
    }
}

/// A container name: `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`, so one safe path component.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerName(String);

impl ContainerName {
    /// Validates `s`.
    pub fn new(s: &str) -> Result<Self, StoreError> {
        let bad = |reason: &'static str| StoreError::InvalidId {
            kind: "container name",
            value: s.to_owned(),
            reason,
        };
        let first = s.bytes().next().ok_or_else(|| bad("empty"))?;
        if !first.is_ascii_alphanumeric() {
            return Err(bad("must start with a letter or digit"));
        }
        if s.len() > MAX_CONTAINER_NAME {
            return Err(bad("longer than 128 bytes"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(bad("only letters, digits, '_', '.' and '-' are allowed"));
        }
        Ok(ContainerName(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ContainerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContainerName({})", self.0)
    }
}

impl FromStr for ContainerName {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        Self::new(s)
    }
}

/// Checks an image name (`busybox:latest`, `example.com/a/b:1`): printable ASCII, no
/// whitespace, at most [`MAX_IMAGE_NAME`] bytes, not a full image id (64 lowercase hex
/// digits, with or without `sha256:`; Docker's rule). Names are stored one per line.
pub fn validate_image_name(s: &str) -> Result<(), StoreError> {
    let bad = |reason: &'static str| StoreError::InvalidId {
        kind: "image name",
        value: s.to_owned(),
        reason,
    };
    if s.is_empty() {
        return Err(bad("empty"));
    }
    if s.len() > MAX_IMAGE_NAME {
        return Err(bad("longer than 255 bytes"));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("only printable ASCII without spaces is allowed"));
    }
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    if hex.len() == HEX_LEN && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        // Names are looked up before ids, so such a name would make `create`/`rmi`
        // of that id reach another image (Docker refuses these names too).
        return Err(bad(
            "a full image id (64 hex digits) cannot be a name: it would hide the image of that id",
        ));
    }
    Ok(())
}

/// Checks a name a user gives (`tag IMAGE NAME`, `import --name`, `commit --name`):
/// [`validate_image_name`], and Docker's reference grammar (distribution/reference,
/// `ParseNormalizedNamed`): `[DOMAIN[:PORT]/]PATH[:TAG][@ALGO:HEX]`, path components
/// lowercase `[a-z0-9]+` joined by `.`, `_`, `__` or `-`s; a tag `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
/// `save` writes names into `RepoTags` and `io.containerd.image.name`, where `docker
/// load` refuses a whole archive over one such name (`FOO`, `foo:`, `a/../b`).
/// Names read from an archive are kept as they are ([`validate_image_name`] only).
pub fn validate_new_image_name(s: &str) -> Result<(), StoreError> {
    validate_image_name(s)?;
    match docker_reference_error(s) {
        None => Ok(()),
        Some(reason) => Err(StoreError::InvalidId {
            kind: "image name",
            value: s.to_owned(),
            reason,
        }),
    }
}

/// An image name's parts, Docker's reading of `[DOMAIN[:PORT]/]PATH[:TAG][@DIGEST]`:
/// (repository, tag, digest). The digest follows the first `@`; the tag follows the
/// first `:` of the last path component (a port's `:` comes before a `/`).
/// `reg:5000/a/b:v1@sha256:..` -> (`reg:5000/a/b`, `v1`, `sha256:..`); `busybox` ->
/// (`busybox`, None, None).
pub(crate) fn split_reference(name: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match name.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (name, None),
    };
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[last_slash..].find(':') {
        Some(i) => (
            &rest[..last_slash + i],
            Some(&rest[last_slash + i + 1..]),
            digest,
        ),
        None => (rest, None, digest),
    }
}

/// Why `s` is not a Docker image reference, or None when it is one.
fn docker_reference_error(s: &str) -> Option<&'static str> {
    let (name, tag, digest) = split_reference(s);
    if let Some(d) = digest {
        let (algo, hex) = d.split_once(':').unwrap_or((d, ""));
        let algo_ok = !algo.is_empty()
            && algo.starts_with(|c: char| c.is_ascii_alphabetic())
            && algo
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'_' | b'-'));
        if !algo_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some("the digest must be ALGORITHM:HEX (at least 32 hex digits)");
        }
    }
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && !t.starts_with(['.', '-'])
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Some("a tag is 1 to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'");
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let first = parts[0];
    let is_domain = parts.len() > 1
        && (first.contains(['.', ':']) || first == "localhost" || first.to_lowercase() != first);
    if is_domain {
        let (host, port) = match first.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (first, None),
        };
        let host_ok = host.split('.').all(|c| {
            !c.is_empty()
                && !c.starts_with('-')
                && !c.ends_with('-')
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
        let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if !host_ok || !port_ok {
            return Some("the registry must be HOST[:PORT]");
        }
        parts.remove(0);
    }
    for c in parts {
        if !path_component_ok(c) {
            return Some(
                "each path component is lowercase letters and digits, joined by '.', '_', '__' or '-'",
            );
        }
    }
    None
}

/// Docker's path component: `[a-z0-9]+` runs joined by `.`, `_`, `__` or one or more `-`.
fn path_component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// The form two image names are compared in, Docker's normalized reference: a name
/// without a tag or digest means `NAME:latest` (`busybox` and `busybox:latest` are one
/// name; the port of `localhost:5000/x` is not a tag), and a name without a registry
/// is on Docker Hub (`busybox` is `docker.io/library/busybox`, `me/app` is
/// `docker.io/me/app`; `index.docker.io/` is `docker.io/`), as skopeo's docker-archive
/// `RepoTags` and containerd's `io.containerd.image.name` spell them.
pub fn canonical_image_name(s: &str) -> std::borrow::Cow<'_, str> {
    let mut out = std::borrow::Cow::Borrowed(s);
    let first = s.split('/').next().unwrap_or(s);
    let has_registry = s.contains('/') && (first.contains(['.', ':']) || first == "localhost");
    if let Some(rest) = s.strip_prefix("index.docker.io/") {
        out = std::borrow::Cow::Owned(format!("docker.io/{rest}"));
    } else if !has_registry {
        out = std::borrow::Cow::Owned(if s.contains('/') {
            format!("docker.io/{s}")
        } else {
            format!("docker.io/library/{s}")
        });
    }
    if let (_, None, None) = split_reference(&out) {
        out = std::borrow::Cow::Owned(format!("{out}:latest"));
    }
    out
}

/// Whether two image names are the same name ([`canonical_image_name`]).
pub fn same_image_name(a: &str, b: &str) -> bool {
    canonical_image_name(a) == canonical_image_name(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_validate() {
        let ok = format!("sha256:{}", "a".repeat(64));
        assert!(DiffId::new(&ok).is_ok());
        for bad in [
            "".to_owned(),
            "a".repeat(64),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha512:{}", "a".repeat(64)),
            format!("sha256:{}/", "a".repeat(63)),
        ] {
            assert!(ChainId::new(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_name_without_tag_is_its_latest_tag() {
        assert!(same_image_name("foo", "foo:latest"));
        assert!(same_image_name(
            "localhost:5000/foo",
            "localhost:5000/foo:latest"
        ));
        assert!(!same_image_name("foo", "foo:1"));
        assert!(!same_image_name("foo@sha256:00", "foo:latest"));
        assert!(!same_image_name("localhost:5000/foo", "localhost:5000"));
        assert!(same_image_name("bb:1", "docker.io/library/bb:1"));
        assert!(same_image_name("bb", "docker.io/library/bb:latest"));
        assert!(same_image_name("me/app", "docker.io/me/app:latest"));
        assert!(same_image_name("index.docker.io/me/app:2", "me/app:2"));
        assert!(!same_image_name("quay.io/bb:1", "bb:1"));
        assert!(!same_image_name("localhost/bb:1", "bb:1"));
    }

    #[test]
    fn image_names_are_not_full_ids() {
        let hex = "0123456789abcdef".repeat(4);
        for bad in [hex.clone(), format!("sha256:{hex}")] {
            assert!(validate_image_name(&bad).is_err(), "{bad}");
        }
        // Short hex names and other digests' forms stay names (as in Docker).
        for ok in [&hex[..12], &hex[..63], "sha256:abc", "busybox:1.36"] {
            assert!(validate_image_name(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn new_names_follow_dockers_reference_grammar() {
        let digest = format!("sha256:{}", "a".repeat(64));
        for ok in [
            "busybox",
            "busybox:1.36",
            "sha256:abc",
            "localhost:5000/foo",
            "localhost:5000/foo:v1",
            "quay.io/a/b-c__d.e:T_1.x-2",
            &format!("foo@{digest}"),
            &format!("foo:1@{digest}"),
            "Registry.Example.com/app",
            "a--b",
        ] {
            assert!(validate_new_image_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "FOO",
            "foo:",
            ":tag",
            "foo::x",
            "a/../b",
            "a//b",
            "-a",
            "foo:-x",
            "foo@sha256:zz",
            "foo@",
            "a_-b",
            "example.com:x/app",
            &format!("foo:{}", "t".repeat(129)),
        ] {
            assert!(validate_new_image_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chain_ids_follow_oci() {
        let d: Vec<DiffId> = ["a", "b", "c"]
            .iter()
            .map(|s| DiffId::of_bytes(s.as_bytes()))
            .collect();
        let c = ChainId::chain(&d);
        assert_eq!(c[0].as_str(), d[0].as_str());
        let want1 = hex::encode(Sha256::digest(format!("{} {}", d[0], d[1])));
        assert_eq!(c[1].hex(), want1);
        let want2 = hex::encode(Sha256::digest(format!("sha256:{want1} {}", d[2])));
        assert_eq!(c[2].hex(), want2);
    }

    #[test]
    fn container_names() {
        for ok in ["a", "c1", "my_box.2-x", &"a".repeat(128)] {
            assert!(ContainerName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "_a", "a/b", "..", "a b", &"a".repeat(129)] {
            assert!(ContainerName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn image_names() {
        assert!(validate_image_name("docker.io/library/busybox:latest").is_ok());
        assert!(validate_image_name("a b").is_err());
        assert!(validate_image_name("a\nb").is_err());
    }
}
