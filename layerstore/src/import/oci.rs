//! OCI image layouts (directory) and OCI archives (tar of a layout):
//! `oci-layout`, `index.json` -> manifest (through nested indexes, picking the host
//! platform, or the only manifest) -> config + layers. Every blob is checked against its
//! descriptor's sha256 and size; layers while they stream, and their DiffIDs against the
//! config's `rootfs.diff_ids`.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType, ANNOTATION_REF_NAME};
use serde::de::DeserializeOwned;

use super::archive::Archive;
use super::flat::host_arch;
use super::names::{assign, EntryNames};
use super::{verify_bytes, Ctx, ImportOptions};
use crate::error::{Result, StoreError};
use crate::ids::ImageId;
use crate::image::importable_config_diff_ids;
use crate::store::LayerStore;

/// Nested indexes deeper than this are refused (hostile input could loop).
const MAX_INDEX_DEPTH: usize = 4;

/// containerd's name annotation (a full name), preferred to `org.opencontainers.image.ref.name`
/// (which may be a bare tag).
const CONTAINERD_NAME: &str = "io.containerd.image.name";

fn parse<T: DeserializeOwned>(a: &Archive, what: &str, data: &[u8]) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| StoreError::BadJson {
        file: a.path().to_owned(),
        what: what.to_owned(),
        source: e,
    })
}

/// `blobs/sha256/<hex>` for a descriptor, refusing other algorithms.
fn blob_member(a: &Archive, d: &Descriptor) -> Result<(String, String)> {
    let digest = d.digest();
    let alg = digest.algorithm().as_ref().to_owned();
    let hex = digest.digest().to_owned();
    if alg != "sha256" || hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::BadArchive {
            file: a.path().to_owned(),
            reason: format!("unsupported or malformed digest {digest}"),
        });
    }
    Ok((format!("blobs/sha256/{hex}"), hex))
}

/// Reads a small blob and checks its size and digest.
fn read_blob(a: &Archive, d: &Descriptor, what: &str) -> Result<Vec<u8>> {
    let (member, hex) = blob_member(a, d)?;
    let data = a.read_small(&member)?;
    if data.len() as u64 != d.size() {
        return Err(StoreError::SizeMismatch {
            what: format!("{what} {member} in {}", a.path().display()),
            expected: d.size(),
            actual: data.len() as u64,
        });
    }
    verify_bytes(&format!("{what} {member}"), a.path(), &data, &hex)?;
    Ok(data)
}

/// How well the platform of index entry `d` suits this host: `Some(0)` is the plain
/// `linux/<host arch>`, larger is worse, `None` is not runnable here (or no platform).
///
/// Variants follow containerd's matcher (`platforms.Only`): on amd64 `""` and `v1` are
/// the plain platform and preferred; on arm64 `""` and `v8` are. A higher amd64
/// microarchitecture level (`v2`..`v4`) is taken only when no plain entry exists and
/// this CPU has its features (x86-64-v2: SSE4.2, POPCNT; v3: AVX2, BMI2, FMA, MOVBE; v4:
/// AVX-512 F/BW/CD/DQ/VL), the highest such level first; other variants are not
/// runnable.
fn platform_rank(d: &Descriptor) -> Option<u8> {
    let p = d.platform().as_ref()?;
    if p.os().to_string() != "linux" || p.architecture().to_string() != host_arch() {
        return None;
    }
    let variant = p.variant().as_deref().unwrap_or("");
    match (host_arch(), variant) {
        (_, "") | ("amd64", "v1") | ("arm64", "v8") => Some(0),
        ("amd64", v) => {
            let level: u8 = v.strip_prefix('v')?.parse().ok()?;
            ((2..=4).contains(&level) && amd64_level_supported(level)).then(|| 5 - level)
        }
        _ => None,
    }
}

