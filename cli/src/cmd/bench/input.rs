//! The bench input: a tar given with `--image`, or a generated tree of realistic shape
//! (many small files, a few large ones, hard links, symlinks, deep directories) written
//! as a flat rootfs tar, so `layerctl bench` works on a fresh machine.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

/// Shape of the generated tree. Sizes in bytes.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Shape {
    /// Small regular files (spread over `dirs` directories).
    pub small_files: usize,
    /// Largest small file; sizes are spread from 64 bytes up to this.
    pub small_max: usize,
    /// Large regular files (incompressible), in `/large/`.
    pub large_files: usize,
    /// Size of each large file.
    pub large_size: usize,
    /// Directories holding the small files, nested up to `depth` levels.
    pub dirs: usize,
    /// Deepest nesting of directories.
    pub depth: usize,
    /// Hard links to small files (each a second name in another directory).
    pub hard_links: usize,
    /// Symbolic links (relative, to files and directories).
    pub symlinks: usize,
}

impl Shape {
    /// The default generated input: ~3,000 small files (a distro's /usr/share looks like
    /// this), 8 large files of 4 MiB, 40 hard links, 200 symlinks, dirs 12 deep.
    pub const DEFAULT: Shape = Shape {
        small_files: 3000,
        small_max: 16 * 1024,
        large_files: 8,
        large_size: 4 << 20,
        dirs: 150,
        depth: 12,
        hard_links: 40,
        symlinks: 200,
    };
    /// `--quick`: the same shape, tiny (a test runs it in seconds).
    pub const QUICK: Shape = Shape {
        small_files: 120,
        small_max: 4096,
        large_files: 2,
        large_size: 256 * 1024,
        dirs: 12,
        depth: 6,
        hard_links: 5,
        symlinks: 10,
    };
}

/// Counts of what a tar holds (shown in the report).
#[derive(Debug, Default, Clone, Serialize)]
pub struct InputStats {
    /// The tar file.
    pub path: PathBuf,
    /// "generated" or "file".
    pub origin: &'static str,
    /// The generator's shape, when generated.
    pub shape: Option<Shape>,
    /// Size of the tar file.
    pub tar_bytes: u64,
    /// Sum of regular file sizes.
    pub content_bytes: u64,
    /// Entries by type.
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hard_links: u64,
    pub other: u64,
    /// The tar is an image archive (docker-save or OCI: it holds `manifest.json`,
    /// `index.json` or `oci-layout` at the top), not a flat root filesystem; the peers
    /// that take one layer are skipped then.
    pub image_archive: bool,
}

/// xorshift64*: deterministic filler and sizes, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(size);
    h
}

