//! Hostile layer tars written from raw header bytes, so names a well-behaved tar writer
//! refuses (`../x`, `/abs`) can be produced. Each [`HostileCase`] says which tokens the
//! error message should name and which outside paths must stay untouched.

use std::path::{Path, PathBuf};

use crate::fixtures::{gzip, noise, zstd_checked};

/// Tar type flags used here.
pub const REG: u8 = b'0';
pub const HARDLINK: u8 = b'1';
pub const SYMLINK: u8 = b'2';
pub const DIR: u8 = b'5';

/// One raw tar entry; `declared_size` lets a header lie about its data length.
#[derive(Clone, Debug)]
pub struct RawEntry {
    pub name: Vec<u8>,
    pub typeflag: u8,
    pub linkname: Vec<u8>,
    pub data: Vec<u8>,
    pub mode: u32,
    pub declared_size: Option<u64>,
}

impl RawEntry {
    pub fn file(name: &str, data: &[u8]) -> Self {
        Self {
            name: name.as_bytes().to_vec(),
            typeflag: REG,
            linkname: Vec::new(),
            data: data.to_vec(),
            mode: 0o644,
            declared_size: None,
        }
    }
    pub fn dir(name: &str) -> Self {
        Self {
            typeflag: DIR,
            mode: 0o755,
            ..Self::file(name, b"")
        }
    }
    pub fn symlink(name: &str, target: &str) -> Self {
        Self {
            typeflag: SYMLINK,
            linkname: target.as_bytes().to_vec(),
            mode: 0o777,
            ..Self::file(name, b"")
        }
    }
    pub fn hardlink(name: &str, target: &str) -> Self {
        Self {
            typeflag: HARDLINK,
            linkname: target.as_bytes().to_vec(),
            ..Self::file(name, b"")
        }
    }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}\0", v, width = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

/// A 512-byte ustar header; names longer than 100 bytes are split into prefix/name.
pub fn raw_header(e: &RawEntry) -> [u8; 512] {
    let mut h = [0u8; 512];
    let (prefix, name): (&[u8], &[u8]) = if e.name.len() <= 100 {
        (b"", &e.name)
    } else {
        let split = e.name[..e.name.len().min(156)]
            .iter()
            .rposition(|&c| c == b'/')
            .expect("long hostile name needs a '/' to split at");
        (&e.name[..split], &e.name[split + 1..])
    };
    assert!(
        name.len() <= 100 && prefix.len() <= 155,
        "name too long for ustar"
    );
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], u64::from(e.mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(
        &mut h[124..136],
        e.declared_size.unwrap_or(e.data.len() as u64),
    );
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = e.typeflag;
    assert!(e.linkname.len() <= 100, "link name too long for ustar");
    h[157..157 + e.linkname.len()].copy_from_slice(&e.linkname);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[345..345 + prefix.len()].copy_from_slice(prefix);
    // Checksum: sum of all bytes with the checksum field read as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// Entries as a complete tar (data padded to 512, two zero blocks at the end).
pub fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&raw_header(e));
        out.extend_from_slice(&e.data);
        let pad = (512 - e.data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

/// A hostile input and what must hold after layerctl rejects it.
#[derive(Clone, Debug)]
pub struct HostileCase {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    /// The error message must contain at least one of these (empty: any message).
    pub tokens: Vec<String>,
    /// Paths outside the store that must not exist afterwards.
    pub must_not_exist: Vec<PathBuf>,
    /// Whether accepting the input (exit 0) can also be correct, and what must then hold.
    pub accept: Accept,
}

/// When a hostile-looking input may be accepted instead of refused with exit 5.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accept {
    /// Must be refused with exit 5.
    Never,
    /// Duplicate entries: "last one wins" (what tar and moby do) is also correct.
    LastWins,
    /// A write through a symlink: refusing is correct, and so is Docker's
    /// `FollowSymlinkInScope` policy of resolving the symlink INSIDE the layer root
    /// (absolute targets restart at the root, `..` stops at it); the file must then be
    /// at this path relative to the layer root, and nowhere outside.
    ClampedTo(String),
}

