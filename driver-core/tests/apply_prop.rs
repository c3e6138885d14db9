//! Property test: whatever sequence of names, symlinks, hard links and whiteouts a tar
//! holds, applying it never changes anything outside the layer root, and never panics.

mod common;

use std::path::PathBuf;

use common::*;
use driver_core::{DriverError, WhiteoutFormat};
use proptest::prelude::*;
use tar::EntryType;

/// Absolute escape target shared by every case (checked absent after each one).
fn outside_target() -> PathBuf {
    PathBuf::from(format!("/tmp/layerctl-apply-prop-{}", std::process::id()))
}

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("a".to_string()),
        4 => Just("b".to_string()),
        2 => Just("evil".to_string()),
        2 => Just("..".to_string()),
        2 => Just(".".to_string()),
        1 => Just("".to_string()),
        1 => Just("sentinel".to_string()),
        1 => Just(".wh.a".to_string()),
        1 => Just(".wh.evil".to_string()),
        1 => Just(".wh..wh..opq".to_string()),
        1 => Just(".wh.".to_string()),
        1 => Just(".wh...".to_string()),
        1 => Just("tmp".to_string()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(component(), 1..5)).prop_map(|(abs, comps)| {
        let p = comps.join("/");
        if abs {
            format!("/{p}")
        } else {
            p
        }
    })
}

fn link_target() -> impl Strategy<Value = String> {
    let outside = outside_target().to_string_lossy().into_owned();
    prop_oneof![
        Just("/".to_string()),
        Just("..".to_string()),
        Just("../..".to_string()),
        Just("../../sentinel".to_string()),
        Just("../sibling".to_string()),
        Just("/tmp".to_string()),
        Just(outside),
        Just("a".to_string()),
        Just("evil/..".to_string()),
        Just("a/b".to_string()),
        path(),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    File(String),
    Dir(String),
    Symlink(String, String),
    Hardlink(String, String),
    Fifo(String),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => path().prop_map(Op::File),
        2 => path().prop_map(Op::Dir),
        3 => (path(), link_target()).prop_map(|(p, t)| Op::Symlink(p, t)),
        1 => (path(), path()).prop_map(|(p, t)| Op::Hardlink(p, t)),
        1 => path().prop_map(Op::Fifo),
    ]
}

fn entry(op: &Op) -> E {
    match op {
        Op::File(p) => file(p, "pwned"),
        Op::Dir(p) => dir(p),
        Op::Symlink(p, t) => symlink(p, t),
        Op::Hardlink(p, t) => hardlink(p, t),
        Op::Fifo(p) => E::new(p, EntryType::Fifo),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn apply_is_contained(
        ops in prop::collection::vec(op(), 1..12),
        format in prop_oneof![
            Just(WhiteoutFormat::Delete),
            Just(WhiteoutFormat::Overlay),
            Just(WhiteoutFormat::Aufs),
        ],
        lower_link in any::<bool>(),
    ) {
        let mut sb = Sandbox::new();
        if lower_link {
            // A hostile symlink already in the layer (vfs copies its parent).
            std::os::unix::fs::symlink("../sentinel", sb.p("evil")).unwrap();
            sb.rebaseline();
        }
        let entries: Vec<E> = ops.iter().map(entry).collect();
        let r = sb.apply(&tar(&entries), format);
        match &r {
            Ok(_) | Err(DriverError::UnsafeEntry { .. }) | Err(DriverError::Io { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error kind: {other:?}"),
        }
        sb.assert_contained();
        prop_assert!(!outside_target().exists(), "{} created", outside_target().display());
    }
}
