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
    // Each names every value of the math (`make train` prints no "leaves these to their
    // defaults"), but the one of `steps` and `epochs` it does not use and iw-SFT's clip.
    for (name, unused) in [("train/default.yaml", "epochs"), ("train/rft.yaml", "steps")] {
        let (r, unset) = TrainRecipe::load_with_unset(&recipes().join(name)).unwrap();
        r.validate().unwrap();
        assert_eq!(unset, ["iwsft_clip", unused], "{name}");
    }
    // `make data` builds the held-out snapshot there from recipes/validation.yaml.
    let r = TrainRecipe::load(&recipes().join("train/default.yaml")).unwrap();
    assert_eq!(
        (r.snapshot.as_str(), r.validation_snapshot.as_deref()),
        ("../../../snapshots/default", Some("../../../snapshots/validation"))
    );
}

/// A recipe given to the other tool is refused with the tool that reads it, for every shipped
/// recipe; a recipe of neither kind gets no such hint.
#[test]
fn a_recipe_given_to_the_other_tool_names_the_right_one() {
    for name in ["default.yaml", "validation.yaml", "eval/gsm8k_test.yaml", "rft/questions.yaml"] {
        let e = TrainRecipe::load(&recipes().join(name)).unwrap_err().to_string();
        assert!(e.contains("this is a data recipe: build it with `pipeline build --recipe"), "{name}: {e}");
    }
    for name in ["train/default.yaml", "train/rft.yaml"] {
        let e = Recipe::load(&recipes().join(name)).unwrap_err().to_string();
        assert!(e.contains("this is a training recipe: run it with `trainer train --recipe"), "{name}: {e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let neither = dir.path().join("typo.yaml");
    std::fs::write(&neither, "modle: m\n").unwrap();
    for e in [Recipe::load(&neither).unwrap_err().to_string(), TrainRecipe::load(&neither).unwrap_err().to_string()] {
        assert!(e.contains("unknown field `modle`") && !e.contains("this is a"), "{e}");
    }
}

/// Every shipped data recipe names each stage that decides what its snapshot holds, so `make
/// data` prints no "leaves these stages to their defaults" warning and a reader sees the values.
#[test]
fn the_shipped_data_recipes_name_their_stages() {
    let mut names = vec![];
    for dir in [recipes(), recipes().join("eval"), recipes().join("rft")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let r = Recipe::load(&path).unwrap();
                assert!(r.defaulted_stages.is_empty(), "{}: {:?}", path.display(), r.defaulted_stages);
                names.push(path);
            }
        }
    }
    // default, full, validation; nine evaluation sets; the two of rejection sampling.
    assert_eq!(names.len(), 14, "{names:?}");
}
