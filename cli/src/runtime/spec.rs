//! The OCI runtime config (`config.json`) of a run, from the image config and the flags.
//!
//! Starts from oci-spec's default (runc's `runc spec`: new mount, PID, IPC, UTS and
//! network namespaces; `/proc`, a tmpfs `/dev` (the runtime adds the standard device
//! nodes: null, zero, full, random, urandom, tty), `/dev/pts`, `/dev/shm`, `/dev/mqueue`,
//! `/sys` read-only; the default capability set, masked and read-only paths), drops its
//! `/sys/fs/cgroup` mount (a v1 hierarchy need not be mountable where we run), and sets:
//! the root (the container's mounted root, absolute, read-write), the hostname, the
//! process (image Entrypoint + Cmd unless a command is given, image Env then `-e`,
//! WorkingDir or `-w`, User or `-u`), one bind mount per volume (`rbind` plus `ro` for
//! `:ro`; `rprivate` so nothing propagates back; the root itself is left to the
//! runtimes' default, recursive slave), and with `--net host` no network
//! namespace.

use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    LinuxNamespaceType, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, UserBuilder,
};

use super::volume::Volume;
use super::RunError;

/// `PATH` when neither the image nor `-e` sets one (Docker's default).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a run asks for, besides the image's defaults.
#[derive(Debug, Clone, Default)]
pub struct SpecOptions {
    /// Command and arguments (empty: the image's Entrypoint + Cmd).
    pub command: Vec<String>,
    /// `-e K=V` (after the image's Env; a later K wins); a bare `K` unsets K
    /// ([`env_flags`] keeps it bare when the caller has no K).
    pub env: Vec<String>,
    /// `-w DIR`.
    pub workdir: Option<String>,
    /// `-u UID[:GID]` or a user name of the container's /etc/passwd.
    pub user: Option<String>,
    /// `-t`: ask the runtime for a terminal.
    pub terminal: bool,
    /// `--net host`: share the host's network namespace.
    pub host_network: bool,
    /// Volumes, in flag order.
    pub volumes: Vec<Volume>,
    /// UTS hostname.
    pub hostname: String,
}

/// The `-e` flags as the process gets them, Docker's rule: `K=V` as given, a bare `K`
/// takes this process's value of `K`; when this process has no `K`, the bare `K` stays
/// and [`build`] unsets `K` (an image's `Env` value too), as the Docker CLI sends it
/// and moby's `ReplaceOrAppendEnvValues` applies it. Checked before anything is made.
/// Errors: [`RunError::Usage`] for an empty name.
pub fn env_flags(flags: &[String]) -> Result<Vec<String>, RunError> {
    let mut out = Vec::with_capacity(flags.len());
    for kv in flags {
        let (k, v) = match kv.split_once('=') {
            Some((k, v)) => (k, Some(v.to_owned())),
            None => (kv.as_str(), None),
        };
        if k.is_empty() {
            return Err(RunError::Usage(format!("environment {kv:?}: empty name")));
        }
        match v {
            Some(_) => out.push(kv.clone()),
            None => match std::env::var_os(k) {
                Some(host) => out.push(format!("{k}={}", host.to_string_lossy())),
                None => out.push(kv.clone()),
            },
        }
    }
    Ok(out)
}

/// `-w DIR`, checked before anything is made. Errors: [`RunError::Usage`] unless absolute.
pub fn check_workdir(dir: Option<&str>) -> Result<(), RunError> {
    match dir {
        Some(d) if !d.starts_with('/') => Err(RunError::Usage(format!(
            "working directory {d:?}: must be absolute"
        ))),
        _ => Ok(()),
    }
}

