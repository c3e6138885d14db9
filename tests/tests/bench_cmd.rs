//! `layerctl bench --quick --peers` on its tiny generated input: results.json has every
//! step for every driver this machine supports, the chart files are a valid SVG (XML with
//! an `<svg>` root naming every driver and step) and a valid PNG (decoded, with bars of
//! each driver's colour), missing peers are listed as skipped with the reason, and the
//! throwaway stores are gone afterwards with no mount left below them.
//!
//! PATH is narrowed to a directory holding only `tar`, `sync` and `stat`, so the peers
//! `containers-storage` and `fuse-overlayfs` are missing whatever the machine has, while
//! `tar -x` and kernel overlay by hand (root) run.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use layerctl_tests::harness::{self, layerctl_bin, mounts_under};

const STEPS: [&str; 11] = [
    "import",
    "create",
    "mount",
    "cold read",
    "warm read",
    "stat walk",
    "small writes",
    "copy-up",
    "commit",
    "umount",
    "rm",
];

/// The bar colours of the first three drivers in `chart.rs` (registry order).
const DRIVER_RGB: [[u8; 3]; 3] = [[31, 119, 180], [214, 39, 40], [44, 160, 44]];

fn scratch() -> tempfile::TempDir {
    let base = std::env::var_os("LAYERCTL_TEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new()
        .prefix("layerctl-bench-test-")
        .tempdir_in(base)
        .unwrap()
}

fn narrow_path(dir: &Path) -> std::ffi::OsString {
    std::fs::create_dir_all(dir).unwrap();
    for prog in ["tar", "sync", "stat"] {
        let found = ["/usr/bin", "/bin", "/usr/local/bin"]
            .iter()
            .map(|d| Path::new(d).join(prog))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{prog} not found"));
        std::os::unix::fs::symlink(found, dir.join(prog)).unwrap();
    }
    dir.as_os_str().to_owned()
}

#[test]
fn bench_quick_reports_every_step_of_every_driver_with_a_chart() {
    let drivers = harness::drivers("bench_quick");
    if drivers.is_empty() {
        return;
    }
    let root = nix::unistd::geteuid().is_root();
    let tmp = scratch();
    let out = tmp.path().join("out");
    let stores = tmp.path().join("stores");
    std::fs::create_dir_all(&stores).unwrap();
    let path = narrow_path(&tmp.path().join("bin"));
    let o = Command::new(layerctl_bin())
        .args(["bench", "--quick", "--peers", "--out"])
        .arg(&out)
        .arg("--dir")
        .arg(&stores)
        .env("PATH", &path)
        .output()
        .expect("run layerctl bench");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "bench failed: {}\n{stdout}\n{stderr}",
        o.status
    );

    // The throwaway stores are gone, and nothing stays mounted below them.
    assert_eq!(
        std::fs::read_dir(&stores).unwrap().count(),
        0,
        "bench left its scratch dir in {}",
        stores.display()
    );
    assert!(mounts_under(tmp.path()).is_empty(), "bench left mounts");

    // results.json
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(j["schema"], "layerctl-bench/1");
    assert_eq!(j["runs"], 1);
    assert_eq!(
        j["steps"].as_array().unwrap().len(),
        STEPS.len(),
        "steps: {}",
        j["steps"]
    );
    assert!(
        j["input"]["files"].as_u64().unwrap() > 100,
        "input: {}",
        j["input"]
    );
    assert!(j["input"]["hard_links"].as_u64().unwrap() > 0);
    assert!(j["input"]["symlinks"].as_u64().unwrap() > 0);
    assert!(!j["machine"]["kernel"].as_str().unwrap().is_empty());
    let results = j["results"].as_array().unwrap();
    let got: BTreeSet<(String, String)> = results
        .iter()
        .map(|r| {
            (
                r["target"].as_str().unwrap().to_owned(),
                r["step"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for d in &drivers {
        for s in STEPS {
            if s == "cold read" && !root {
                continue; // dropping the page cache needs root
            }
            assert!(
                got.contains(&(d.name.to_owned(), s.to_owned())),
                "no {s} for {}: {got:?}",
                d.name
            );
        }
    }
    for r in results {
        let runs = r["runs_ms"].as_array().unwrap();
        assert_eq!(runs.len(), 1, "{r}");
        let (med, min, max) = (
            r["median_ms"].as_f64().unwrap(),
            r["min_ms"].as_f64().unwrap(),
            r["max_ms"].as_f64().unwrap(),
        );
        assert!(min <= med && med <= max && min > 0.0, "{r}");
        assert!(r["ratio_to_fastest"].as_f64().unwrap() >= 1.0, "{r}");
    }
    for s in STEPS {
        let best = results
            .iter()
            .filter(|r| r["step"] == s)
            .map(|r| r["ratio_to_fastest"].as_f64().unwrap())
            .fold(f64::INFINITY, f64::min);
        if best.is_finite() {
            assert!((best - 1.0).abs() < 1e-9, "{s}: fastest ratio {best}");
        }
    }
    // Peers: tar -x ran (the import floor); the missing ones are listed with a reason.
    assert!(
        got.contains(&("tar -x".to_owned(), "import".to_owned())),
        "{got:?}"
    );
    if root {
        assert!(
            got.contains(&("overlay by hand".to_owned(), "copy-up".to_owned())),
            "{got:?}"
        );
    }
    let skipped = j["skipped"].as_array().unwrap();
    for peer in ["c/storage overlay", "c/storage vfs", "fuse-overlayfs"] {
        let s = skipped
            .iter()
            .find(|s| s["name"] == peer)
            .unwrap_or_else(|| panic!("{peer} not listed as skipped: {skipped:?}"));
        assert!(
            s["reason"].as_str().unwrap().contains("not found in PATH"),
            "{s}"
        );
        assert!(stdout.contains(&format!("skipped peer {peer}")), "{stdout}");
    }
    // The table shows every step.
    for s in STEPS {
        if s == "cold read" && !root {
            continue;
        }
        assert!(stdout.contains(s), "table lacks {s}:\n{stdout}");
    }

    // chart.svg: XML with an <svg> root, naming every driver and step.
    let svg = std::fs::read_to_string(out.join("chart.svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("chart.svg is XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: String = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join("\n");
    for d in &drivers {
        assert!(texts.contains(d.name), "svg lacks {}: {texts}", d.name);
    }
    for s in ["import", "copy-up", "commit", "milliseconds"] {
        assert!(texts.contains(s), "svg lacks {s}");
    }
    let rects = doc.descendants().filter(|n| n.has_tag_name("rect")).count();
    assert!(rects > drivers.len() * 8, "svg has {rects} rects");

    // chart.png: decodes; each driver's bar colour covers a visible area.
    let dec = png::Decoder::new(std::fs::File::open(out.join("chart.png")).unwrap());
    let mut reader = dec.read_info().expect("chart.png header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("chart.png data");
    assert_eq!((info.width, info.height), (1600, 900));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let px = &buf[..info.buffer_size()];
    for (i, rgb) in DRIVER_RGB.iter().enumerate().take(drivers.len()) {
        let n = px.chunks_exact(3).filter(|p| p == rgb).count();
        assert!(n > 2000, "driver colour {i} covers {n} pixels only");
    }
}

#[test]
fn bench_rejects_an_unknown_driver() {
    let tmp = scratch();
    let o = Command::new(layerctl_bin())
        .args(["bench", "--quick", "--drivers", "nosuch", "--out"])
        .arg(tmp.path().join("out"))
        .arg("--dir")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nosuch"), "{err}");
    assert!(!tmp.path().join("out/results.json").exists());
}
