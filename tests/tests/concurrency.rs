//! Eight processes at once on one store, for a bounded time (`LAYERCTL_CONC_SECS`,
//! default 12 per driver), every driver: imports of the same image and of different
//! images (sharing a base layer), create, mount/umount of one shared container, rm of
//! that container while others mount it (refused while mounted; recreated when it
//! went), rm of own containers, rmi, gc. Every command must succeed or fail cleanly
//! (exit 3 not found, 4 conflict: an image in use, a mounted container, a name taken);
//! afterwards the store checks clean, no staging lease, mount or mount reference is
//! left, and every image mounts to its exact tree.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use layerctl_tests::fixtures::{noise, Entry, Image, Layer};
use layerctl_tests::harness::{self, mounts_under, Ctl};
use layerctl_tests::tree::{compare_expected, snapshot, Xattrs};

const WORKERS: usize = 8;

fn fixtures() -> Vec<Image> {
    let files = |dir: &str, n: usize, seed: u64| {
        let mut e = vec![Entry::dir(dir)];
        for i in 0..n {
            e.push(Entry::file(
                &format!("{dir}/f{i:03}"),
                noise(3000 + i * 7, seed * 1000 + i as u64),
            ));
        }
        e
    };
    let base = Layer::new(files("base", 60, 1));
    let mut out = vec![Image {
        name: "same".into(),
        layers: vec![base.clone(), Layer::new(files("same", 40, 2))],
    }];
    for w in 0..WORKERS as u64 {
        let mut top = files(&format!("w{w}"), 30, 10 + w);
        top.push(Entry::whiteout(&format!("base/f{w:03}")));
        out.push(Image {
            name: format!("w{w}"),
            layers: vec![base.clone(), Layer::new(top)],
        });
    }
    out
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[derive(Default)]
struct Tally {
    ok: BTreeMap<&'static str, u64>,
    refused: BTreeMap<&'static str, u64>,
    unexpected: Vec<String>,
}

impl Tally {
    fn record(&mut self, op: &'static str, args: &[String], r: &harness::Run) -> bool {
        match r.code {
            0 => *self.ok.entry(op).or_default() += 1,
            3 | 4 => *self.refused.entry(op).or_default() += 1,
            _ => self
                .unexpected
                .push(format!("{args:?}: exit {}: {}", r.code, r.stderr.trim())),
        }
        r.code == 0
    }
}

fn worker(ctl: &Ctl, w: usize, files: &[PathBuf], names: &[String], deadline: Instant) -> Tally {
    let mut t = Tally::default();
    let mut rng = Rng(0x1234_5678 + w as u64 * 7919);
    let mut own: Vec<String> = Vec::new();
    let mut n = 0;
    let run = |args: &[String]| ctl.run(args);
    while Instant::now() < deadline {
        n += 1;
        match rng.below(9) {
            0 => {
                let a = vec![
                    "import".into(),
                    files[0].display().to_string(),
                    "--name".into(),
                    "same".into(),
                ];
                t.record("import same", &a, &run(&a));
            }
            1 => {
                let i = 1 + (w + rng.below(2)) % (files.len() - 1);
                let a = vec![
                    "import".into(),
                    files[i].display().to_string(),
                    "--name".into(),
                    names[i].clone(),
                ];
                t.record("import other", &a, &run(&a));
            }
            2 => {
                let c = format!("w{w}c{n}");
                let a = vec![
                    "create".into(),
                    c.clone(),
                    names[rng.below(names.len())].clone(),
                ];
                if t.record("create", &a, &run(&a)) {
                    own.push(c);
                }
            }
            3 | 4 => {
                // Mount the shared container, look inside, unmount: each successful
                // mount is paired with one umount, so the count must end at 0.
                let a = vec!["mount".into(), "shared".into()];
                let r = run(&a);
                if t.record("mount shared", &a, &r) {
                    let p = PathBuf::from(r.stdout.trim());
                    if !p.join("same/f000").is_file() {
                        t.unexpected
                            .push(format!("mounted shared at {} lacks same/f000", p.display()));
                    }
                    let a = vec!["umount".into(), "shared".into()];
                    let r = run(&a);
                    if r.code != 0 {
                        t.unexpected
                            .push(format!("umount after a successful mount: {r:?}"));
                    }
                }
            }
            5 => {
                // rm while others mount: refused (4) while mounted; when it went,
                // make it again.
                let a = vec!["rm".into(), "shared".into()];
                t.record("rm shared", &a, &run(&a));
                let a = vec!["create".into(), "shared".into(), "same".into()];
                t.record("create shared", &a, &run(&a));
            }
            6 => {
                if let Some(c) = own.pop() {
                    let a = vec!["rm".into(), c];
                    t.record("rm own", &a, &run(&a));
                }
            }
            7 => {
                let a = vec!["rmi".into(), names[rng.below(names.len())].clone()];
                t.record("rmi", &a, &run(&a));
            }
            _ => {
                let a = vec!["gc".into()];
                t.record("gc", &a, &run(&a));
            }
        }
    }
    for c in own {
        let a = vec!["rm".into(), c];
        t.record("rm own", &a, &run(&a));
    }
    t
}

fn run_on(driver: &str, secs: u64) {
    let fx = fixtures();
    let ctl = Arc::new(Ctl::new(driver));
    let files: Vec<PathBuf> = fx
        .iter()
        .map(|i| ctl.write_work(&format!("{}.tar", i.name), &i.docker_save()))
        .collect();
    let names: Vec<String> = fx.iter().map(|i| i.name.clone()).collect();
    ctl.import(&files[0], "same");
    ctl.ok(&["create", "shared", "same"]);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let all = Arc::new(Mutex::new(Tally::default()));
    let handles: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (ctl, files, names, all) = (ctl.clone(), files.clone(), names.clone(), all.clone());
            std::thread::spawn(move || {
                let t = worker(&ctl, w, &files, &names, deadline);
                let mut a = all.lock().unwrap();
                for (k, v) in t.ok {
                    *a.ok.entry(k).or_default() += v;
                }
                for (k, v) in t.refused {
                    *a.refused.entry(k).or_default() += v;
                }
                a.unexpected.extend(t.unexpected);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("worker panicked");
    }
    let t = all.lock().unwrap();
    eprintln!(
        "[{driver}] {secs}s x {WORKERS} processes: ok {:?}; refused {:?}",
        t.ok, t.refused
    );
    assert!(
        t.unexpected.is_empty(),
        "[{driver}] unexpected failures:\n{}",
        t.unexpected.join("\n")
    );
    for op in ["import same", "import other", "mount shared", "gc"] {
        assert!(
            t.ok.get(op).copied().unwrap_or(0) > 0,
            "[{driver}] no successful {op}: {:?}",
            t.ok
        );
    }

    // The store afterwards.
    let r = ctl.run(&["check"]);
    assert_eq!(r.code, 0, "[{driver}] check after the run: {r:?}");
    // Every layer's tar-split metadata (recorded while other processes opened the
    // store exclusively, which empties `tmp/`) reproduces its DiffID.
    let r = ctl.run(&["check", "--verify-content"]);
    assert_eq!(
        r.code, 0,
        "[{driver}] check --verify-content after the run: {r:?}"
    );
    let staging: Vec<_> = std::fs::read_dir(ctl.root.join("staging"))
        .unwrap()
        .collect();
    assert!(staging.is_empty(), "[{driver}] leases left: {staging:?}");
    for c in ctl.json(&["ps"]).as_array().unwrap() {
        assert_eq!(c["mount_count"], 0, "[{driver}] mount references left: {c}");
    }
    assert!(
        mounts_under(ctl.base()).is_empty(),
        "[{driver}] mounts left: {:?}",
        mounts_under(ctl.base())
    );
    let present: Vec<String> = ctl
        .json(&["images"])
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["names"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    for img in &fx {
        if !present.contains(&img.name) {
            continue;
        }
        let exp = img.expected().unwrap();
        ctl.ok(&["create", "verify", img.name.as_str()]);
        let m = ctl.mount("verify");
        let snap = snapshot(&m, Xattrs::User).unwrap();
        ctl.ok(&["umount", "verify"]);
        ctl.ok(&["rm", "verify"]);
        let d = compare_expected(&exp, &snap, &harness::is_init_path, &harness::is_init_path);
        assert!(
            d.is_empty(),
            "[{driver}] image {} is not whole:\n{}",
            img.name,
            d.join("\n")
        );
    }
    // Every layer is stored once: as many layer records as distinct chains present,
    // and as many driver layers as records plus two per container.
    let layers = std::fs::read_dir(ctl.root.join("layerdb/sha256"))
        .unwrap()
        .count();
    let containers = ctl.json(&["ps"]).as_array().unwrap().len();
    let driver_layers = driver_layer_count(&ctl);
    assert_eq!(
        driver_layers,
        layers + 2 * containers,
        "[{driver}] duplicate or stray driver layers"
    );
    eprintln!(
        "[{driver}] after: {} images, {layers} layers, {containers} containers; check clean",
        present.len()
    );
}

/// Layer directories the driver holds (`<64 hex>` or `<64 hex>-init` names in the
/// directory that holds them, as the harness's layer_dir pattern says).
fn driver_layer_count(ctl: &Ctl) -> usize {
    let pattern = ctl.spec.layer_dir;
    let dir = ctl.root.join(pattern.split("{id}").next().unwrap());
    std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let id = n.strip_suffix("-init").unwrap_or(&n);
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .count()
}

#[test]
fn eight_processes_mixed_operations_every_driver() {
    let secs = std::env::var("LAYERCTL_CONC_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    for d in harness::drivers("concurrency") {
        run_on(d.name, secs);
    }
}
