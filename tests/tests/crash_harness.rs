//! Crash harness: SIGKILLs `layerctl` at random moments during import, create, commit,
//! rm, rmi and gc, on every driver. After each kill, `check` passes, or `check
//! --repair` brings the store back to one that `check` passes; then every image known
//! to be committed before the kill (its command returned success) still mounts to its
//! exact tree (counted: how often the next exclusive open alone cleaned up, how often
//! `check --repair` was needed): imported images against the fixture's expected tree, committed images
//! against the tree they showed when first verified. The killed command's own target
//! may or may not exist afterwards; if it exists it must be whole.
//!
//! Knobs (environment):
//! - `LAYERCTL_CRASH_KILLS`: kills per driver (default 6, one per operation: the CI
//!   subset, a couple of minutes); `scripts/crash-harness.sh` runs the long mode;
//! - `LAYERCTL_CRASH_SEED`: the random seed (default 10; the report prints it);
//! - `LAYERCTL_CRASH_SCALE`: image size (files per layer / 10; default 2, CI);
//! - `LAYERCTL_CRASH_DRIVERS`: comma-separated drivers (default: every one that runs);
//! - `LAYERCTL_CRASH_SYNC`: the store's `[store] sync` (default `none`: a SIGKILL
//!   loses nothing the page cache holds, so syncfs changes no outcome here and only
//!   costs time on a busy disk; `filesystem` runs the default path).
//!
//! Kill timing: a command is killed after a delay drawn uniformly from 0 to 1.2 times
//! the running estimate of that operation's duration (a run that finishes before its
//! kill counts as completed and teaches the estimate; a killed one raises it by a
//! quarter), so kills spread over the whole run.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use layerctl_tests::fixtures::{noise, Entry, Expected, Image, Layer};
use layerctl_tests::harness::{self, Ctl};
use layerctl_tests::tree::{compare_expected, compare_trees, snapshot, Node, Xattrs};

/// xorshift64*: deterministic for a seed, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Three images sharing a base layer (so dedupe, shared parents and rmi's "keep what
/// others use" are exercised), each large enough that a kill lands mid-import.
fn images(scale: usize) -> Vec<Image> {
    let files = |dir: &str, n: usize, seed: u64| {
        let mut e = vec![Entry::dir(dir)];
        for i in 0..n {
            e.push(Entry::file(
                &format!("{dir}/f{i:04}"),
                noise(4096 + (i % 7) * 512, seed * 10_000 + i as u64),
            ));
        }
        e
    };
    let base = Layer::new(files("base", 30 * scale, 1));
    let mut top_b = files("b", 20 * scale, 2);
    top_b.push(Entry::whiteout("base/f0001"));
    let mut top_c = files("c", 20 * scale, 3);
    top_c.push(Entry::opaque("base"));
    top_c.push(Entry::file("base/only", "c's".as_bytes().to_vec()));
    vec![
        Image {
            name: "a".into(),
            layers: vec![base.clone()],
        },
        Image {
            name: "b".into(),
            layers: vec![base.clone(), Layer::new(top_b)],
        },
        Image {
            name: "c".into(),
            layers: vec![
                base,
                Layer::new(files("c1", 15 * scale, 4)),
                Layer::new(top_c),
            ],
        },
    ]
}

/// What an image must look like.
#[derive(Clone)]
enum Golden {
    /// An imported fixture.
    Expected(Box<Expected>),
    /// A committed image: the tree of its first verification (None until then).
    Snapshot(Option<BTreeMap<String, Node>>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Import,
    Create,
    Commit,
    Rm,
    Rmi,
    Gc,
}
const OPS: [Op; 6] = [Op::Import, Op::Create, Op::Commit, Op::Rm, Op::Rmi, Op::Gc];

#[derive(Default, Debug)]
struct Counts {
    killed: BTreeMap<String, u64>,
    completed: BTreeMap<String, u64>,
    repaired: u64,
    /// Kills whose leftovers the next exclusive open alone removed.
    cleaned_by_start: u64,
    /// What the first `check` after a kill reported, by kind (first word of a line).
    found: BTreeMap<String, u64>,
}

struct Harness<'a> {
    ctl: Ctl,
    rng: Rng,
    fixtures: &'a [Image],
    files: Vec<std::path::PathBuf>,
    /// Image name -> what it must look like (committed before the current command).
    images: BTreeMap<String, Golden>,
    /// Container names known to exist.
    containers: Vec<String>,
    mean_ms: BTreeMap<Op, f64>,
    seq: u64,
    counts: Counts,
}

