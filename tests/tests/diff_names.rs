//! `layerctl diff` with names that are not UTF-8 (or hold a newline or a backslash): the
//! text output escapes them as GNU `ls -b` does, so different names print differently
//! and each change is one line; `--json` carries the exact bytes (`path_hex`). Before:
//! `/x\xff`, `/x\xfe` and `/x\u{fffd}` all printed as `A /x\u{fffd}`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use layerctl_tests::fixtures::{docker_save_of, Entry, Layer};
use layerctl_tests::harness::{self, Ctl};

/// Names created through the container mount, and how `diff` must print each.
const NAMES: &[(&[u8], &str)] = &[
    (b"x\xff", "A /x\\377"),
    (b"x\xfe", "A /x\\376"),
    ("x\u{fffd}".as_bytes(), "A /x\u{fffd}"),
    (b"x\\377", "A /x\\\\377"),
    (b"two\nlines", "A /two\\nlines"),
    ("caf\u{e9} au lait".as_bytes(), "A /caf\u{e9} au lait"),
];

#[test]
fn diff_prints_every_name_unambiguously() {
    for spec in harness::drivers("diff names") {
        let ctl = Ctl::new(spec.name);
        let layer = Layer::new(vec![Entry::file("base", b"b".to_vec())]).tar();
        ctl.import(
            &ctl.write_work("a.tar", &docker_save_of("a", &[layer])),
            "a",
        );
        ctl.ok(&["create", "c", "a"]);
        let mnt = ctl.mount("c");
        for (raw, _) in NAMES {
            std::fs::write(mnt.join(OsStr::from_bytes(raw)), b"x").unwrap();
        }
        let d = spec.name;

        let text = ctl.ok(&["diff", "c"]);
        let mut got: Vec<&str> = text.lines().collect();
        got.sort();
        let mut want: Vec<&str> = NAMES.iter().map(|(_, line)| *line).collect();
        want.sort();
        assert_eq!(got, want, "[{d}] diff text:\n{text}");

        let json = ctl.json(&["diff", "c"]);
        let entries = json.as_array().expect("diff --json is an array");
        assert_eq!(entries.len(), NAMES.len(), "[{d}] {json}");
        for (raw, line) in NAMES {
            let path: Vec<u8> = [b"/", *raw].concat();
            let e = entries
                .iter()
                .find(|e| match e["path_hex"].as_str() {
                    Some(h) => hex::decode(h).unwrap() == path,
                    None => e["path"].as_str().map(str::as_bytes) == Some(&path[..]),
                })
                .unwrap_or_else(|| panic!("[{d}] no entry carries {path:?} exactly: {json}"));
            assert_eq!(e["kind"], "A", "[{d}] {e}");
            match std::str::from_utf8(raw) {
                // UTF-8: `path` is the name itself and there is no `path_hex`.
                Ok(_) => assert!(e.get("path_hex").is_none(), "[{d}] {e}"),
                // Not UTF-8: `path` is the text output's escaped form.
                Err(_) => assert_eq!(e["path"].as_str(), Some(&line[2..]), "[{d}] {e}"),
            }
        }
        ctl.ok(&["umount", "c"]);
    }
}
