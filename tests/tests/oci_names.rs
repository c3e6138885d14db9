//! Names from an OCI layout whose index names an image only by a bare tag
//! (`org.opencontainers.image.ref.name` = `latest`, as `skopeo copy ... oci:DIR:latest`
//! writes): a tag without a repository is no name, so the image is imported unnamed,
//! with a note on stderr, unless `--name` is given (layerstore/src/import/names.rs).
//! Before: the image was named `latest`.

use std::process::Command;

use layerctl_tests::fixtures::{docker_save_of, oci_archive_of, Entry, Layer, LayerBlob};
use layerctl_tests::harness::{self, Ctl};

fn layer() -> Vec<u8> {
    Layer::new(vec![Entry::file("hello", b"hi".to_vec())]).tar()
}

/// (names, id) of every image, from `images --json`.
fn images(ctl: &Ctl) -> Vec<(Vec<String>, String)> {
    ctl.json(&["images"])
        .as_array()
        .expect("images --json is an array")
        .iter()
        .map(|i| {
            let names = i["names"]
                .as_array()
                .expect("names array")
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect();
            (names, i["id"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// Imports `input` without `--name`, then again with `--name bb`.
fn check_bare_tag(ctl: &Ctl, input: &std::path::Path, what: &str) {
    let r = ctl.run(&["import".as_ref(), input.as_os_str()]);
    assert_eq!(r.code, 0, "{what}: {r:?}");
    let id = r.stdout.lines().last().unwrap().to_owned();
    assert!(harness::is_digest(&id), "{what}: {r:?}");
    assert_eq!(images(ctl), vec![(Vec::new(), id.clone())], "{what}");
    assert!(
        r.stderr.contains("only by the tag \"latest\"") && r.stderr.contains("--name"),
        "{what}: a note says why the image has no name: {}",
        r.stderr
    );
    // `latest` does not reach it; its id does.
    ctl.fails(&["create", "c", "latest"], 3);
    ctl.ok(&["create", "c", &id]);
    ctl.ok(&["rm", "c"]);
    let r = ctl.run(&[
        "import".as_ref(),
        input.as_os_str(),
        "--name".as_ref(),
        "bb".as_ref(),
    ]);
    assert_eq!(r.code, 0, "{what}: {r:?}");
    assert_eq!(images(ctl), vec![(vec!["bb".to_owned()], id)], "{what}");
    assert!(
        !r.stderr.contains("only by the tag"),
        "{what}: {}",
        r.stderr
    );
}

#[test]
fn a_bare_tag_ref_name_leaves_the_image_unnamed() {
    let Some(d) = harness::drivers("oci bare tag").into_iter().next() else {
        return;
    };
    let ctl = Ctl::new(d.name);
    let archive = oci_archive_of(&[LayerBlob::plain(layer())]);
    let f = ctl.write_work("oci.tar", &archive);
    check_bare_tag(&ctl, &f, "hand-made OCI archive");
}

/// The same with the layout skopeo itself writes for `oci:DIR:latest`.
#[test]
fn skopeo_oci_dir_with_a_tag() {
    if Command::new("skopeo").arg("--version").output().is_err() {
        let msg = "oci bare tag: skopeo is not installed (scripts/test.sh installs it)";
        assert!(!harness::privileged_required(), "{msg}");
        eprintln!("SKIP {msg}");
        return;
    }
    let Some(d) = harness::drivers("oci bare tag skopeo").into_iter().next() else {
        return;
    };
    let ctl = Ctl::new(d.name);
    let src = ctl.write_work("src.tar", &docker_save_of("src", &[layer()]));
    let dir = ctl.work.join("layout");
    let o = Command::new("skopeo")
        .arg("copy")
        .arg("--quiet")
        .arg(format!("docker-archive:{}", src.display()))
        .arg(format!("oci:{}:latest", dir.display()))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let index = std::fs::read_to_string(dir.join("index.json")).unwrap();
    assert!(
        index.contains(r#""org.opencontainers.image.ref.name":"latest""#),
        "skopeo writes a bare-tag ref.name: {index}"
    );
    check_bare_tag(&ctl, &dir, "skopeo oci:DIR:latest");
}
