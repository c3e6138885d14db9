//! `layerctl run` end to end, on every driver of `harness::DRIVERS` and with both
//! runtimes (youki's libcontainer in-process, and runc from PATH): inside the container
//! PID 1 is the command, the hostname is the given one (UTS and /etc/hostname), the
//! mount table has the container root at `/` and no mount point outside it, /dev/null
//! works, a write to `/` lands in the container's rw layer and in no image layer, a
//! volume write appears on the host and not in the rw layer, a `:ro` volume refuses
//! writes, the exit status passes through, `diff` lists the root write and not the
//! volume; `--rm` leaves no container, mount or layer (`check` and `gc --dry-run`
//! clean); a run that cannot start exits with its own code, one line on stderr, and
//! leaves nothing; the container's stderr comes through unchanged and at once; SIGTERM
//! and SIGINT reach the container process; /sys is read-only, IPC and network
//! namespaces are new (`--net host`: the host's); `-t` gives a new pty of the
//! container's devpts, sized like the caller's, with input relayed and the caller's
//! terminal mode restored.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use layerctl_tests::fixtures::busybox_tar;
use layerctl_tests::harness::{self, Ctl};
use layerctl_tests::small_disk::SmallDisk;

/// The runtimes every test runs with (`--runtime`).
const RUNTIMES: &[&str] = &["libcontainer", "runc"];

/// Whether `runc` is on PATH (scripts/test.sh and .ci/run install it); panics under
/// LAYERCTL_REQUIRE_PRIVILEGED=1 when it is not.
fn runtime_available(rt: &str) -> bool {
    if rt == "libcontainer" {
        return true;
    }
    let found = std::process::Command::new(rt)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let msg = format!("run [{rt}]: {rt} not on PATH");
        assert!(
            !harness::privileged_required(),
            "{msg} (LAYERCTL_REQUIRE_PRIVILEGED=1)"
        );
        eprintln!("SKIP {msg}");
    }
    found
}

/// A store for `driver` with busybox imported as `busybox`; None when the fixture
/// cannot be built (skip, or panic when privileged tests are required).
fn store_with_busybox(driver: &str) -> Option<Ctl> {
    let ctl = Ctl::new(driver);
    let tar = ctl.work.join("busybox.tar");
    if let Err(e) = busybox_tar(&tar) {
        assert!(!harness::privileged_required(), "{e:#}");
        eprintln!("SKIP run [{driver}]: {e:#}");
        return None;
    }
    ctl.import(&tar, "busybox");
    Some(ctl)
}

/// Lines of `out` starting with `key=`, values only.
fn values<'a>(out: &'a str, key: &str) -> Vec<&'a str> {
    out.lines()
        .filter_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .collect()
}