/// Whether this CPU runs x86-64 microarchitecture level `level` (2, 3 or 4).
fn amd64_level_supported(level: u8) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let v2 = has!("sse4.2") && has!("popcnt") && has!("ssse3") && has!("cmpxchg16b");
        let v3 = v2
            && has!("avx2")
            && has!("bmi1")
            && has!("bmi2")
            && has!("fma")
            && has!("lzcnt")
            && has!("movbe")
            && has!("f16c");
        let v4 = v3
            && has!("avx512f")
            && has!("avx512bw")
            && has!("avx512cd")
            && has!("avx512dq")
            && has!("avx512vl");
        match level {
            2 => v2,
            3 => v3,
            4 => v4,
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = level;
        false
    }
}

/// The best entry of `entries` for this host ([`platform_rank`]), the first of equals.
fn best_platform<'d>(entries: impl IntoIterator<Item = &'d Descriptor>) -> Option<&'d Descriptor> {
    entries
        .into_iter()
        .filter_map(|d| platform_rank(d).map(|r| (r, d)))
        .min_by_key(|(r, _)| *r)
        .map(|(_, d)| d)
}

fn is_index(d: &Descriptor) -> bool {
    matches!(d.media_type(), MediaType::ImageIndex)
        || d.media_type().to_string() == "application/vnd.docker.distribution.manifest.list.v2+json"
}

impl LayerStore {
    pub(crate) fn import_oci(
        &self,
        a: &Archive,
        opts: &ImportOptions<'_>,
        ctx: &Ctx<'_>,
    ) -> Result<Vec<ImageId>> {
        let layout = a.read_small("oci-layout")?;
        let v: serde_json::Value = parse(a, "oci-layout", &layout)?;
        if v.get("imageLayoutVersion")
            .and_then(|x| x.as_str())
            .is_none()
        {
            return Err(StoreError::BadArchive {
                file: a.path().to_owned(),
                reason: "oci-layout has no imageLayoutVersion".into(),
            });
        }
        let index: ImageIndex = parse(a, "index.json", &a.read_small("index.json")?)?;
        if index.manifests().is_empty() {
            return Err(StoreError::BadArchive {
                file: a.path().to_owned(),
                reason: "index.json lists no manifests (an empty image layout)".into(),
            });
        }
        let mut tops: Vec<&Descriptor> = index.manifests().iter().collect();
        if tops.iter().any(|d| d.platform().is_some()) && tops.len() > 1 {
            // A multi-platform index at the top: per image name (ref.name; entries
            // without one are one image), keep the best entry for this host.
            let ref_name = |d: &Descriptor| {
                d.annotations()
                    .as_ref()
                    .and_then(|m| m.get(ANNOTATION_REF_NAME).cloned())
            };
            let candidates = tops.clone();
            tops.retain(|d| {
                let name = ref_name(d);
                best_platform(candidates.iter().copied().filter(|c| ref_name(c) == name))
                    .is_some_and(|b| std::ptr::eq(b, *d))
            });
        }
        if tops.is_empty() {
            return Err(StoreError::BadArchive {
                file: a.path().to_owned(),
                reason: format!("index.json has no manifest for linux/{}", host_arch()),
            });
        }
        let entries: Vec<EntryNames> = tops
            .iter()
            .map(|top| {
                let ann = top.annotations().as_ref();
                EntryNames::from_oci(
                    ann.and_then(|m| m.get(CONTAINERD_NAME)).map(String::as_str),
                    ann.and_then(|m| m.get(ANNOTATION_REF_NAME))
                        .map(String::as_str),
                )
            })
            .collect();
        let names = assign(opts.name.as_deref(), &entries);
        for (e, names) in entries.iter().zip(&names) {
            if let (Some(tag), true) = (&e.tag_only, names.is_empty()) {
                tracing::warn!(
                    "{}: index.json names an image only by the tag {tag:?} (ref.name without a \
                     repository); imported without a name (give --name NAME to name it)",
                    a.path().display()
                );
            }
        }
        let mut ids = Vec::new();
        for (top, names) in tops.into_iter().zip(names) {
            let manifest = self.resolve_manifest(a, top, 0)?;
            let id = self.import_oci_manifest(a, &manifest, ctx)?;
            let config = self.image_config(&id)?;
            ids.push(self.register_imported(a.path(), &config, names, ctx)?);
        }
        Ok(ids)
    }

