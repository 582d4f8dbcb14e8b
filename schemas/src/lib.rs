//! rectify's formats and their IO, nothing else: the canonical example, the YAML data and
//! training recipes, the snapshot manifest, the Arrow schemas of its Parquet shards, reading,
//! verifying and atomically writing a snapshot, and the seeded RNG and hashes the formats are
//! defined by. No DataFusion, no Burn: every other crate may depend on this one.

pub mod example;
pub mod manifest;
pub mod recipe;
pub mod rng;
pub mod shard;
pub mod snapshot;
pub mod train;

pub use example::{CodeTests, Domain, Dropped, Example};
pub use manifest::{Manifest, ShardInfo, StageReport};
pub use recipe::Recipe;

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// Hex sha256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hex sha256 of a file, streamed so large shards and model files do not sit in memory.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Write `bytes` to `path` atomically: a temp file beside it, fsync, then rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).map_err(|e| anyhow::anyhow!("cannot rename {} to {}: {e}", tmp.display(), path.display()))?;
    Ok(())
}