/// Builds the runtime config for root filesystem `rootfs` (absolute). `image` is the
/// image config (`None`: no defaults). Errors: [`RunError::Usage`] for no command at
/// all, a bad `K=V` or an unknown user.
pub fn build(
    rootfs: &Path,
    image: Option<&ImageConfiguration>,
    opts: &SpecOptions,
) -> Result<Spec, RunError> {
    let cfg = image.and_then(|i| i.config().as_ref());
    let args: Vec<String> = if opts.command.is_empty() {
        let mut a = cfg.and_then(|c| c.entrypoint().clone()).unwrap_or_default();
        a.extend(cfg.and_then(|c| c.cmd().clone()).unwrap_or_default());
        a
    } else {
        // Docker: a command given replaces Cmd but runs under the Entrypoint.
        let mut a = cfg.and_then(|c| c.entrypoint().clone()).unwrap_or_default();
        a.extend(opts.command.iter().cloned());
        a
    };
    if args.is_empty() {
        return Err(RunError::Usage(
            "no command given and the image has no Entrypoint or Cmd".into(),
        ));
    }
    let mut env: Vec<String> = Vec::new();
    // `K=V` sets K (replacing an earlier value); a bare `K` unsets it where `unset` allows.
    let mut put = |kv: &str, unset: bool| -> Result<(), RunError> {
        let k = match kv.split_once('=') {
            Some((k, _)) => k,
            None if unset => kv,
            None => return Err(RunError::Usage(format!("environment {kv:?}: expected K=V"))),
        };
        if k.is_empty() {
            return Err(RunError::Usage(format!("environment {kv:?}: empty name")));
        }
        env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k));
        if kv.len() > k.len() {
            env.push(kv.to_owned());
        }
        Ok(())
    };
    for kv in cfg.and_then(|c| c.env().clone()).unwrap_or_default() {
        put(&kv, false)?;
    }
    for kv in &opts.env {
        put(kv, true)?;
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_owned());
    }
    let cwd = opts
        .workdir
        .clone()
        .or_else(|| cfg.and_then(|c| c.working_dir().clone()))
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(RunError::Usage(format!(
            "working directory {cwd:?}: must be absolute"
        )));
    }
    let user_spec = opts
        .user
        .clone()
        .or_else(|| cfg.and_then(|c| c.user().clone()))
        .filter(|u| !u.is_empty());
    let (uid, gid) = match user_spec {
        Some(u) => resolve_user(rootfs, &u)?,
        None => (0, 0),
    };
    let usage = |e: oci_spec::OciSpecError| RunError::Usage(format!("runtime config: {e}"));
    let user = UserBuilder::default()
        .uid(uid)
        .gid(gid)
        .build()
        .map_err(usage)?;
    let mut spec = Spec::default();
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(args));
    process.set_env(Some(env));
    process.set_cwd(PathBuf::from(cwd));
    process.set_user(user);
    process.set_terminal(Some(opts.terminal));
    // Builder round trip keeps oci-spec's validation of the process in one place.
    let process = ProcessBuilder::default()
        .args(process.args().clone().unwrap_or_default())
        .env(process.env().clone().unwrap_or_default())
        .cwd(process.cwd().clone())
        .user(process.user().clone())
        .terminal(opts.terminal)
        .capabilities(process.capabilities().clone().unwrap_or_default())
        .rlimits(process.rlimits().clone().unwrap_or_default())
        .no_new_privileges(true)
        .build()
        .map_err(usage)?;
    spec.set_process(Some(process));
    spec.set_root(Some(
        RootBuilder::default()
            .path(rootfs.to_path_buf())
            .readonly(false)
            .build()
            .map_err(usage)?,
    ));
    spec.set_hostname(Some(opts.hostname.clone()));
    let mut mounts: Vec<Mount> = spec
        .mounts()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.destination() != Path::new("/sys/fs/cgroup"))
        .collect();
    for v in &opts.volumes {
        let mut o = vec!["rbind".to_owned(), "rprivate".to_owned()];
        o.push(if v.read_only { "ro" } else { "rw" }.to_owned());
        mounts.push(
            MountBuilder::default()
                .destination(v.container.clone())
                .typ("bind")
                .source(v.host.clone())
                .options(o)
                .build()
                .map_err(usage)?,
        );
    }
    spec.set_mounts(Some(mounts));
    if let Some(linux) = spec.linux_mut() {
        if opts.host_network {
            if let Some(ns) = linux.namespaces_mut() {
                ns.retain(|n| n.typ() != LinuxNamespaceType::Network);
            }
        }
        // No rootfsPropagation: both runtimes then make the container's mounts
        // recursive slaves of the host's, so nothing mounted inside reaches the host.
    }
    Ok(spec)
}