/// `outside` is an existing directory outside the store holding `target-file`
/// (which must keep nlink 1 and its content); the cases aim at it.
pub fn hostile_cases(outside: &Path) -> Vec<HostileCase> {
    let out = outside.to_string_lossy().into_owned();
    // 16 levels climb past / from any store path the tests use; the result must fit
    // the 100-byte ustar link-name field.
    let rel_out = format!("{}{}", "../".repeat(16), out.trim_start_matches('/'));
    let case = |name, bytes, tokens: &[&str], bad: &[&str]| HostileCase {
        name,
        bytes,
        tokens: tokens.iter().map(|s| s.to_string()).collect(),
        must_not_exist: bad.iter().map(|b| outside.join(b)).collect(),
        accept: Accept::Never,
    };
    let good = RawEntry::file("ok.txt", b"fine\n");
    let big_tar = raw_tar(&[
        RawEntry::dir("d"),
        RawEntry::file("d/noise", &noise(256 * 1024, 3)),
    ]);
    let corrupt_mid = |mut v: Vec<u8>| {
        let mid = v.len() / 2;
        for b in &mut v[mid..mid + 64] {
            *b ^= 0x5a;
        }
        v
    };
    let mut truncated_header = raw_tar(std::slice::from_ref(&good));
    truncated_header.truncate(1024);
    truncated_header.extend_from_slice(&raw_header(&RawEntry::file("half-header", b""))[..200]);
    let mut truncated_data = raw_tar(&[
        good.clone(),
        RawEntry::file("trunc-data", &noise(10_000, 5)),
    ]);
    truncated_data.truncate(1024 + 512 + 3000);

    let mut cases = vec![
        case(
            "dotdot",
            raw_tar(&[good.clone(), RawEntry::file("../escape-dotdot", b"x")]),
            &["escape-dotdot"],
            &[],
        ),
        case(
            "dotdot-deep",
            raw_tar(&[RawEntry::file(&format!("{rel_out}/escape-deep"), b"x")]),
            &["escape-deep"],
            &["escape-deep"],
        ),
        case(
            "absolute",
            raw_tar(&[
                good.clone(),
                RawEntry::file(&format!("{out}/escape-abs"), b"x"),
            ]),
            &["escape-abs"],
            &["escape-abs"],
        ),
        case(
            "symlink-abs-escape",
            raw_tar(&[
                RawEntry::symlink("evil", &out),
                RawEntry::file("evil/pwned-abs", b"x"),
            ]),
            &["pwned-abs", "evil"],
            &["pwned-abs"],
        ),
        case(
            "symlink-rel-escape",
            raw_tar(&[
                RawEntry::dir("a"),
                RawEntry::symlink("a/up", &rel_out),
                RawEntry::file("a/up/pwned-rel", b"x"),
            ]),
            &["pwned-rel", "a/up"],
            &["pwned-rel"],
        ),
        case(
            "symlink-dotdot-dir",
            raw_tar(&[
                RawEntry::symlink("top", "../../.."),
                RawEntry::file("top/pwned-top", b"x"),
            ]),
            &["pwned-top", "top"],
            &[],
        ),
        case(
            "hardlink-etc-passwd",
            raw_tar(&[RawEntry::hardlink("passwd-link", "/etc/passwd")]),
            &["passwd-link", "/etc/passwd", "etc/passwd"],
            &[],
        ),
        case(
            "hardlink-outside",
            raw_tar(&[RawEntry::hardlink(
                "hl-out",
                &format!("{rel_out}/target-file"),
            )]),
            &["hl-out", "target-file"],
            &[],
        ),
        case(
            "hardlink-outside-abs",
            raw_tar(&[RawEntry::hardlink(
                "hl-out-abs",
                &format!("{out}/target-file"),
            )]),
            &["hl-out-abs", "target-file"],
            &[],
        ),
        case(
            "hardlink-missing",
            raw_tar(&[
                good.clone(),
                RawEntry::hardlink("hl-missing", "no/such/file"),
            ]),
            &["hl-missing", "no/such/file"],
            &[],
        ),
        case(
            "hardlink-through-symlink",
            raw_tar(&[
                RawEntry::symlink("lnk", &out),
                RawEntry::hardlink("hl-via-symlink", "lnk/target-file"),
            ]),
            &["hl-via-symlink", "lnk/target-file"],
            &[],
        ),
        case(
            "whiteout-empty",
            raw_tar(&[good.clone(), RawEntry::file(".wh.", b"")]),
            &[".wh."],
            &[],
        ),
        case(
            "whiteout-dot",
            raw_tar(&[RawEntry::dir("d"), RawEntry::file("d/.wh..", b"")]),
            &[".wh.."],
            &[],
        ),
        case(
            "whiteout-dotdot",
            raw_tar(&[RawEntry::dir("d"), RawEntry::file("d/.wh...", b"")]),
            &[".wh..."],
            &[],
        ),
        case("truncated-header", truncated_header, &[], &[]),
        case("truncated-data", truncated_data, &[], &[]),
        case(
            "truncated-in-padding",
            {
                // Cut inside the last entry's block padding. (A stream that ends exactly
                // at an entry boundary, without end-of-archive blocks, is accepted, as
                // by GNU tar: see the fidelity test.)
                let mut t = raw_tar(&[good.clone(), RawEntry::file("last", b"data")]);
                t.truncate(t.len() - 1024 - 100);
                t
            },
            &[],
            &[],
        ),
        case("garbage", noise(8192, 11), &[], &[]),
        case("corrupt-gzip", corrupt_mid(gzip(&big_tar)), &[], &[]),
        case(
            "truncated-gzip",
            {
                let g = gzip(&big_tar);
                g[..g.len() / 2].to_vec()
            },
            &[],
            &[],
        ),
        case(
            "corrupt-zstd",
            corrupt_mid(zstd_checked(&big_tar)),
            &[],
            &[],
        ),
    ];
    let rel = out.trim_start_matches('/');
    for c in &mut cases {
        c.accept = match c.name {
            "symlink-abs-escape" => Accept::ClampedTo(format!("{rel}/pwned-abs")),
            "symlink-rel-escape" => Accept::ClampedTo(format!("{rel}/pwned-rel")),
            "symlink-dotdot-dir" => Accept::ClampedTo("pwned-top".into()),
            // GNU tar's rule: a leading `/` is dropped, the path lands inside the layer.
            "absolute" => Accept::ClampedTo(format!("{rel}/escape-abs")),
            _ => Accept::Never,
        };
    }
    let mut dup = case(
        "duplicate-entries",
        raw_tar(&[
            RawEntry::file("dup", b"first"),
            RawEntry::file("dup", b"second"),
            RawEntry::file("dup2", b"file first"),
            RawEntry::dir("dup2"),
            RawEntry::file("dup2/child", b"child"),
        ]),
        &["dup"],
        &[],
    );
    dup.accept = Accept::LastWins;
    cases.push(dup);
    cases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_tars_parse_as_intended() {
        let t = raw_tar(&[
            RawEntry::file("../escape", b"abc"),
            RawEntry::symlink("l", "/x"),
        ]);
        let mut ar = tar::Archive::new(t.as_slice());
        let mut it = ar.entries().unwrap();
        let mut e = it.next().unwrap().unwrap();
        assert_eq!(&*e.path_bytes(), b"../escape");
        let mut s = String::new();
        std::io::Read::read_to_string(&mut e, &mut s).unwrap();
        assert_eq!(s, "abc");
        let e = it.next().unwrap().unwrap();
        assert_eq!(e.link_name_bytes().unwrap().as_ref(), b"/x");
        let long = format!("{}x/escape", "../".repeat(40));
        let t = raw_tar(&[RawEntry::file(&long, b"")]);
        let mut ar = tar::Archive::new(t.as_slice());
        let e = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(&*e.path_bytes(), long.as_bytes());
    }

    #[test]
    fn cases_are_distinct() {
        let cases = hostile_cases(Path::new("/tmp/x"));
        let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), cases.len());
    }
}