/// The container's mount id from `ps --json`.
fn mount_id(ctl: &Ctl, name: &str) -> String {
    let ps = ctl.json(&["ps"]);
    ps.as_array()
        .expect("ps array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("container {name} not in {ps}"))["mount_id"]
        .as_str()
        .expect("mount_id")
        .to_owned()
}

/// Asserts the store holds no container, no mount and nothing `check`/`gc` would flag.
fn assert_nothing_left(ctl: &Ctl, what: &str) {
    let ps = ctl.json(&["ps"]);
    assert_eq!(
        ps.as_array().map(Vec::len),
        Some(0),
        "{what}: containers left: {ps}"
    );
    let mounts = harness::mounts_under(ctl.base());
    assert!(mounts.is_empty(), "{what}: mounts left: {mounts:?}");
    ctl.ok(&["check"]);
    let gc = ctl.json(&["gc", "--dry-run"]);
    for k in ["layers", "orphans", "leftovers"] {
        assert_eq!(
            gc[k].as_array().map(Vec::len),
            Some(0),
            "{what}: gc would delete {k}: {gc}"
        );
    }
}

const SCRIPT: &str = r#"
echo pid=$$
echo host=$(hostname)
echo etc=$(cat /etc/hostname)
while read -r a b c root mnt rest; do echo "mi=$root $mnt"; done < /proc/self/mountinfo
echo gone > /dev/null && test -c /dev/null && echo devnull=ok
echo net=$(ls /sys/class/net | tr '\n' ' ')
echo loflags=$(cat /sys/class/net/lo/flags)
echo root-write > /rootfile
echo volume-write > /data/written
if touch /ro/x 2>/dev/null; then echo ro=writable; else echo ro=refused; fi
cat /ro/seed
while read -r a b c root mnt opts rest; do [ "$mnt" = /sys ] && echo sysopts=$opts; done < /proc/self/mountinfo
echo ipcns=$(readlink /proc/self/ns/ipc)
echo netns=$(readlink /proc/self/ns/net)
echo hosts=$(grep box1 /etc/hosts | tr '\t' ' ')
sed 's/^/resolv=/' /etc/resolv.conf
exit 7
"#;

fn full_run(ctl: &Ctl, rt: &str) {
    let d = &ctl.driver;
    let vol = ctl.work.join("vol"); // missing: run makes it
    let ro = ctl.work.join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("seed"), "seed-line\n").unwrap();
    let name = format!("c-{rt}");
    let r = ctl.run(&[
        "run",
        "--runtime",
        rt,
        "--name",
        &name,
        "--hostname",
        "box1",
        "-v",
        &format!("{}:/data", vol.display()),
        "-v",
        &format!("{}:/ro:ro", ro.display()),
        "busybox",
        "--",
        "sh",
        "-c",
        SCRIPT,
    ]);
    let ctx = format!("[{d} {rt}] stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert_eq!(r.code, 7, "exit status passes through {ctx}");
    let out = &r.stdout;
    assert_eq!(values(out, "pid"), ["1"], "PID 1 is the command {ctx}");
    assert_eq!(values(out, "host"), ["box1"], "{ctx}");
    assert_eq!(values(out, "etc"), ["box1"], "{ctx}");
    assert_eq!(values(out, "devnull"), ["ok"], "{ctx}");
    // A new network namespace: loopback only, and up (IFF_UP = 0x1).
    assert_eq!(values(out, "net"), ["lo"], "{ctx}");
    let flags = values(out, "loflags");
    let flags = u32::from_str_radix(flags[0].trim_start_matches("0x"), 16).expect("lo flags");
    assert_eq!(flags & 1, 1, "lo is up {ctx}");
    assert_eq!(values(out, "ro"), ["refused"], "{ctx}");
    // /sys read-only; new IPC and network namespaces (this test runs in the host's).
    let sys = values(out, "sysopts");
    assert!(
        sys.len() == 1 && sys[0].split(',').any(|o| o == "ro"),
        "/sys read-only {ctx}"
    );
    for ns in ["ipc", "net"] {
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let inner = values(out, &format!("{ns}ns"));
        assert!(
            inner.len() == 1
                && inner[0].starts_with(&format!("{ns}:["))
                && Path::new(inner[0]) != host,
            "a new {ns} namespace {ctx}"
        );
    }
    // The init layer's /etc/hosts names the hostname; /etc/resolv.conf is the host's.
    assert_eq!(values(out, "hosts"), ["127.0.1.1 box1"], "{ctx}");
    if let Ok(host_resolv) = std::fs::read_to_string("/etc/resolv.conf") {
        assert_eq!(
            values(out, "resolv"),
            host_resolv.lines().collect::<Vec<_>>(),
            "{ctx}"
        );
    }
    assert!(
        out.contains("seed-line"),
        "the :ro volume is readable {ctx}"
    );
    // Mount table: root at `/`; every mount point inside the container's tree, none
    // naming a host path (the store or the volumes' host side).
    let mi: Vec<(&str, &str)> = values(out, "mi")
        .into_iter()
        .map(|l| l.split_once(' ').expect("root mountpoint"))
        .collect();
    let root = mi
        .iter()
        .find(|(_, m)| *m == "/")
        .unwrap_or_else(|| panic!("no / mount {ctx}"));
    if ctl.spec.mounts() {
        // The container root is the driver's own mount, seen from its top.
        assert_eq!(root.0, "/", "{ctx}");
    }
    let base = ctl.base().to_string_lossy().into_owned();
    for (_, m) in &mi {
        assert!(
            m.starts_with('/') && !m.contains(&*base),
            "host path as mount point: {m} {ctx}"
        );
    }
    for want in [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/sys", "/data", "/ro",
    ] {
        assert!(mi.iter().any(|(_, m)| *m == want), "{want} mounted {ctx}");
    }
    // The volume write is on the host; the :ro volume is unchanged.
    assert_eq!(
        std::fs::read_to_string(vol.join("written")).unwrap(),
        "volume-write\n"
    );
    assert!(!ro.join("x").exists());
    // The root write is in the rw layer, in no image layer; the volume is not there,
    // nor the mount points run made.
    let rw = ctl.layer_dir(&mount_id(ctl, &name));
    assert_eq!(
        std::fs::read_to_string(rw.join("rootfile")).unwrap(),
        "root-write\n",
        "{ctx}"
    );
    for p in ["data", "ro", "data/written"] {
        assert!(!rw.join(p).exists(), "{p} in the rw layer {ctx}");
    }
    for layer in ctl.image_layer_dirs("busybox") {
        assert!(
            !layer.join("rootfile").exists(),
            "rootfile in image layer {}",
            layer.display()
        );
    }
    let diff = ctl.ok(&["diff", &name]);
    assert_eq!(
        diff.lines().collect::<Vec<_>>(),
        ["A /rootfile"],
        "[{d} {rt}] diff"
    );
    // Unmounted after the run.
    assert!(harness::mounts_under(ctl.base()).is_empty(), "{ctx}");
    let ps = ctl.json(&["ps"]);
    assert_eq!(ps[0]["mount_count"], 0, "{ps}");
    // The same container runs again (reused by --name), its file still there.
    let r = ctl.run(&[
        "run",
        "--runtime",
        rt,
        "--name",
        &name,
        "busybox",
        "--",
        "cat",
        "/rootfile",
    ]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "root-write\n"),
        "[{d} {rt}] rerun {}",
        r.stderr
    );
    // --rm with --name of a container of another image: refused (2), and the
    // container, not made by this run, stays.
    ctl.ok(&["commit", &name, "--name", "other"]);
    let r = ctl.fails(
        &[
            "run",
            "--runtime",
            rt,
            "--rm",
            "--name",
            &name,
            "other",
            "--",
            "true",
        ],
        2,
    );
    assert_eq!(r.stderr.lines().count(), 1, "[{d} {rt}] {:?}", r.stderr);
    let ps = ctl.json(&["ps"]);
    assert_eq!(
        ps[0]["name"],
        name.as_str(),
        "[{d} {rt}] container kept: {ps}"
    );
    ctl.ok(&["rm", &name]);
    ctl.ok(&["rmi", "other"]);
    std::fs::remove_dir_all(&vol).unwrap();
}

