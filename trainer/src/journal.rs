//! Resumable work beside an output folder, shared by `trainer score` and `trainer sample`:
//! `.<out>.<kind>/` holds `work.json` (the job's identity) and chunk files, each listed with its
//! sha256 in `done.jsonl` once written and renamed into place. A folder left by another job is
//! removed with a warning naming the settings that differ; a journal line cut short by a kill is
//! ended before the next record, and skipped.

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const WORK_FILE: &str = "work.json";
const JOURNAL_FILE: &str = "done.jsonl";

/// One finished chunk: items `start..start + len` of the job, in `file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    pub file: String,
    pub start: usize,
    pub len: usize,
    pub sha256: String,
}

/// `field (theirs there, ours here)` for each leaf that differs between two serialisations
/// (nested fields as `a.b`): read from the values themselves, so no field can be left out.
pub fn json_differences(theirs: &serde_json::Value, ours: &serde_json::Value) -> Vec<String> {
    fn leaves(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
        match v {
            serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| leaves(&format!("{prefix}{k}."), v, out)),
            other => {
                out.insert(prefix.trim_end_matches('.').to_string(), other.clone());
            }
        }
    }
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    leaves("", theirs, &mut a);
    leaves("", ours, &mut b);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (there, here) = (a.get(k).unwrap_or(&serde_json::Value::Null), b.get(k).unwrap_or(&serde_json::Value::Null));
            (there != here).then(|| format!("{k} ({there} there, {here} here)"))
        })
        .collect()
}

pub struct WorkDir {
    pub dir: PathBuf,
    journal: Option<std::fs::File>,
}

impl WorkDir {
    /// The work folder `.<out name>.<kind>` beside `out` for `job`: kept when it holds the same
    /// job, started afresh otherwise.
    pub fn open<J: Serialize + DeserializeOwned + PartialEq>(out: &Path, kind: &str, job: &J) -> anyhow::Result<WorkDir> {
        let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        let name = out.file_name().and_then(|n| n.to_str()).context("--out needs a folder name")?;
        let dir = parent.join(format!(".{name}.{kind}"));
        let theirs: Option<serde_json::Value> =
            std::fs::read_to_string(dir.join(WORK_FILE)).ok().and_then(|t| serde_json::from_str(&t).ok());
        let same = theirs.clone().and_then(|t| serde_json::from_value::<J>(t).ok()).is_some_and(|w| w == *job);
        if !same {
            if dir.exists() {
                // Said as a warning, naming what changed: the finished chunks may be hours of work.
                let ours = serde_json::to_value(job)?;
                let changed = theirs.map_or_else(|| vec!["its work.json is unreadable".to_string()], |t| json_differences(&t, &ours));
                let chunks = std::fs::read_to_string(dir.join(JOURNAL_FILE)).map_or(0, |t| t.lines().count());
                tracing::warn!(
                    "{} holds a half-finished job with other settings ({}): its {chunks} finished chunks are discarded and the job starts afresh",
                    dir.display(),
                    changed.join(", ")
                );
                std::fs::remove_dir_all(&dir)?;
            }
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            schemas::write_atomic(&dir.join(WORK_FILE), (serde_json::to_string_pretty(job)? + "\n").as_bytes())?;
        }
        Ok(WorkDir { dir, journal: None })
    }

    /// Chunks listed in the journal whose file is present and matches its hash, by start.
    pub fn finished(&self) -> anyhow::Result<BTreeMap<usize, Chunk>> {
        let mut done = BTreeMap::new();
        let Ok(text) = std::fs::read_to_string(self.dir.join(JOURNAL_FILE)) else { return Ok(done) };
        for line in text.lines() {
            // A line cut short by a kill does not parse and is skipped; its chunk is done again.
            let Ok(c) = serde_json::from_str::<Chunk>(line) else { continue };
            let path = self.dir.join(&c.file);
            if path.exists() && schemas::sha256_file(&path)? == c.sha256 {
                done.insert(c.start, c);
            } else {
                tracing::warn!("{}: missing or does not match its hash; doing it again", path.display());
            }
        }
        Ok(done)
    }

    /// Write a chunk's bytes atomically, then journal it (synced).
    pub fn record(&mut self, file: String, start: usize, len: usize, bytes: &[u8]) -> anyhow::Result<Chunk> {
        schemas::write_atomic(&self.dir.join(&file), bytes)?;
        let c = Chunk { file, start, len, sha256: schemas::sha256_hex(bytes) };
        if self.journal.is_none() {
            let path = self.dir.join(JOURNAL_FILE);
            let cut = std::fs::read(&path).is_ok_and(|b| b.last().is_some_and(|&x| x != b'\n'));
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            if cut {
                f.write_all(b"\n")?;
            }
            self.journal = Some(f);
        }
        let journal = self.journal.as_mut().expect("opened");
        writeln!(journal, "{}", serde_json::to_string(&c)?)?;
        journal.sync_data()?;
        Ok(c)
    }

    /// A chunk's bytes, checked against its hash again (they may have sat there for hours).
    pub fn read(&self, c: &Chunk) -> anyhow::Result<Vec<u8>> {
        let path = self.dir.join(&c.file);
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        anyhow::ensure!(schemas::sha256_hex(&bytes) == c.sha256, "{} changed since it was written", path.display());
        Ok(bytes)
    }

    pub fn remove(self) -> anyhow::Result<()> {
        drop(self.journal);
        std::fs::remove_dir_all(&self.dir).with_context(|| format!("cannot remove {}", self.dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_job_with_other_settings_starts_afresh_and_the_differences_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("scored");
        let job = json!({"model": "m", "sampling": {"seed": 7, "top_p": 1.0}});
        let mut w = WorkDir::open(&out, "score", &job).unwrap();
        w.record("chunk-0".into(), 0, 4, b"rows").unwrap();
        assert_eq!(WorkDir::open(&out, "score", &job).unwrap().finished().unwrap().len(), 1, "the same job resumes");
        let other = json!({"model": "m", "sampling": {"seed": 8, "top_p": 1.0}, "chunk": 2});
        assert_eq!(json_differences(&job, &other), ["chunk (null there, 2 here)", "sampling.seed (7 there, 8 here)"]);
        assert!(WorkDir::open(&out, "score", &other).unwrap().finished().unwrap().is_empty(), "another job starts afresh");
    }
}
