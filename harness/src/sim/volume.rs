//! Files an agent reads the way a pod reads a ConfigMap or downward-API volume: each file is a
//! symlink `NAME -> ..data/NAME`, `..data` points at a timestamped directory, and an update writes
//! a new directory and renames a new `..data` over the old one. This is the kubelet's atomic
//! writer layout, so an agent that watches the file's inode instead of the directory misses an
//! update here exactly as it would on a node.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// A directory of files replaced all at once.
pub struct Volume {
    dir: PathBuf,
    generation: u64,
}

impl Volume {
    /// Creates `dir` with `files` in it.
    pub fn create(dir: &Path, files: &[(&str, &[u8])]) -> Result<Volume> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut v = Volume {
            dir: dir.to_owned(),
            generation: 0,
        };
        v.update(files)?;
        Ok(v)
    }

    /// The path a reader uses for `name` (the user-visible symlink).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Replaces the whole content atomically: readers see the old files or the new, never a mix.
    pub fn update(&mut self, files: &[(&str, &[u8])]) -> Result<()> {
        self.generation += 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        // The kubelet names these `..2026_12_01_21_30_00.1234567`; uniqueness is what matters.
        let name = format!(
            "..{}.{:09}.{}",
            now.as_secs(),
            now.subsec_nanos(),
            self.generation
        );
        let payload = self.dir.join(&name);
        std::fs::create_dir(&payload).with_context(|| format!("creating {}", payload.display()))?;
        for (file, content) in files {
            let p = payload.join(file);
            std::fs::write(&p, content).with_context(|| format!("writing {}", p.display()))?;
        }
        let old = std::fs::read_link(self.dir.join(DATA)).ok();
        let tmp = self.dir.join(DATA_TMP);
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&name, &tmp)
            .with_context(|| format!("linking {}", tmp.display()))?;
        std::fs::rename(&tmp, self.dir.join(DATA)).context("swapping ..data")?;
        for (file, _) in files {
            let visible = self.dir.join(file);
            if std::fs::symlink_metadata(&visible).is_err() {
                std::os::unix::fs::symlink(Path::new(DATA).join(file), &visible)
                    .with_context(|| format!("linking {}", visible.display()))?;
            }
        }
        if let Some(old) = old {
            let _ = std::fs::remove_dir_all(self.dir.join(old));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_symlinks_through_data_and_updates_swap_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let vol_dir = dir.path().join("config");
        let mut v = Volume::create(&vol_dir, &[("kubevirt.json", b"{\"a\":1}")]).expect("create");
        let visible = v.path("kubevirt.json");
        assert_eq!(
            std::fs::read_link(&visible).expect("a symlink"),
            Path::new("..data/kubevirt.json")
        );
        assert_eq!(
            std::fs::read_to_string(&visible).expect("read"),
            "{\"a\":1}"
        );
        let first = std::fs::read_link(vol_dir.join(DATA)).expect("..data");
        v.update(&[("kubevirt.json", b"{\"a\":2}")])
            .expect("update");
        assert_eq!(
            std::fs::read_to_string(&visible).expect("read"),
            "{\"a\":2}"
        );
        assert_ne!(
            std::fs::read_link(vol_dir.join(DATA)).expect("..data"),
            first
        );
        assert!(!vol_dir.join(first).exists(), "the old payload is removed");
        assert!(!vol_dir.join(DATA_TMP).exists());
    }
}