fn rm_leaves_nothing(ctl: &Ctl, rt: &str) {
    let r = ctl.run(&[
        "run",
        "--runtime",
        rt,
        "--rm",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo x > /f; mkdir /d",
    ]);
    assert_eq!(r.code, 0, "[{} {rt}] {}", ctl.driver, r.stderr);
    assert_nothing_left(ctl, &format!("[{} {rt}] --rm", ctl.driver));
}

fn failures_leave_nothing(ctl: &Ctl, rt: &str) {
    let d = &ctl.driver;
    // The runtime cannot start the command: 125, one line, nothing left; with -t too
    // (another path: create + start).
    for extra in [&[][..], &["-t"][..]] {
        let mut args = vec!["run", "--runtime", rt];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["busybox", "--", "/no/such/command"]);
        let r = ctl.fails(&args, 125);
        // The whole of stderr is our one line: not the runtime's own copy of it too.
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "[{d} {rt}] {args:?} one line: {:?}",
            r.stderr
        );
        assert!(
            lines[0].starts_with("layerctl: ") && lines[0].contains("/no/such/command"),
            "[{d} {rt}] {args:?} {:?}",
            r.stderr
        );
        assert_nothing_left(ctl, &format!("[{d} {rt}] {args:?} runtime failure"));
    }
    // Bad volume spec: usage (2), before anything is made.
    let r = ctl.fails(
        &[
            "run",
            "--runtime",
            rt,
            "-v",
            "relative:/x",
            "busybox",
            "--",
            "true",
        ],
        2,
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    // A volume over a symlink in the image: refused (5), nothing left.
    let r = ctl.fails(
        &[
            "run",
            "--runtime",
            rt,
            "-v",
            &format!("{}:/bin/sh/x", ctl.work.join("v2").display()),
            "busybox",
            "--",
            "true",
        ],
        5,
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    // Unknown image: not found (3), one line, with or without --rm (which has no
    // container to remove).
    for extra in [&[][..], &["--rm"][..]] {
        let mut args = vec!["run", "--runtime", rt];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["nosuchimage", "--", "true"]);
        let r = ctl.fails(&args, 3);
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {:?}", r.stderr);
    }
    assert_nothing_left(ctl, &format!("[{d} {rt}] failures"));
}

