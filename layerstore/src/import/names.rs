//! Which names the images of an archive get (`import [--name NAME]`).
//!
//! Without `--name`, each image gets the names its archive gives it (docker-save
//! `RepoTags`; OCI: containerd's `io.containerd.image.name`, else
//! `org.opencontainers.image.ref.name` when that is a full name). A `ref.name` that is
//! only a tag (`latest`, `1.36`: what `skopeo copy ... oci:DIR:latest` writes; the image
//! spec allows it) names nothing: a tag without a repository is no image name, so the
//! image is imported unnamed (reachable by id; the import logs a note). This is
//! containerd's reading (`ctr import` puts such a tag under `--base-name`); podman's
//! oci-archive load makes `localhost/latest:latest` of it, which names the image after
//! its tag. Give `--name NAME` to name it. With `--name NAME`:
//! - an archive whose entries carry two or more distinct tags (a multi-tag layout, as
//!   `skopeo copy ... oci:DIR:TAG` builds one tag at a time) names every entry
//!   `REPO:TAG`, REPO being NAME without its own tag (containerd's `ctr import
//!   --base-name`), so no tag of the archive is lost;
//! - otherwise the last image gets NAME alone, instead of the archive's names (the
//!   other images of the archive keep theirs).

use std::collections::BTreeSet;

use crate::ids::split_reference;

/// One archive entry (an image reference of the archive): the names it gives its image
/// and the tags of those names.
#[derive(Debug, Clone, Default)]
pub(crate) struct EntryNames {
    /// Full names as the archive gives them.
    pub names: Vec<String>,
    /// The tag of each name (`real:2` -> `2`; an OCI `ref.name` that is a bare tag -> itself).
    pub tags: Vec<String>,
    /// An OCI entry whose only name is a bare-tag `ref.name` (so `names` is empty): that tag.
    pub tag_only: Option<String>,
}

impl EntryNames {
    /// A docker-save entry's `RepoTags`.
    pub(crate) fn from_repo_tags(repo_tags: &[String]) -> Self {
        EntryNames {
            names: repo_tags.to_vec(),
            tags: repo_tags.iter().filter_map(|n| tag_of(n)).collect(),
            tag_only: None,
        }
    }

    /// An OCI index entry: containerd's full name, else the OCI ref name unless that is a
    /// bare tag (which the image spec allows: a tag, no name; see the module doc).
    pub(crate) fn from_oci(containerd: Option<&str>, ref_name: Option<&str>) -> Self {
        let bare = ref_name.filter(|r| is_bare_tag(r));
        let name = containerd.or(ref_name.filter(|_| bare.is_none()));
        let tag_only = bare.filter(|_| name.is_none()).map(str::to_owned);
        let tag = match (ref_name, containerd) {
            (Some(r), _) if is_bare_tag(r) => Some(r.to_owned()),
            (_, Some(c)) => tag_of(c),
            (Some(r), None) => tag_of(r),
            (None, None) => None,
        };
        EntryNames {
            names: name.into_iter().map(str::to_owned).collect(),
            tags: tag.into_iter().collect(),
            tag_only,
        }
    }
}

/// `repo:tag` -> `tag`; none for a digest reference or a name without a tag.
fn tag_of(name: &str) -> Option<String> {
    match split_reference(name) {
        (_, Some(tag), None) => Some(tag.to_owned()),
        _ => None,
    }
}

/// An OCI `ref.name` of the tag form (`1.36`, `latest`): no `/`, `:` or `@`.
fn is_bare_tag(s: &str) -> bool {
    !s.is_empty() && !s.contains(['/', ':', '@'])
}

