//! Very deep trees (a hostile tar can nest ~2,000 directories in one 4 KiB name) are
//! replaced, whited out and pruned with a bounded number of open fds. This binary lowers
//! its own RLIMIT_NOFILE, so it holds a single test.

mod common;

use std::fs;

use common::*;
use driver_core::WhiteoutFormat;

/// Far below the depth used, so fd-per-level removal would fail with EMFILE.
const FD_LIMIT: u64 = 64;
const DEPTH: usize = 200;

#[allow(unsafe_code)]
fn lower_fd_limit() {
    let lim = libc::rlimit {
        rlim_cur: FD_LIMIT,
        rlim_max: FD_LIMIT,
    };
    // SAFETY: setrlimit reads a valid, initialised rlimit struct.
    let r = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(r, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

fn deep(top: &str) -> String {
    let mut p = top.to_string();
    for _ in 1..DEPTH {
        p.push_str("/d");
    }
    p
}

#[test]
fn deep_trees_are_removed_with_few_fds() {
    lower_fd_limit();
    for format in [WhiteoutFormat::Delete, WhiteoutFormat::Overlay] {
        let sb = Sandbox::new();
        let t = tar(&[
            file(format!("{}/f", deep("a")), "a"),
            file(format!("{}/f", deep("b")), "b"),
            file(format!("{}/f", deep("o/keep")), "kept"),
            file(format!("{}/g", deep("o/gone")), "gone"),
        ]);
        sb.apply(&t, format).unwrap();
        assert_eq!(fs::read(sb.root.join(deep("a")).join("f")).unwrap(), b"a");
        // Replace a deep dir by a file, white out another.
        let t2 = tar(&[file("a", "flat"), file(".wh.b", "")]);
        sb.apply(&t2, format).unwrap();
        assert_eq!(fs::read(sb.p("a")).unwrap(), b"flat");
        if format == WhiteoutFormat::Delete {
            assert!(!exists_nofollow(&sb.p("b")));
            // Opaque `o` keeping one deep written path, dropping the other.
            let t3 = tar(&[
                file(format!("{}/new", deep("o/keep")), "n"),
                file("o/.wh..wh..opq", ""),
            ]);
            sb.apply(&t3, format).unwrap();
            assert_eq!(
                fs::read(sb.root.join(deep("o/keep")).join("new")).unwrap(),
                b"n"
            );
            assert!(!sb.root.join(deep("o/keep")).join("f").exists());
            assert!(!exists_nofollow(&sb.p("o/gone")));
        }
        sb.assert_contained();
    }
}
