//! The shipped recipes as `make data` and `make train` read them.

use schemas::recipe::Recipe;
use schemas::train::TrainRecipe;
use serde_norway::Value;
use std::path::PathBuf;

fn recipes() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../datasets/recipes")
}

fn yaml(name: &str) -> Value {
    serde_norway::from_str(&std::fs::read_to_string(recipes().join(name)).unwrap()).unwrap()
}

/// A recipe without what tells the held-out recipe from the default one: its name, its
/// description and where each source starts and stops.
fn stages(mut v: Value) -> Value {
    let m = v.as_mapping_mut().unwrap();
    m.remove("name");
    m.remove("description");
    for s in m.get_mut("sources").unwrap().as_sequence_mut().unwrap() {
        let s = s.as_mapping_mut().unwrap();
        s.remove("skip");
        s.remove("limit");
    }
    v
}

/// The held-out rows are prepared as the default snapshot's are (every stage, decontamination
/// list and tokenizer the same) and start where the default snapshot's sources stop, so editing
/// one recipe without the other fails here rather than overlapping the sets unnoticed.
#[test]
fn the_held_out_recipe_is_the_default_one_past_its_limits() {
    let (default, held) = (yaml("default.yaml"), yaml("validation.yaml"));
    assert_eq!(stages(default.clone()), stages(held.clone()));
    let sources = |v: &Value| v["sources"].as_sequence().unwrap().clone();
    for (d, h) in sources(&default).iter().zip(&sources(&held)) {
        assert!(d.get("skip").is_none(), "{d:?}");
        let limit = d["limit"].as_u64().expect("each default source has a limit, where the held-out rows start");
        assert_eq!(h["skip"].as_u64(), Some(limit), "source {:?} starts where the default one stops", h["name"]);
        assert!(h["limit"].as_u64().unwrap() > 0);
    }
    for name in ["default.yaml", "validation.yaml"] {
        Recipe::load(&recipes().join(name)).unwrap();
    }
}

#[test]
fn the_shipped_train_recipes_load_and_validate() {
    for name in ["train/default.yaml", "train/rft.yaml"] {
        TrainRecipe::load(&recipes().join(name)).unwrap().validate().unwrap();
    }
    // `make data` builds the held-out snapshot there from recipes/validation.yaml.
    let r = TrainRecipe::load(&recipes().join("train/default.yaml")).unwrap();
    assert_eq!(
        (r.snapshot.as_str(), r.validation_snapshot.as_deref()),
        ("../../../snapshots/default", Some("../../../snapshots/validation"))
    );
}