/// The container's own stderr comes through unchanged (no newline needed, bytes as
/// written) and as it is written, not when the run ends; its status too.
fn container_stderr_passes_through(ctl: &Ctl, rt: &str) {
    let d = &ctl.driver;
    let r = ctl.run(&[
        "run",
        "--runtime",
        rt,
        "--rm",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo out; printf 'err line\\n\\001tail' >&2; exit 9",
    ]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (9, "out\n", "err line\n\u{1}tail"),
        "[{d} {rt}]"
    );
    // Promptly: a partial line on stderr arrives while the process still runs.
    let mut child = ctl
        .cmd()
        .args(["run", "--runtime", rt, "--rm", "busybox", "--", "sh", "-c"])
        .arg("trap 'exit 43' TERM; printf ready >&2; sleep 60 & wait")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn layerctl run");
    let mut err = child.stderr.take().unwrap();
    let mut got = [0u8; 5];
    std::io::Read::read_exact(&mut err, &mut got).unwrap();
    assert_eq!(&got, b"ready", "[{d} {rt}]");
    let k = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(k.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(43), "[{d} {rt}] {rest}");
    assert_eq!(rest, "", "[{d} {rt}]");
    assert_nothing_left(ctl, &format!("[{d} {rt}] stderr"));
}

fn signals_reach_the_process(ctl: &Ctl, rt: &str) {
    for (sig, code) in [("TERM", 42), ("INT", 44), ("USR1", 45)] {
        let mut child = ctl
            .cmd()
            .args(["run", "--runtime", rt, "--rm", "busybox", "--", "sh", "-c"])
            .arg(format!(
                "trap 'exit {code}' {sig}; echo ready; sleep 60 & wait"
            ))
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn layerctl run");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n");
        let t = Instant::now();
        let k = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(k.success());
        let st = child.wait().unwrap();
        assert_eq!(
            st.code(),
            Some(code),
            "[{} {rt}] SIG{sig}: the trap's status",
            ctl.driver
        );
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "ended by the signal, not by sleep"
        );
        assert_nothing_left(ctl, &format!("[{} {rt}] SIG{sig}", ctl.driver));
    }
}

