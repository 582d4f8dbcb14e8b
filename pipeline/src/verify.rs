//! `pipeline verify`: re-hash every file a manifest lists and report each mismatch.

use anyhow::Context;
use schemas::manifest::{Manifest, MANIFEST_FILE};
use std::path::Path;

pub fn read_manifest(dir: &Path) -> anyhow::Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{} has no {MANIFEST_FILE}: not a snapshot, or its build did not finish", dir.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a valid manifest", path.display()))
}

/// Problems found (empty = the snapshot is intact), and the manifest.
pub fn verify(dir: &Path) -> anyhow::Result<(Manifest, Vec<String>)> {
    let manifest = read_manifest(dir)?;
    let mut problems = vec![];
    for info in manifest.shards.iter().chain(&manifest.sidecars) {
        let path = dir.join(&info.file);
        let Ok(meta) = std::fs::metadata(&path) else {
            problems.push(format!("{}: missing", info.file));
            continue;
        };
        if meta.len() != info.bytes {
            problems.push(format!("{}: {} bytes, manifest says {}", info.file, meta.len(), info.bytes));
        }
        let sha = schemas::sha256_file(&path)?;
        if sha != info.sha256 {
            problems.push(format!("{}: sha256 {sha}, manifest says {}", info.file, info.sha256));
        }
    }
    let id = Manifest::snapshot_id_for(&manifest.shards);
    if id != manifest.snapshot_id {
        problems.push(format!("snapshot id {id} from the shard hashes, manifest says {}", manifest.snapshot_id));
    }
    Ok((manifest, problems))
}
