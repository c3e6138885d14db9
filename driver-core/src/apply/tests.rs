//! The openat2-less resolver (`Resolver::walk`) must give exactly the results of
//! `openat2(RESOLVE_IN_ROOT)`: same trees, same refusals, same containment.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use proptest::prelude::*;
use tar::{EntryType, Header};

use super::{apply_inner, ApplyOptions, LayerStream};
use crate::whiteout::WhiteoutFormat;

/// One raw entry: (name, type, link target).
type Raw = (String, EntryType, String);

fn raw_tar(entries: &[Raw]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, ty, link) in entries {
        let mut h = Header::new_gnu();
        let g = h.as_gnu_mut().unwrap();
        let n = name.len().min(100);
        g.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        let l = link.len().min(100);
        g.linkname[..l].copy_from_slice(&link.as_bytes()[..l]);
        h.set_entry_type(*ty);
        h.set_mode(if *ty == EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(1_000_000_000);
        let data: &[u8] = if *ty == EntryType::Regular {
            name.as_bytes()
        } else {
            b""
        };
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A tree as comparable data: relative path -> (type, content or link target, mode).
type Tree = BTreeMap<String, (char, Vec<u8>, u32)>;

/// Outcome of one apply: result kind, tree in root, tree outside root.
type Outcome = (Result<(), String>, Tree, Tree);

/// Snapshot of `dir`.
fn snapshot(dir: &Path) -> Tree {
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).follow_links(false) {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let md = e.path().symlink_metadata().unwrap();
        let ft = md.file_type();
        let (t, v) = if ft.is_symlink() {
            (
                'l',
                fs::read_link(e.path())
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes(),
            )
        } else if ft.is_dir() {
            ('d', Vec::new())
        } else if ft.is_file() {
            ('f', fs::read(e.path()).unwrap())
        } else {
            ('o', Vec::new())
        };
        m.insert(rel, (t, v, md.mode() & 0o7777));
    }
    m
}

/// Applies with both resolvers in sibling sandboxes; returns both outcomes.
fn both(entries: &[Raw], format: WhiteoutFormat) -> [Outcome; 2] {
    let t = raw_tar(entries);
    [false, true].map(|walk| {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();
        fs::create_dir(tmp.path().join("sentinel")).unwrap();
        let r = apply_inner(
            &root,
            LayerStream::Read(&mut &t[..]),
            &ApplyOptions::new(format),
            walk,
        )
        .map(|_| ())
        .map_err(|e| {
            // Compare kinds, not texts (paths differ between sandboxes).
            format!("{:?}", std::mem::discriminant(&e))
        });
        let outside: BTreeMap<_, _> = snapshot(tmp.path())
            .into_iter()
            .filter(|(k, _)| !k.starts_with("root"))
            .collect();
        (r, snapshot(&root), outside)
    })
}

#[test]
fn walk_matches_openat2_on_escapes() {
    let cases: Vec<Vec<Raw>> = vec![
        vec![
            (
                "evil".into(),
                EntryType::Symlink,
                "/tmp/layerctl-walk-outside".into(),
            ),
            ("evil/pwned".into(), EntryType::Regular, String::new()),
        ],
        vec![
            ("evil".into(), EntryType::Symlink, "../../..".into()),
            ("evil/sentinel/x".into(), EntryType::Regular, String::new()),
        ],
        vec![
            ("d".into(), EntryType::Directory, String::new()),
            ("d/up".into(), EntryType::Symlink, "..".into()),
            ("d/up/up/up/x".into(), EntryType::Regular, String::new()),
            ("d/loop".into(), EntryType::Symlink, "loop".into()),
            ("d/loop/x".into(), EntryType::Regular, String::new()),
        ],
        vec![
            ("realetc/passwd".into(), EntryType::Regular, String::new()),
            ("etc".into(), EntryType::Symlink, "/realetc".into()),
            ("pw".into(), EntryType::Link, "etc/passwd".into()),
            ("a".into(), EntryType::Symlink, "b/c".into()),
            ("a/f".into(), EntryType::Regular, String::new()),
        ],
    ];
    for case in cases {
        for format in [WhiteoutFormat::Delete, WhiteoutFormat::Overlay] {
            let [a, b] = both(&case, format);
            assert_eq!(a, b, "{case:?}");
            assert!(
                a.2.keys().all(|k| k.is_empty() || k == "sentinel"),
                "{:?}",
                a.2
            );
        }
    }
    assert!(!Path::new("/tmp/layerctl-walk-outside").exists());
}

fn comp() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "a",
        "b",
        "..",
        ".",
        "l",
        "sentinel",
        ".wh.a",
        ".wh..wh..opq",
    ])
    .prop_map(str::to_string)
}

fn raw_path() -> impl Strategy<Value = String> {
    prop::collection::vec(comp(), 1..4).prop_map(|c| c.join("/"))
}

fn raw_entry() -> impl Strategy<Value = Raw> {
    prop_oneof![
        raw_path().prop_map(|p| (p, EntryType::Regular, String::new())),
        raw_path().prop_map(|p| (p, EntryType::Directory, String::new())),
        (
            raw_path(),
            prop::sample::select(vec![
                "/",
                "..",
                "../..",
                "a",
                "/a/b",
                "l",
                "../sentinel",
                "b/.."
            ])
        )
            .prop_map(|(p, t)| (p, EntryType::Symlink, t.to_string())),
        (raw_path(), raw_path()).prop_map(|(p, t)| (p, EntryType::Link, t)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn walk_matches_openat2(entries in prop::collection::vec(raw_entry(), 1..10)) {
        let [a, b] = both(&entries, WhiteoutFormat::Delete);
        prop_assert_eq!(&a, &b);
        prop_assert!(a.2.keys().all(|k| k.is_empty() || k == "sentinel"), "{:?}", a.2);
    }
}