/// The names each entry's image gets, in entry order (see the module doc).
pub(crate) fn assign(given: Option<&str>, entries: &[EntryNames]) -> Vec<Vec<String>> {
    let Some(given) = given else {
        return entries.iter().map(|e| e.names.clone()).collect();
    };
    let tags: BTreeSet<&String> = entries.iter().flat_map(|e| &e.tags).collect();
    if tags.len() >= 2 {
        let (repo, _, _) = split_reference(given); // without tag or digest
        return entries
            .iter()
            .map(|e| e.tags.iter().map(|t| format!("{repo}:{t}")).collect())
            .collect();
    }
    let last = entries.len().saturating_sub(1);
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            if i == last {
                vec![given.to_owned()]
            } else {
                e.names.clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oci(c: Option<&str>, r: Option<&str>) -> EntryNames {
        EntryNames::from_oci(c, r)
    }

    #[test]
    fn without_name_the_archive_names_stay_and_containerd_names_win() {
        let e = [
            oci(Some("docker.io/library/real:1"), Some("1")),
            oci(None, Some("2")),
            EntryNames::from_repo_tags(&["real:3".into(), "real:latest".into()]),
        ];
        assert_eq!(
            assign(None, &e),
            vec![
                vec!["docker.io/library/real:1".to_owned()],
                Vec::<String>::new(),
                vec!["real:3".to_owned(), "real:latest".to_owned()],
            ]
        );
    }

    /// A bare-tag `ref.name` (`skopeo copy ... oci:DIR:latest`) is a tag, not a name:
    /// without `--name` the image is unnamed; `--name` names it; a full `ref.name` is a
    /// name. Before: the image was named `latest`.
    #[test]
    fn a_bare_tag_ref_name_names_nothing() {
        let e = oci(None, Some("latest"));
        assert!(e.names.is_empty(), "{e:?}");
        assert_eq!(e.tag_only.as_deref(), Some("latest"));
        assert_eq!(e.tags, ["latest"]);
        assert_eq!(
            assign(None, std::slice::from_ref(&e)),
            vec![Vec::<String>::new()]
        );
        assert_eq!(assign(Some("bb"), &[e]), vec![vec!["bb".to_owned()]]);
        let e = oci(None, Some("quay.io/a/b:1"));
        assert_eq!(e.names, ["quay.io/a/b:1"]);
        assert_eq!(e.tag_only, None);
        let e = oci(Some("docker.io/library/bb:1"), Some("1"));
        assert_eq!(e.names, ["docker.io/library/bb:1"]);
        assert_eq!(e.tag_only, None);
    }

    #[test]
    fn a_multi_tag_archive_keeps_every_tag_under_the_given_repo() {
        let e = [
            oci(None, Some("1")),
            oci(None, Some("2")),
            oci(None, Some("latest")),
        ];
        for given in ["myimg", "myimg:v9"] {
            assert_eq!(
                assign(Some(given), &e),
                vec![
                    vec!["myimg:1".to_owned()],
                    vec!["myimg:2".to_owned()],
                    vec!["myimg:latest".to_owned()],
                ]
            );
        }
        let e = [EntryNames::from_repo_tags(&[
            "localhost:5000/a/real:2".into(),
            "real:latest".into(),
        ])];
        assert_eq!(
            assign(Some("localhost:5000/mine"), &e),
            vec![vec![
                "localhost:5000/mine:2".to_owned(),
                "localhost:5000/mine:latest".to_owned()
            ]]
        );
    }

    #[test]
    fn one_tag_or_none_gives_the_last_image_the_name_and_others_keep_theirs() {
        let e = [
            EntryNames::from_repo_tags(&["a:1".into()]),
            EntryNames::default(),
        ];
        assert_eq!(
            assign(Some("mine"), &e),
            vec![vec!["a:1".to_owned()], vec!["mine".to_owned()]]
        );
        let e = [oci(Some("busybox:latest"), Some("latest"))];
        assert_eq!(assign(Some("bb"), &e), vec![vec!["bb".to_owned()]]);
    }

    #[test]
    fn tags_and_repos() {
        assert_eq!(tag_of("reg:5000/a/b:1.2"), Some("1.2".into()));
        assert_eq!(tag_of("reg:5000/a/b"), None);
        assert_eq!(tag_of("a@sha256:00"), None);
        assert_eq!(split_reference("reg:5000/a/b:1.2").0, "reg:5000/a/b");
        assert_eq!(split_reference("reg:5000/a/b").0, "reg:5000/a/b");
        assert_eq!(split_reference("a@sha256:00").0, "a");
    }
}
