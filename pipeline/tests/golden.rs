//! Golden values: the default recipe must keep building to the snapshot users already have. A
//! change to any stage, the shard format, the tokenizer, the RNG or the shuffle changes the shard
//! bytes and so this id; if the change is intended, say so in the README and update the id here.

use std::path::Path;

/// `make data`'s unscored default snapshot (`snapshots/default-unscored`).
const DEFAULT_SNAPSHOT_ID: &str = "5223c783417bff31";

#[test]
fn default_recipe_builds_to_its_pinned_snapshot_id() {
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/recipes/default.yaml");
    // The recipe reads the model's tokenizer at the path `make model` puts it.
    model_files::test_model_path();
    let tmp = tempfile::tempdir().unwrap();
    let m = pipeline::build::build(&recipe, &tmp.path().join("default"), false).unwrap();
    assert_eq!(m.snapshot_id, DEFAULT_SNAPSHOT_ID, "the default snapshot changed: {:?}", m.packing);
    let (_, problems) = schemas::snapshot::verify(&tmp.path().join("default")).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
}
