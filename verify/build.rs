//! The verifier's version, recorded with every verdict and part of what evaluation reuse and
//! sampling caches are keyed on: the crate's version plus a hash of the sources that decide a
//! verdict. The crate's version has never changed while its rules have, so a hand-kept number
//! would let old verdicts pass for new ones.

use std::path::{Path, PathBuf};

const SCHEMAS_RNG: &str = "../schemas/src/rng.rs";

fn main() {
    let mut files = Vec::new();
    sources(Path::new("src"), &mut files);
    files.sort();
    // The hash and random streams the math checks draw their test points from.
    files.push(PathBuf::from(SCHEMAS_RNG));
    // FNV-1a over each file's path and bytes: stable across machines and toolchains, no crate.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for f in &files {
        let path = f.to_string_lossy().replace('\\', "/");
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("cannot read {}: {e}", f.display()));
        for b in path.bytes().chain([0]).chain(bytes) {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    // A folder here is scanned whole: an edited, added or removed file runs this again.
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed={SCHEMAS_RNG}");
    println!("cargo:rustc-env=RECTIFY_VERIFY_SOURCES={hash:016x}");
}

/// Every `.rs` file under `dir` except the test modules (`tests.rs`), which decide no verdict.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") && path.file_name().is_some_and(|n| n != "tests.rs") {
            out.push(path);
        }
    }
}
