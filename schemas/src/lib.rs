//! rectify's formats and their IO, nothing else: the canonical example, the YAML data and
//! training recipes, the snapshot manifest, the Arrow schemas of its Parquet shards, reading,
//! verifying and atomically writing a snapshot, and the seeded RNG and hashes the formats are
//! defined by. No DataFusion, no Burn: every other crate may depend on this one.

/// An enum of unit variants whose values are spelled once, in the table given here: `ALL`,
/// `as_str`, `from_name`, serde (the same spelling in recipes, manifests and results) and, unless
/// `custom FromStr` is given, `FromStr` (the CLI's flags), whose error names `$what` and lists
/// the spellings.
macro_rules! spelled {
    ($ty:ident, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        spelled!($ty, $what, { $($variant => $text),+ }, custom FromStr);
        impl std::str::FromStr for $ty {
            type Err = anyhow::Error;
            fn from_str(s: &str) -> anyhow::Result<$ty> {
                $ty::parse_name(s)
            }
        }
    };
    ($ty:ident, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }, custom FromStr) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text),+
                }
            }

            /// The value spelled `s` exactly, if any.
            pub fn from_name(s: &str) -> Option<$ty> {
                $ty::ALL.iter().copied().find(|v| v.as_str() == s)
            }

            /// [`Self::from_name`], or an error listing the spellings.
            pub fn parse_name(s: &str) -> anyhow::Result<$ty> {
                let names: Vec<&str> = $ty::ALL.iter().map(|v| v.as_str()).collect();
                $ty::from_name(s).ok_or_else(|| anyhow::anyhow!("unknown {} `{s}`: expected one of {}", $what, names.join(", ")))
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<$ty, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                $ty::parse_name(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

pub mod example;
pub mod generation;
pub mod manifest;
pub mod prompts;
pub mod recipe;
pub mod rng;
pub mod rollouts;
pub mod shard;
pub mod snapshot;
pub mod train;

pub use example::{CodeTests, Domain, Dropped, Example, Role, Turn};
pub use manifest::{Manifest, ShardInfo, StageReport};
pub use recipe::Recipe;

use anyhow::Context;
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
    write_atomic_with(path, |w| Ok(std::io::Write::write_all(w, bytes)?))
}

/// Stream a file into place atomically: `fill` writes a temp file beside `path`, which is synced
/// and renamed to `path` only when `fill` succeeds (and removed when it fails), so `path` never
/// holds half a file. Returns what `fill` returns.
pub fn write_atomic_with<T>(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().with_context(|| format!("{}: not a file path", path.display()))?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| {
        let f = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut w = std::io::BufWriter::new(f);
        let value = fill(&mut w)?;
        let f = w.into_inner().map_err(|e| anyhow::anyhow!("cannot write {}: {}", tmp.display(), e.error()))?;
        f.sync_all().with_context(|| format!("cannot sync {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
        Ok(value)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