    /// Follows nested indexes down to one image manifest.
    fn resolve_manifest(&self, a: &Archive, d: &Descriptor, depth: usize) -> Result<ImageManifest> {
        if depth > MAX_INDEX_DEPTH {
            return Err(StoreError::BadArchive {
                file: a.path().to_owned(),
                reason: format!("image indexes nested deeper than {MAX_INDEX_DEPTH}"),
            });
        }
        if is_index(d) {
            let data = read_blob(a, d, "index")?;
            let idx: ImageIndex = parse(a, "nested index", &data)?;
            let pick = if idx.manifests().len() == 1 {
                idx.manifests().first()
            } else {
                best_platform(idx.manifests())
            };
            let pick = pick.ok_or_else(|| StoreError::BadArchive {
                file: a.path().to_owned(),
                reason: format!(
                    "nested index {} has no manifest for linux/{}",
                    d.digest(),
                    host_arch()
                ),
            })?;
            return self.resolve_manifest(a, pick, depth + 1);
        }
        let data = read_blob(a, d, "manifest")?;
        parse(a, "image manifest", &data).map_err(|e| {
            // A schema-1 manifest fails the parse (no `config`): say what it is.
            let v: Option<serde_json::Value> = serde_json::from_slice(&data).ok();
            match v.and_then(|v| v.get("schemaVersion")?.as_u64()) {
                Some(1) => StoreError::BadArchive {
                    file: a.path().to_owned(),
                    reason: format!(
                        "manifest {} is Docker's image manifest schema 1, which is not supported (convert it, e.g. `skopeo copy --format oci`)",
                        d.digest()
                    ),
                },
                _ => e,
            }
        })
    }

    /// Imports the layers and config of one manifest; returns the image id (the
    /// config's digest). The image record is written with no names; the caller names it.
    fn import_oci_manifest(
        &self,
        a: &Archive,
        m: &ImageManifest,
        ctx: &Ctx<'_>,
    ) -> Result<ImageId> {
        let config = read_blob(a, m.config(), "config")?;
        let diff_ids = importable_config_diff_ids(a.path(), &config)?;
        if diff_ids.len() != m.layers().len() {
            return Err(StoreError::BadArchive {
                file: a.path().to_owned(),
                reason: format!(
                    "config lists {} diff ids but the manifest {} layers",
                    diff_ids.len(),
                    m.layers().len()
                ),
            });
        }
        let mut members = Vec::new();
        for l in m.layers() {
            let (member, hex) = blob_member(a, l)?;
            let media = l.media_type().to_string();
            if (media.contains("nondistributable") || media.contains("foreign")) && !a.has(&member)
            {
                // OCI image-spec "non-distributable layers" (Docker's "foreign" layers,
                // Windows base images): the archive holds only their URLs.
                return Err(StoreError::BadArchive {
                    file: a.path().to_owned(),
                    reason: format!(
                        "layer {} is a non-distributable layer ({media}) the archive does not hold{}; layerctl does not download layers",
                        l.digest(),
                        match l.urls() {
                            Some(u) if !u.is_empty() => format!(" (its URLs: {})", u.join(", ")),
                            _ => String::new(),
                        }
                    ),
                });
            }
            members.push((member, hex, l.size()));
        }
        let blob_of = |i: usize| {
            let (member, hex, size) = members[i].clone();
            (member, Some((hex, Some(size))))
        };
        self.import_chain(a, &diff_ids, &blob_of, ctx)?;
        self.register_image(a.path(), &config, &[])
    }
}
