//! An import killed with SIGKILL at various points leaves a store that `check --repair`
//! brings back to consistent, with either no image or the complete image, never a half
//! one; a new import then works.

use std::time::Duration;

use layerctl_tests::fixtures::{noise, Entry, Image, Layer};
use layerctl_tests::harness::{self, Ctl};
use layerctl_tests::tree::{compare_expected, snapshot, Xattrs};

/// Two layers of many small files, so the import takes a noticeable time.
fn big_image() -> Image {
    let layer = |n: usize, seed: u64| {
        let mut e = vec![Entry::dir(&format!("d{seed}"))];
        for i in 0..n {
            e.push(Entry::file(
                &format!("d{seed}/f{i:05}"),
                noise(8 * 1024, seed * 100_000 + i as u64),
            ));
        }
        Layer::new(e)
    };
    Image {
        name: "big".into(),
        layers: vec![layer(1500, 1), layer(1500, 2)],
    }
}

fn crash_on(driver: &str) {
    let img = big_image();
    let exp = img.expected().unwrap();
    for delay_ms in [100u64, 700, 1500, 3000] {
        let ctl = Ctl::new(driver);
        let path = ctl.write_work("big.tar", &img.docker_save());
        let mut child = ctl
            .cmd()
            .arg("import")
            .arg(&path)
            .args(["--name", "big"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn import");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL; it may already have finished
        let status = child.wait().expect("wait");

        let r = ctl.repair();
        eprintln!(
            "[{driver} kill after {delay_ms} ms] check --repair: exit {}",
            r.code
        );
        let r = ctl.run(&["check"]);
        assert_eq!(
            r.code, 0,
            "[{driver} kill after {delay_ms} ms] check after repair: {r:?}"
        );

        let images = ctl.json(&["images"]);
        let n = images.as_array().unwrap().len();
        if n == 1 {
            // Published: it must be whole.
            ctl.ok(&["create", "c", "big"]);
            let m = ctl.mount("c");
            let snap = snapshot(&m, Xattrs::User).unwrap();
            let d = compare_expected(&exp, &snap, &harness::is_init_path, &harness::is_init_path);
            assert!(
                d.is_empty(),
                "[{driver} {delay_ms} ms] published image is not whole:\n{}",
                d.join("\n")
            );
            ctl.ok(&["umount", "c"]);
            ctl.ok(&["rm", "c"]);
            ctl.ok(&["rmi", "big"]);
        } else {
            assert_eq!(n, 0, "{images}");
        }
        eprintln!(
            "[{driver}] killed after {delay_ms} ms ({status}): image published: {}",
            n == 1
        );
        // The store works afterwards; layers left by the killed run are reused or rebuilt.
        ctl.import(&path, "big");
        assert_eq!(ctl.json(&["layers", "big"]).as_array().unwrap().len(), 2);
        ctl.ok(&["check"]);
    }
}

#[test]
fn killed_import_every_driver() {
    for d in harness::drivers("crash") {
        crash_on(d.name);
    }
}