/// `UID[:GID]` (numbers), or a name looked up in the container's `/etc/passwd` (and a
/// `:GROUP` name in `/etc/group`). A number without a group gets gid = uid's passwd gid
/// when listed, else the same number (Docker's rule).
fn resolve_user(rootfs: &Path, spec: &str) -> Result<(u32, u32), RunError> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_db(&rootfs.join("etc/passwd"));
    let (uid, pw_gid) = match u.parse::<u32>() {
        Ok(n) => (n, lookup(&passwd, 2, u).and_then(|f| f[3].parse().ok())),
        Err(_) => {
            let f = lookup(&passwd, 0, u).ok_or_else(|| {
                RunError::Usage(format!(
                    "user {u:?} not found in the container's /etc/passwd"
                ))
            })?;
            let uid = f[2]
                .parse()
                .map_err(|_| RunError::Usage(format!("user {u:?}: bad uid in /etc/passwd")))?;
            (uid, f[3].parse().ok())
        }
    };
    let gid = match g {
        None => pw_gid.unwrap_or(uid),
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let group = read_db(&rootfs.join("etc/group"));
                let f = lookup(&group, 0, g).ok_or_else(|| {
                    RunError::Usage(format!(
                        "group {g:?} not found in the container's /etc/group"
                    ))
                })?;
                f[2].parse()
                    .map_err(|_| RunError::Usage(format!("group {g:?}: bad gid in /etc/group")))?
            }
        },
    };
    Ok((uid, gid))
}

fn read_db(path: &Path) -> Vec<Vec<String>> {
    // Read through the mounted root; a symlinked /etc/passwd in a hostile image could
    // point anywhere on the host, so only a regular file is read.
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => {}
        _ => return Vec::new(),
    }
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect()
}

