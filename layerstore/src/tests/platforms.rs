//! Which entry of a multi-platform index is imported (containerd's matcher: the plain
//! `linux/<arch>` first, amd64 levels the CPU runs only without one), and configs of
//! other operating systems refused.

use super::*;

/// One index entry: architecture, variant, and the config's `os`.
struct Entry {
    arch: &'static str,
    variant: Option<&'static str>,
    os: &'static str,
}

fn entry(arch: &'static str, variant: Option<&'static str>) -> Entry {
    Entry {
        arch,
        variant,
        os: "linux",
    }
}

/// Writes an OCI layout at `dir` with one image per entry (a one-file layer naming the
/// entry), listed in index.json directly (`nested` false) or through one nested index
/// named `multi:1`. Returns each entry's config hex (its image id).
fn layout(dir: &Path, entries: &[Entry], nested: bool) -> Vec<String> {
    let bdir = dir.join("blobs/sha256");
    fs::create_dir_all(&bdir).unwrap();
    let put = |data: &[u8]| {
        let h = sha_hex(data);
        fs::write(bdir.join(&h), data).unwrap();
        serde_json::json!({"digest": format!("sha256:{h}"), "size": data.len()})
    };
    let mut manifests = Vec::new();
    let mut configs = Vec::new();
    for e in entries {
        let label = format!("{}/{}/{}", e.os, e.arch, e.variant.unwrap_or("-"));
        let layer = tar_of(&[("platform", label.as_bytes())]);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": e.arch, "os": e.os,
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha_hex(&layer))]},
        }))
        .unwrap();
        configs.push(sha_hex(&config));
        let mut ld = put(&layer);
        ld["mediaType"] = "application/vnd.oci.image.layer.v1.tar".into();
        let mut cd = put(&config);
        cd["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": cd, "layers": [ld],
        }))
        .unwrap();
        let mut md = put(&manifest);
        md["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
        md["platform"] = serde_json::json!({"architecture": e.arch, "os": e.os});
        if let Some(v) = e.variant {
            md["platform"]["variant"] = v.into();
        }
        manifests.push(md);
    }
    let top = if nested {
        let idx = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))
        .unwrap();
        let mut nd = put(&idx);
        nd["mediaType"] = "application/vnd.oci.image.index.v1+json".into();
        nd["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "multi:1"});
        vec![nd]
    } else {
        manifests
    };
    let index = serde_json::json!({"schemaVersion": 2, "manifests": top});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    configs
}

fn import_all(s: &LayerStore, dir: &Path) -> crate::Result<Vec<ImageId>> {
    Ok(
        s.import(ImportSource::Path(dir), &ImportOptions::default())?
            .images,
    )
}

/// The tests below are written for an amd64 host (CI's); elsewhere they say so and
/// return, since which entry is right depends on the host.
fn amd64_host() -> bool {
    let yes = crate::import::host_arch() == "amd64";
    if !yes {
        eprintln!("platform tests are written for amd64 hosts; this one is not");
    }
    yes
}

/// An index listing amd64/v3 before plain amd64 (nested, and at the top): the plain
/// one is imported, as containerd picks it; before, the first (v3) was taken in a
/// nested index and both at the top.
#[test]
fn the_plain_platform_wins_over_a_microarchitecture_level() {
    if !amd64_host() {
        return;
    }
    for nested in [true, false] {
        let t = tempfile::tempdir().unwrap();
        let s = open(&t.path().join("root"));
        let entries = [
            entry("amd64", Some("v3")),
            entry("amd64", None),
            entry("arm64", Some("v8")),
        ];
        let configs = layout(&t.path().join("l"), &entries, nested);
        let ids = import_all(&s, &t.path().join("l")).unwrap();
        let got: Vec<&str> = ids.iter().map(ImageId::hex).collect();
        assert_eq!(got, [configs[1].as_str()], "nested {nested}");
        assert_eq!(s.layers().unwrap().len(), 1, "nested {nested}");
    }
}

/// Without a plain entry, an amd64 level this CPU runs is taken (v2 here, which every
/// x86-64 CPU of the last decade has), a level no CPU has (v9) never. (A layout of one
/// entry is imported whatever its platform, as before.)
#[test]
fn a_level_the_cpu_runs_is_taken_when_alone() {
    if !amd64_host() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let s = open(&t.path().join("root"));
    let configs = layout(
        &t.path().join("l"),
        &[entry("amd64", Some("v9")), entry("amd64", Some("v2"))],
        true,
    );
    let ids = import_all(&s, &t.path().join("l")).unwrap();
    assert_eq!(ids.last().unwrap().hex(), configs[1]);

    let t = tempfile::tempdir().unwrap();
    let s = open(&t.path().join("root"));
    layout(
        &t.path().join("l"),
        &[entry("amd64", Some("v9")), entry("arm64", None)],
        true,
    );
    let e = import_all(&s, &t.path().join("l")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("no manifest for linux/amd64"), "{e}");
}

/// A config for another OS (a Windows image) is refused before any layer is read
/// (exit 6, not supported), as `docker load` refuses it; before, it was imported.
#[test]
fn an_image_for_another_os_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let s = open(&t.path().join("root"));
    let windows = Entry {
        arch: crate::import::host_arch(),
        variant: None,
        os: "windows",
    };
    layout(&t.path().join("l"), &[windows], false);
    let e = import_all(&s, &t.path().join("l")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotSupported, "{e}");
    assert!(e.to_string().contains("\"windows\""), "{e}");
    assert!(s.layers().unwrap().is_empty());
    assert!(s.images().unwrap().is_empty());
}

/// An OCI layout whose index points to a multi-platform index: the host's platform is
/// picked, only its layer is read, and the nested index's name is the image's.
#[test]
fn oci_nested_index_picks_the_host_platform() {
    let t = tempfile::tempdir().unwrap();
    let s = open(&t.path().join("root"));
    let arches = ["arm64", "amd64", "s390x"];
    let entries: Vec<Entry> = arches.iter().map(|a| entry(a, None)).collect();
    let configs = layout(&t.path().join("l"), &entries, true);
    let host = arches
        .iter()
        .position(|a| *a == crate::import::host_arch())
        .expect("the test covers this host's arch");
    let id = import_file(&s, &t.path().join("l"), None).unwrap();
    assert_eq!(id.hex(), configs[host]);
    assert_eq!(s.image(&id).unwrap().names, vec!["multi:1"]);
    assert_eq!(
        s.layers().unwrap().len(),
        1,
        "only the host's layer was read"
    );
}