/// Writes the generated tree as a flat rootfs tar to `out` (deterministic for a shape).
pub fn generate(shape: &Shape, out: &Path) -> anyhow::Result<()> {
    let file = File::create(out).with_context(|| format!("create {}", out.display()))?;
    let mut tb = tar::Builder::new(BufWriter::new(file));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut dirs: Vec<String> = Vec::new();
    let dir_entry = |tb: &mut tar::Builder<BufWriter<File>>, p: &str| -> anyhow::Result<()> {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        tb.append_data(&mut h, p, std::io::empty())
            .with_context(|| format!("tar dir {p}"))
    };
    for top in ["usr", "usr/share", "etc", "large"] {
        dir_entry(&mut tb, top)?;
    }
    // Directory chains under usr/share: d0/d1/... up to `depth`, branching.
    for i in 0..shape.dirs {
        let parent = if i == 0 || dirs.is_empty() {
            "usr/share".to_owned()
        } else {
            let p = dirs[rng.below(dirs.len())].clone();
            if p.matches('/').count() > shape.depth {
                "usr/share".to_owned()
            } else {
                p
            }
        };
        let d = format!("{parent}/d{i}");
        dir_entry(&mut tb, &d)?;
        dirs.push(d);
    }
    let mut small: Vec<String> = Vec::with_capacity(shape.small_files);
    let mut buf = vec![0u8; shape.small_max.max(shape.large_size)];
    for i in 0..shape.small_files {
        let d = &dirs[rng.below(dirs.len())];
        // Mostly small, a tail up to small_max (sizes of /usr/share are like this).
        let tail = rng.below(shape.small_max).max(1);
        let size = 64 + rng.below(tail);
        rng.fill(&mut buf[..size]);
        let p = format!("{d}/f{i}.txt");
        let mode = if i % 7 == 0 { 0o755 } else { 0o644 };
        let mut h = header(tar::EntryType::Regular, mode, size as u64);
        tb.append_data(&mut h, &p, &buf[..size])
            .with_context(|| format!("tar file {p}"))?;
        small.push(p);
    }
    for i in 0..shape.large_files {
        rng.fill(&mut buf[..shape.large_size]);
        let p = format!("large/blob{i}.bin");
        let mut h = header(tar::EntryType::Regular, 0o644, shape.large_size as u64);
        tb.append_data(&mut h, &p, &buf[..shape.large_size])
            .with_context(|| format!("tar file {p}"))?;
    }
    for i in 0..shape.hard_links.min(small.len()) {
        let target = &small[rng.below(small.len())];
        let p = format!("etc/hl{i}");
        let mut h = header(tar::EntryType::Link, 0o644, 0);
        tb.append_link(&mut h, &p, target)
            .with_context(|| format!("tar hard link {p}"))?;
    }
    for i in 0..shape.symlinks {
        let target = if i % 4 == 0 {
            dirs[rng.below(dirs.len())].clone()
        } else {
            small[rng.below(small.len().max(1))].clone()
        };
        let p = format!("etc/sl{i}");
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        tb.append_link(&mut h, &p, format!("../{target}"))
            .with_context(|| format!("tar symlink {p}"))?;
    }
    let mut w = tb.into_inner().context("finish generated tar")?;
    w.flush().context("flush generated tar")?;
    Ok(())
}

/// Reads the tar's entries and counts them (a flat rootfs tar; other archive forms are
/// counted as what the outer tar holds).
pub fn stats(
    path: &Path,
    origin: &'static str,
    shape: Option<Shape>,
) -> anyhow::Result<InputStats> {
    let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let tar_bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut s = InputStats {
        path: path.to_owned(),
        origin,
        shape,
        tar_bytes,
        ..InputStats::default()
    };
    let mut ar = tar::Archive::new(std::io::BufReader::new(f));
    for e in ar
        .entries()
        .with_context(|| format!("read tar {}", path.display()))?
    {
        let e = e.with_context(|| format!("read tar entry of {}", path.display()))?;
        if let Ok(p) = e.path() {
            let p = p.to_string_lossy();
            let p = p.trim_start_matches("./");
            if matches!(p, "manifest.json" | "index.json" | "oci-layout") {
                s.image_archive = true;
            }
        }
        match e.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                s.files += 1;
                s.content_bytes += e.size();
            }
            tar::EntryType::Directory => s.dirs += 1,
            tar::EntryType::Symlink => s.symlinks += 1,
            tar::EntryType::Link => s.hard_links += 1,
            _ => s.other += 1,
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tree_has_the_shape_asked_for() {
        let dir = std::env::temp_dir().join(format!("layerctl-bench-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("g.tar");
        let shape = Shape::QUICK;
        generate(&shape, &p).unwrap();
        let s = stats(&p, "generated", Some(shape)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(s.files as usize, shape.small_files + shape.large_files);
        assert_eq!(s.hard_links as usize, shape.hard_links);
        assert_eq!(s.symlinks as usize, shape.symlinks);
        // usr, usr/share, etc, large + the generated ones.
        assert_eq!(s.dirs as usize, shape.dirs + 4);
        assert!(s.content_bytes >= (shape.large_files * shape.large_size) as u64);
        assert!(!s.image_archive);
    }

    #[test]
    fn generation_is_deterministic() {
        let dir = std::env::temp_dir().join(format!("layerctl-bench-det-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.tar"), dir.join("b.tar"));
        generate(&Shape::QUICK, &a).unwrap();
        generate(&Shape::QUICK, &b).unwrap();
        let same = std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(same);
    }
}