/// `--net host`: the host's network namespace; still new IPC and UTS ones.
fn host_network(ctl: &Ctl, rt: &str) {
    let r = ctl.run(&[
        "run",
        "--runtime",
        rt,
        "--rm",
        "--net",
        "host",
        "busybox",
        "--",
        "sh",
        "-c",
        "readlink /proc/self/ns/net; readlink /proc/self/ns/ipc",
    ]);
    let ctx = format!("[{} {rt}] --net host: {r:?}", ctl.driver);
    assert_eq!(r.code, 0, "{ctx}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    let host = |ns: &str| std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
    assert_eq!(lines.len(), 2, "{ctx}");
    assert_eq!(Path::new(lines[0]), host("net"), "{ctx}");
    assert_ne!(Path::new(lines[1]), host("ipc"), "{ctx}");
    assert_nothing_left(ctl, &ctx);
}

fn tty_passes_through(ctl: &Ctl, rt: &str) {
    let d = &ctl.driver;
    // `script` (util-linux, essential on Debian) gives layerctl a terminal (the outer
    // one) whose size we set; with -t the container gets a new pty of its own devpts
    // (a file of /dev/pts inside, on another filesystem than the outer pty: docker and
    // runc do the same; handing the caller's terminal in would let the container push
    // input into it with TIOCSTI), sized like the outer one; what is typed into the
    // outer terminal reaches the container; its status passes through; the outer
    // terminal's mode is the same after the run as before.
    let inner = "test -t 0 && test -t 1 && echo TTY || echo NOTTY; \
                 t=$(tty); echo tty=$t; test -e $t && echo dev=$(stat -c %d $t); \
                 echo size=$(stty size); read x; echo got:$x; exit 3";
    let cmdline = format!(
        "stty rows 33 cols 101; echo outer=$(stat -c %d $(tty)); echo before=$(stty -g); \
         {} --root {} --driver {} run --rm -t --runtime {rt} busybox -- sh -c '{inner}'; \
         echo status=$?; echo after=$(stty -g)",
        ctl.bin.display(),
        ctl.root.display(),
        ctl.driver
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &cmdline, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script");
    // Typed ahead: the outer terminal holds it until someone reads it.
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"typed-in\n").unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).replace('\r', "");
    let ctx = format!(
        "[{d} {rt}] -t: {out:?} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("TTY\n") && !out.contains("NOTTY"), "{ctx}");
    let tty = values(&out, "tty");
    assert!(
        tty.len() == 1 && tty[0].starts_with("/dev/pts/"),
        "a pty of the container: {ctx}"
    );
    let (outer, dev) = (values(&out, "outer"), values(&out, "dev"));
    assert!(
        outer.len() == 1 && dev.len() == 1 && outer != dev,
        "the container's pty is not the outer one: {ctx}"
    );
    assert_eq!(values(&out, "size"), ["33 101"], "{ctx}");
    assert!(out.contains("got:typed-in\n"), "input reaches it: {ctx}");
    assert_eq!(values(&out, "status"), ["3"], "{ctx}");
    let (before, after) = (values(&out, "before"), values(&out, "after"));
    assert!(
        before.len() == 1 && before == after,
        "outer terminal mode restored: {ctx}"
    );
    // Without a terminal (pipes) the process sees none.
    let probe = "test -t 0 && test -t 1 && echo TTY || echo NOTTY";
    let r = ctl.run(&[
        "run",
        "--rm",
        "--runtime",
        rt,
        "busybox",
        "--",
        "sh",
        "-c",
        probe,
    ]);
    assert_eq!(r.stdout, "NOTTY\n", "[{d} {rt}] {}", r.stderr);
    assert_nothing_left(ctl, &format!("[{d} {rt}] -t"));
}

/// `-t` in the background of a shell on the outer terminal (stdin explicitly the
/// terminal): a window size change of the outer terminal reaches the container's pty
/// (its SIGWINCH trap prints the new size), and a run ended by SIGTERM restores the
/// outer terminal's mode too.
fn tty_resize_and_signal(ctl: &Ctl, rt: &str) {
    let d = &ctl.driver;
    let sig = ctl.work.join(format!("sig-{rt}"));
    let _ = std::fs::remove_dir_all(&sig);
    std::fs::create_dir_all(&sig).unwrap();
    let run = format!(
        "{} --root {} --driver {} run --rm -t --runtime {rt} -v {}:/sig busybox --",
        ctl.bin.display(),
        ctl.root.display(),
        ctl.driver,
        sig.display()
    );
    let s = sig.display();
    // The container loops at most 20 s, so a lost signal fails instead of hanging.
    let cmdline = format!(
        "stty rows 33 cols 101; echo before=$(stty -g); \
         {run} sh -c 'trap \"echo resized=\\$(stty size); exit 6\" WINCH; touch /sig/a; \
           i=0; while [ $i -lt 20 ]; do sleep 1; i=$((i+1)); done; exit 9' </dev/tty & \
         while [ ! -e {s}/a ]; do sleep 0.1; done; stty rows 40 cols 120; \
         wait $!; echo wstatus=$?; \
         {run} sh -c 'trap \"exit 5\" TERM; touch /sig/b; sleep 20 & wait' </dev/tty & \
         while [ ! -e {s}/b ]; do sleep 0.1; done; kill -TERM $!; \
         wait $!; echo tstatus=$?; echo after=$(stty -g)"
    );
    // script's stdin stays open (no end of file, which script passes on as a byte to
    // the terminal, raw at that moment) until it is done.
    let mut child = std::process::Command::new("timeout")
        .args(["120", "script", "-qec", &cmdline, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script");
    let stdin = child.stdin.take();
    let o = child.wait_with_output().unwrap();
    drop(stdin);
    let out = String::from_utf8_lossy(&o.stdout).replace('\r', "");
    let ctx = format!(
        "[{d} {rt}] -t: {out:?} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(values(&out, "resized"), ["40 120"], "{ctx}");
    assert_eq!(values(&out, "wstatus"), ["6"], "{ctx}");
    assert_eq!(values(&out, "tstatus"), ["5"], "{ctx}");
    let (before, after) = (values(&out, "before"), values(&out, "after"));
    assert!(
        before.len() == 1 && before == after,
        "outer terminal mode restored: {ctx}"
    );
    std::fs::remove_dir_all(&sig).unwrap();
    assert_nothing_left(ctl, &format!("[{d} {rt}] -t resize"));
}

fn bundle_for_runc(ctl: &Ctl) {
    // `bundle` writes a config any runtime takes; runc runs it by hand.
    ctl.ok(&["create", "b1", "busybox"]);
    let dir = ctl.work.join("bundle");
    let out = ctl.ok(&[
        "bundle",
        "b1",
        dir.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "hostname; echo b > /bfile",
    ]);
    assert_eq!(Path::new(out.trim()), dir);
    let st = std::process::Command::new("runc")
        .args([
            "--root",
            ctl.work.join("runc-state").to_str().unwrap(),
            "run",
            "--bundle",
        ])
        .arg(&dir)
        .arg(format!("layerctl-test-{}", std::process::id()))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&st.stdout), "b1\n");
    ctl.ok(&["umount", "b1"]);
    assert_eq!(ctl.ok(&["diff", "b1"]).trim(), "A /bfile");
    ctl.ok(&["rm", "b1"]);
    assert_nothing_left(ctl, &format!("[{}] bundle", ctl.driver));
}

/// A `run` killed with SIGKILL (no cleanup possible) leaves its bundle directory and,
/// in process, the runtime's state; the next run removes both once the killed run's
/// processes are gone. The container itself stays, mounted: `umount` and `rm` take it.
fn a_killed_run_is_swept(ctl: &Ctl, rt: &str) {
    let d = &ctl.driver;
    let mut child = ctl
        .cmd()
        .args(["run", "--runtime", rt, "--name", "killed", "busybox", "--"])
        .args(["sh", "-c", "echo ready; exec sleep 2"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn layerctl run");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    let pid = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    let bundle = Path::new("/run/layerctl/bundles").join(format!("killed.{pid}"));
    let state = Path::new("/run/layerctl/libcontainer").join("layerctl-killed");
    assert!(
        bundle.exists(),
        "[{d} {rt}] the premise: a killed run leaves its bundle"
    );
    // The container's own process (orphaned) ends by itself.
    std::thread::sleep(Duration::from_secs(3));
    ctl.ok(&["run", "--rm", "--runtime", rt, "busybox", "--", "true"]);
    assert!(
        !bundle.exists(),
        "[{d} {rt}] the killed run's bundle is left"
    );
    assert!(
        !state.exists(),
        "[{d} {rt}] the killed run's runtime state is left"
    );
    ctl.ok(&["umount", "killed"]);
    ctl.ok(&["rm", "killed"]);
    assert_nothing_left(ctl, &format!("[{d} {rt}] killed run"));
}

/// `-w` to a missing directory makes it (as runc and Docker do; libcontainer alone
/// failed with 125), `-e NAME` takes the caller's value (Docker's rule; a bare unset
/// name is dropped), and a run refused for a flag makes no volume directory on the host.
fn docker_flag_rules(ctl: &Ctl, rt: &str) {
    let d = &ctl.driver;
    let out = ctl
        .cmd()
        .env("LAYERCTL_RUN_TEST_VAR", "from the caller")
        .env_remove("LAYERCTL_RUN_TEST_UNSET")
        .args(["run", "--rm", "--runtime", rt, "-w", "/srv/new/wd"])
        .args(["-e", "LAYERCTL_RUN_TEST_VAR", "-e", "LAYERCTL_RUN_TEST_UNSET"])
        .args(["busybox", "--", "sh", "-c"])
        .arg("pwd; echo \"var=$LAYERCTL_RUN_TEST_VAR\"; echo \"unset=${LAYERCTL_RUN_TEST_UNSET-none}\"")
        .output()
        .expect("spawn layerctl run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "[{d} {rt}] -w to a missing dir: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout, "/srv/new/wd\nvar=from the caller\nunset=none\n",
        "[{d} {rt}]"
    );
    let host = ctl.work.join(format!("never-made-{rt}"));
    let vol = format!("{}:/data", host.display());
    ctl.fails(
        &[
            "run",
            "--rm",
            "--runtime",
            rt,
            "-v",
            &vol,
            "-u",
            "nosuchuser",
            "busybox",
            "--",
            "true",
        ],
        2,
    );
    assert!(
        !host.exists(),
        "[{d} {rt}] a refused run made the volume's host directory"
    );
    assert_nothing_left(ctl, &format!("[{d} {rt}] docker flag rules"));
}

#[test]
fn run_on_every_driver_and_runtime() {
    for spec in harness::drivers("run") {
        let Some(ctl) = store_with_busybox(spec.name) else {
            return;
        };
        for rt in RUNTIMES.iter().copied().filter(|r| runtime_available(r)) {
            full_run(&ctl, rt);
            rm_leaves_nothing(&ctl, rt);
            failures_leave_nothing(&ctl, rt);
            container_stderr_passes_through(&ctl, rt);
            signals_reach_the_process(&ctl, rt);
            host_network(&ctl, rt);
            tty_passes_through(&ctl, rt);
            tty_resize_and_signal(&ctl, rt);
            docker_flag_rules(&ctl, rt);
            a_killed_run_is_swept(&ctl, rt);
        }
        if runtime_available("runc") {
            bundle_for_runc(&ctl);
        }
        let forced = ctl.cleanup_mounts();
        assert!(
            forced.is_empty(),
            "[{}] mounts had to be forced: {forced:?}",
            spec.name
        );
    }
}

/// A run that fails for a reason of ours with no exit code of its own (here a full disk
/// while the container is made) exits 125, Docker's code for "the run did not start",
/// with one line naming the cause: before, it exited 1, which a caller cannot tell from
/// the process's own status 1. The store is left as `check` accepts, with no container.
#[test]
fn a_run_that_fails_on_a_full_disk_exits_125() {
    for spec in harness::drivers("a_run_that_fails_on_a_full_disk_exits_125") {
        let mut ctl = Ctl::new(spec.name);
        let disk = SmallDisk::mount(48 << 20);
        ctl.root = disk.dir.join("root");
        let tar = ctl.work.join("busybox.tar");
        if let Err(e) = busybox_tar(&tar) {
            assert!(!harness::privileged_required(), "{e:#}");
            eprintln!("SKIP a_run_that_fails_on_a_full_disk_exits_125: {e:#}");
            return;
        }
        ctl.import(&tar, "busybox");
        let fill = disk.dir.join("fill");
        std::fs::create_dir(&fill).unwrap();
        assert!(SmallDisk::fill(&fill) > 0, "[{}] disk filled", spec.name);
        for rt in RUNTIMES.iter().copied().filter(|r| runtime_available(r)) {
            let r = ctl.fails(
                &["run", "--rm", "--runtime", rt, "busybox", "--", "true"],
                125,
            );
            assert_eq!(
                r.stderr.lines().count(),
                1,
                "[{} {rt}] one line: {r:?}",
                spec.name
            );
            assert!(
                r.stderr.contains("No space left on device"),
                "[{} {rt}] names the cause: {r:?}",
                spec.name
            );
            assert_eq!(
                ctl.json(&["ps"]).as_array().map(Vec::len),
                Some(0),
                "[{} {rt}] no container left",
                spec.name
            );
        }
        std::fs::remove_dir_all(&fill).unwrap();
        ctl.ok(&["check"]);
        drop(ctl);
        drop(disk);
    }
}