impl Harness<'_> {
    fn tag(&self) -> String {
        format!("[{} #{}]", self.ctl.driver, self.seq)
    }

    /// Runs `args`, SIGKILLed after a random delay; returns (killed, success).
    fn run_killed(&mut self, op: Op, args: &[String]) -> (bool, bool) {
        let mean = *self.mean_ms.get(&op).unwrap_or(&300.0);
        let delay = Duration::from_micros((self.rng.next() % ((mean * 1200.0) as u64 + 1)) + 1);
        let start = Instant::now();
        let mut child = self
            .ctl
            .cmd()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn layerctl");
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                let ms = start.elapsed().as_secs_f64() * 1000.0;
                let m = self.mean_ms.entry(op).or_insert(ms);
                *m = 0.7 * *m + 0.3 * ms;
                *self.counts.completed.entry(format!("{op:?}")).or_default() += 1;
                return (false, st.success());
            }
            if start.elapsed() >= delay {
                let _ = child.kill();
                let st = child.wait().expect("wait");
                // It may have exited on its own between the poll and the kill.
                let killed = st.code().is_none();
                if killed {
                    // Not learnt yet how long it takes: aim later next time.
                    let m = self.mean_ms.entry(op).or_insert(mean);
                    *m *= 1.25;
                    *self.counts.killed.entry(format!("{op:?}")).or_default() += 1;
                } else {
                    *self.counts.completed.entry(format!("{op:?}")).or_default() += 1;
                }
                return (killed, st.success());
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// `check`; when it fails, `check --repair` and `check` again, which must pass.
    fn check_or_repair(&mut self) {
        let r = self.ctl.run(&["check"]);
        if r.code == 0 {
            return;
        }
        for l in r.stdout.lines() {
            // "<kind>: <detail>": keep the kind, without ids and paths.
            let kind: Vec<&str> = l
                .split_whitespace()
                .take_while(|w| {
                    w.chars().all(|c| c.is_ascii_lowercase() || c == ':')
                        && w.chars().any(|c| c > 'f')
                })
                .collect();
            *self.counts.found.entry(kind.join(" ")).or_default() += 1;
        }
        // What the next start finishes (any exclusive open: `gc --dry-run` removes
        // nothing itself) must be enough for leftovers of a killed command.
        self.ctl.ok(&["gc", "--dry-run"]);
        if self.ctl.run(&["check"]).code == 0 {
            self.counts.cleaned_by_start += 1;
            return;
        }
        let rep = self.ctl.run(&["check", "--repair"]);
        let r2 = self.ctl.run(&["check"]);
        assert_eq!(
            r2.code,
            0,
            "{} store not clean after repair.\nfirst check: {r:?}\nrepair: {rep:?}\ncheck: {r2:?}",
            self.tag()
        );
        self.counts.repaired += 1;
    }

    fn store_images(&self) -> Vec<String> {
        let v = self.ctl.json(&["images"]);
        v.as_array()
            .expect("images array")
            .iter()
            .flat_map(|i| i["names"].as_array().cloned().unwrap_or_default())
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect()
    }

    fn store_containers(&self) -> Vec<String> {
        let v = self.ctl.json(&["ps"]);
        v.as_array()
            .expect("ps array")
            .iter()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// Mounts `image` through a fresh container and compares it with its golden tree
    /// (recording it for a committed image seen the first time).
    fn verify_image(&mut self, name: &str) {
        let tag = self.tag();
        self.ctl.ok(&["create", "verify", name]);
        let m = self.ctl.mount("verify");
        let snap = snapshot(&m, Xattrs::User).unwrap();
        self.ctl.ok(&["umount", "verify"]);
        self.ctl.ok(&["rm", "verify"]);
        match self.images.get_mut(name).expect("known image") {
            Golden::Expected(exp) => {
                let d =
                    compare_expected(exp, &snap, &harness::is_init_path, &harness::is_init_path);
                assert!(
                    d.is_empty(),
                    "{tag} image {name} is not whole:\n{}",
                    d.join("\n")
                );
            }
            Golden::Snapshot(Some(g)) => {
                let d = compare_trees(g, &snap);
                assert!(
                    d.is_empty(),
                    "{tag} committed image {name} changed:\n{}",
                    d.join("\n")
                );
            }
            Golden::Snapshot(g @ None) => *g = Some(snap),
        }
    }

    fn pick<T: Clone>(&mut self, v: &[T]) -> Option<T> {
        (!v.is_empty()).then(|| v[self.rng.below(v.len())].clone())
    }

    /// One random operation, killed at a random moment, then the checks.
    fn step(&mut self) {
        self.seq += 1;
        // The operation with the fewest kills so far (ties at random): every one gets
        // its share, even in the short CI run.
        let fewest = OPS
            .iter()
            .map(|o| {
                self.counts
                    .killed
                    .get(&format!("{o:?}"))
                    .copied()
                    .unwrap_or(0)
            })
            .min()
            .unwrap_or(0);
        let candidates: Vec<Op> = OPS
            .iter()
            .copied()
            .filter(|o| {
                self.counts
                    .killed
                    .get(&format!("{o:?}"))
                    .copied()
                    .unwrap_or(0)
                    == fewest
            })
            .collect();
        let op = candidates[self.rng.below(candidates.len())];
        // Make what the operation needs (not killed): an image, a container.
        if self.images.is_empty() && matches!(op, Op::Create | Op::Rmi | Op::Commit | Op::Rm) {
            let i = self.rng.below(self.fixtures.len());
            let (file, f) = (self.files[i].clone(), self.fixtures[i].clone());
            self.ctl.import(&file, &f.name);
            self.images.insert(
                f.name.clone(),
                Golden::Expected(Box::new(f.expected().unwrap())),
            );
        }
        if self.containers.is_empty() && matches!(op, Op::Commit | Op::Rm) {
            let names: Vec<String> = self.images.keys().cloned().collect();
            let img = self.pick(&names).expect("an image");
            let c = format!("p{}", self.seq);
            self.ctl.ok(&["create", c.as_str(), img.as_str()]);
            self.containers.push(c);
        }
        let names: Vec<String> = self.images.keys().cloned().collect();
        // The target whose existence the killed command may change.
        let (args, target): (Vec<String>, Option<(bool, String)>) = match op {
            Op::Import => {
                let i = self.rng.below(self.fixtures.len());
                let f = self.files[i].display().to_string();
                let n = self.fixtures[i].name.clone();
                (
                    vec!["import".into(), f, "--name".into(), n.clone()],
                    Some((true, n)),
                )
            }
            Op::Create => {
                let Some(img) = self.pick(&names) else { return };
                let c = format!("c{}", self.seq);
                (vec!["create".into(), c.clone(), img], Some((false, c)))
            }
            Op::Commit => {
                let cs = self.containers.clone();
                let Some(c) = self.pick(&cs) else { return };
                // Give the container a change first (not killed).
                let m = self.ctl.mount(&c);
                std::fs::write(
                    m.join(format!("changed-{}", self.seq)),
                    noise(50_000, self.seq),
                )
                .unwrap();
                self.ctl.ok(&["umount", c.as_str()]);
                let n = format!("com{}", self.seq);
                (
                    vec!["commit".into(), c, "--name".into(), n.clone()],
                    Some((true, n)),
                )
            }
            Op::Rm => {
                let cs = self.containers.clone();
                let Some(c) = self.pick(&cs) else { return };
                (vec!["rm".into(), c.clone()], Some((false, c)))
            }
            Op::Rmi => {
                let Some(img) = self.pick(&names) else { return };
                (vec!["rmi".into(), img.clone()], Some((true, img)))
            }
            Op::Gc => (vec!["gc".into()], None),
        };
        let (killed, _ok) = self.run_killed(op, &args);
        self.check_or_repair();

        // Reconcile the target with what the store says; everything else must be as
        // before the command.
        let imgs = self.store_images();
        let conts = self.store_containers();
        let tag = self.tag();
        if let Some((is_image, t)) = &target {
            if *is_image {
                let there = imgs.contains(t);
                match (there, self.images.contains_key(t)) {
                    (true, false) => {
                        let g = match self.fixtures.iter().find(|f| &f.name == t) {
                            Some(f) => Golden::Expected(Box::new(f.expected().unwrap())),
                            None => Golden::Snapshot(None),
                        };
                        self.images.insert(t.clone(), g);
                    }
                    (false, true) => {
                        assert!(op == Op::Rmi, "{tag} {op:?} lost image {t}");
                        self.images.remove(t);
                    }
                    _ => {}
                }
            } else {
                let there = conts.contains(t);
                if there && !self.containers.contains(t) {
                    self.containers.push(t.clone());
                } else if !there {
                    self.containers.retain(|c| c != t);
                }
            }
        }
        for n in self.images.keys() {
            assert!(
                imgs.contains(n),
                "{tag} image {n} committed before {op:?} is gone: {imgs:?}"
            );
        }
        for c in &self.containers {
            assert!(
                conts.contains(c),
                "{tag} container {c} is gone after {op:?}: {conts:?}"
            );
        }
        let names: Vec<String> = self.images.keys().cloned().collect();
        for n in names {
            self.verify_image(&n);
        }
        eprintln!(
            "{tag} {op:?} {}: images {}, containers {}",
            if killed { "killed" } else { "completed" },
            self.images.len(),
            self.containers.len()
        );
    }
}

fn run_driver(driver: &str, kills: u64, seed: u64, fixtures: &[Image]) -> Counts {
    let ctl = Ctl::new(driver);
    let sync = std::env::var("LAYERCTL_CRASH_SYNC").unwrap_or_else(|_| "none".into());
    ctl.set_config(&format!("[store]\nsync = \"{sync}\"\n"));
    let files = fixtures
        .iter()
        .map(|i| ctl.write_work(&format!("{}.tar", i.name), &i.docker_save()))
        .collect();
    let mut h = Harness {
        ctl,
        rng: Rng(seed ^ 0x9E37_79B9_7F4A_7C15),
        fixtures,
        files,
        images: BTreeMap::new(),
        containers: Vec::new(),
        mean_ms: BTreeMap::new(),
        seq: 0,
        counts: Counts::default(),
    };
    // Start from a populated store (all fixtures, one container), timing each command
    // so the first kills already land inside the work.
    for (i, f) in fixtures.iter().enumerate() {
        let t = Instant::now();
        let file = h.files[i].clone();
        h.ctl.import(&file, &f.name);
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let m = h.mean_ms.entry(Op::Import).or_insert(ms);
        *m = (*m + ms) / 2.0;
        h.images.insert(
            f.name.clone(),
            Golden::Expected(Box::new(f.expected().unwrap())),
        );
    }
    let t = Instant::now();
    h.ctl.ok(&["create", "c0", "b"]);
    let create = t.elapsed().as_secs_f64() * 1000.0;
    h.containers.push("c0".into());
    let import = h.mean_ms[&Op::Import];
    for (op, ms) in [
        (Op::Create, create),
        (Op::Rm, create),
        (Op::Commit, import / 2.0),
        (Op::Rmi, import / 2.0),
        (Op::Gc, create / 2.0),
    ] {
        h.mean_ms.insert(op, ms);
    }
    let mut total = 0;
    while total < kills {
        h.step();
        total = h.counts.killed.values().sum();
        assert!(
            h.seq < kills * 20 + 100,
            "kills do not land: {:?}",
            h.counts
        );
    }
    let c = std::mem::take(&mut h.counts);
    eprintln!(
        "[{driver}] seed {seed}: {} kills {:?}, completed {:?}; check found {:?}; cleaned by the next start {}, repairs needed {}",
        total, c.killed, c.completed, c.found, c.cleaned_by_start, c.repaired
    );
    c
}

#[test]
fn sigkill_at_random_moments_every_driver() {
    let kills = env_num("LAYERCTL_CRASH_KILLS", 6);
    let seed = env_num("LAYERCTL_CRASH_SEED", 10);
    let only = std::env::var("LAYERCTL_CRASH_DRIVERS").ok();
    let fixtures = images(env_num("LAYERCTL_CRASH_SCALE", 2) as usize);
    let mut all = 0;
    for d in harness::drivers("crash_harness") {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|x| x == d.name))
        {
            continue;
        }
        let c = run_driver(d.name, kills, seed, &fixtures);
        all += c.killed.values().sum::<u64>();
    }
    eprintln!("crash harness: {all} kills in total (seed {seed})");
}