fn lookup<'a>(db: &'a [Vec<String>], field: usize, value: &str) -> Option<&'a Vec<String>> {
    db.iter().find(|f| f[field] == value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(json: &str) -> ImageConfiguration {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn process_from_image_and_flags() {
        let img = image(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
               "config":{"Entrypoint":["/bin/ep"],"Cmd":["a"],"Env":["A=1","PATH=/x"],"WorkingDir":"/w","User":"7"}}"#,
        );
        let d = tempfile::tempdir().unwrap();
        let mut o = SpecOptions {
            hostname: "h1".into(),
            ..Default::default()
        };
        let s = build(d.path(), Some(&img), &o).unwrap();
        let p = s.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &["/bin/ep", "a"]);
        assert_eq!(p.env().as_ref().unwrap(), &["A=1", "PATH=/x"]);
        assert_eq!(p.cwd(), Path::new("/w"));
        assert_eq!((p.user().uid(), p.user().gid()), (7, 7));
        assert_eq!(s.hostname().as_deref(), Some("h1"));
        assert_eq!(s.root().as_ref().unwrap().path(), d.path());
        o.command = vec!["b".into()];
        o.env = vec!["A=2".into()];
        o.user = Some("0:3".into());
        o.volumes = vec![crate::runtime::volume::parse("/h:/v:ro").unwrap()];
        o.host_network = true;
        let s = build(d.path(), Some(&img), &o).unwrap();
        let p = s.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &["/bin/ep", "b"]);
        assert_eq!(p.env().as_ref().unwrap(), &["PATH=/x", "A=2"]);
        assert_eq!((p.user().uid(), p.user().gid()), (0, 3));
        let m = s.mounts().as_ref().unwrap();
        let v = m
            .iter()
            .find(|m| m.destination() == Path::new("/v"))
            .unwrap();
        assert_eq!(v.options().as_ref().unwrap(), &["rbind", "rprivate", "ro"]);
        assert!(!m
            .iter()
            .any(|m| m.destination() == Path::new("/sys/fs/cgroup")));
        let ns = s.linux().as_ref().unwrap().namespaces().as_ref().unwrap();
        assert!(!ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
        assert!(ns.iter().any(|n| n.typ() == LinuxNamespaceType::Pid));
    }

    #[test]
    fn env_flags_follow_docker() {
        std::env::set_var("LAYERCTL_SPEC_TEST_HOST", "from-host");
        std::env::remove_var("LAYERCTL_SPEC_TEST_UNSET");
        let got = env_flags(&[
            "A=1".into(),
            "LAYERCTL_SPEC_TEST_HOST".into(),
            "LAYERCTL_SPEC_TEST_UNSET".into(),
            "B=".into(),
        ])
        .unwrap();
        assert_eq!(
            got,
            [
                "A=1",
                "LAYERCTL_SPEC_TEST_HOST=from-host",
                "LAYERCTL_SPEC_TEST_UNSET",
                "B="
            ]
        );
        assert!(matches!(env_flags(&["=x".into()]), Err(RunError::Usage(_))));
        assert!(check_workdir(Some("rel")).is_err());
        assert!(check_workdir(Some("/abs")).is_ok() && check_workdir(None).is_ok());
    }

    /// Docker: `-e K` with no K in the caller's environment unsets K, also the image's.
    #[test]
    fn a_bare_name_unsets_the_image_value() {
        let img = image(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
               "config":{"Env":["FOO=image","KEEP=1"]}}"#,
        );
        let d = tempfile::tempdir().unwrap();
        let o = SpecOptions {
            command: vec!["x".into()],
            env: vec!["FOO".into(), "NEVER".into()],
            ..Default::default()
        };
        let s = build(d.path(), Some(&img), &o).unwrap();
        let env = s.process().as_ref().unwrap().env().clone().unwrap();
        assert!(env.iter().any(|e| e == "KEEP=1"), "{env:?}");
        assert!(
            !env.iter()
                .any(|e| e.starts_with("FOO") || e.starts_with("NEVER")),
            "{env:?}"
        );
    }

    #[test]
    fn errors() {
        let d = tempfile::tempdir().unwrap();
        let o = SpecOptions::default();
        assert!(matches!(build(d.path(), None, &o), Err(RunError::Usage(_))));
        let o = SpecOptions {
            command: vec!["x".into()],
            env: vec!["=x".into()],
            ..Default::default()
        };
        assert!(matches!(build(d.path(), None, &o), Err(RunError::Usage(_))));
        let bad = image(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
               "config":{"Env":["NOEQ"]}}"#,
        );
        let o = SpecOptions {
            command: vec!["x".into()],
            ..Default::default()
        };
        assert!(matches!(
            build(d.path(), Some(&bad), &o),
            Err(RunError::Usage(_))
        ));
        let o = SpecOptions {
            command: vec!["x".into()],
            user: Some("nobody".into()),
            ..Default::default()
        };
        assert!(matches!(build(d.path(), None, &o), Err(RunError::Usage(_))));
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "nobody:x:65534:65533::/:/bin/false\n",
        )
        .unwrap();
        let o = SpecOptions {
            command: vec!["x".into()],
            user: Some("nobody".into()),
            ..Default::default()
        };
        let s = build(d.path(), None, &o).unwrap();
        let u = s.process().as_ref().unwrap().user().clone();
        assert_eq!((u.uid(), u.gid()), (65534, 65533));
    }
}
