//! Training curves: what `metrics.jsonl` records per step (and `validation.jsonl` per held-out
//! measurement), one panel per quantity and one line per run, as a PNG. `trainer train` keeps `curves.png` beside its metrics (redrawn at every
//! checkpoint and at the end); `trainer curves` overlays runs, e.g. SFT against DFT.

use crate::train::{StepMetrics, METRICS_FILE};
use crate::validation::{ValidationMetrics, VALIDATION_FILE};
use anyhow::Context;
use eval::plot::{LineFigure, LinePanel};
use std::path::{Path, PathBuf};

/// The figure `trainer train` writes into its output folder.
pub const CURVES_FILE: &str = "curves.png";

/// One run's steps as its `metrics.jsonl` has them.
pub struct RunCurves {
    pub label: String,
    pub metrics: PathBuf,
    pub steps: Vec<StepMetrics>,
    /// The held-out measurements of `validation.jsonl` beside the metrics (none where the run
    /// had no `validation_snapshot`).
    pub validation: Vec<ValidationMetrics>,
}

/// One panel: its title, the quantity of a step it draws, and whether long runs get a smoothed
/// line (per-step values are noisy; the learning rate follows its schedule, and an average would
/// only lag behind it).
struct Panel {
    title: &'static str,
    value: fn(&StepMetrics) -> f64,
    smooth: bool,
}

/// The panels. The objective is each run's own loss (SFT's is the cross-entropy, DFT's the
/// probability-weighted one), so runs with different losses are compared on the cross-entropy
/// and probability panels. [`REFERENCE_PANEL`] follows where a run trained on a scored snapshot.
const PANELS: [Panel; 6] = [
    Panel { title: "objective (each run's own loss)", value: |m| m.objective, smooth: true },
    Panel { title: "cross-entropy (nats per target token)", value: |m| m.cross_entropy, smooth: true },
    Panel { title: "mean target-token probability", value: |m| m.mean_token_prob, smooth: true },
    Panel { title: "gradient norm (before clipping)", value: |m| m.grad_norm, smooth: true },
    Panel { title: "learning rate", value: |m| m.lr, smooth: false },
    Panel { title: "tokens/s", value: |m| m.tokens_per_second, smooth: true },
];

/// The model's drift from the reference that scored the snapshot, on the target tokens; a run
/// without scores has no line here (NaN points are not drawn).
const REFERENCE_PANEL: Panel =
    Panel { title: "log p - log p_ref (mean over target tokens)", value: |m| m.log_ratio_to_reference.unwrap_or(f64::NAN), smooth: true };

/// A quantity of one held-out measurement.
type HeldOutValue = fn(&ValidationMetrics) -> f64;

/// The held-out cross-entropy and mean target-token probability, measured every
/// `validation_every` steps from step 0 (the model before training): beside the training rows'
/// panels, whether what training does to its rows carries over to others. Their x is the updates
/// made, where a training panel's step n is the model after n - 1 (the loss step n trains on),
/// so the titles say which.
const VALIDATION_PANELS: [(&str, HeldOutValue); 2] = [
    ("held-out cross-entropy, after N updates", |m| m.cross_entropy),
    ("held-out mean probability, after N updates", |m| m.mean_token_prob),
];

/// Reads a run: its output folder (which holds `metrics.jsonl`, and `validation.jsonl` where
/// it measured a held-out snapshot) or the metrics file itself. The label defaults to the run
/// folder's name.
pub fn read_run(path: &Path, label: Option<String>) -> anyhow::Result<RunCurves> {
    let metrics = if path.is_dir() { path.join(METRICS_FILE) } else { path.to_path_buf() };
    let text = std::fs::read_to_string(&metrics)
        .with_context(|| format!("cannot read {} (give a `trainer train` output folder or its {METRICS_FILE})", metrics.display()))?;
    let mut steps = vec![];
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let m = serde_json::from_str(line).with_context(|| format!("{}:{}: not a step of {METRICS_FILE}", metrics.display(), i + 1))?;
        steps.push(m);
    }
    anyhow::ensure!(!steps.is_empty(), "{}: no step recorded yet", metrics.display());
    let folder = metrics.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let held_out = folder.join(VALIDATION_FILE);
    let mut validation = vec![];
    if let Ok(text) = std::fs::read_to_string(&held_out) {
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let m =
                serde_json::from_str(line).with_context(|| format!("{}:{}: not a line of {VALIDATION_FILE}", held_out.display(), i + 1))?;
            validation.push(m);
        }
    }
    let label = label.unwrap_or_else(|| {
        folder.canonicalize().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_else(|| "run".into())
    });
    Ok(RunCurves { label, metrics, steps, validation })
}

/// The figure: six panels in three columns (one more with a scored run's, two more with a run's
/// held-out measurements), the runs in the legend with their last step.
pub fn figure(runs: &[RunCurves]) -> LineFigure {
    let scored = runs.iter().any(|r| r.steps.iter().any(|m| m.log_ratio_to_reference.is_some()));
    let mut panels: Vec<LinePanel> = PANELS
        .iter()
        .chain(scored.then_some(&REFERENCE_PANEL))
        .map(|p| LinePanel {
            title: p.title.to_string(),
            series: runs.iter().map(|r| r.steps.iter().map(|m| (m.step as f64, (p.value)(m))).collect()).collect(),
            smooth: p.smooth,
        })
        .collect();
    if runs.iter().any(|r| !r.validation.is_empty()) {
        panels.extend(VALIDATION_PANELS.map(|(title, value)| LinePanel {
            title: title.into(),
            series: runs.iter().map(|r| r.validation.iter().map(|m| (m.step as f64, value(m))).collect()).collect(),
            // A few measurements, each over every held-out token: nothing to smooth.
            smooth: false,
        }));
    }
    let legend = runs
        .iter()
        .map(|r| {
            let last = r.steps.last().expect("read_run refuses a run without steps");
            let tokens: u64 = r.steps.iter().map(|m| m.loss_tokens).sum();
            let mut note = format!(
                "{} steps, {tokens} target tokens; last step: objective {:.4}, cross-entropy {:.4}, p {:.3}",
                r.steps.len(),
                last.objective,
                last.cross_entropy,
                last.mean_token_prob
            );
            match &r.validation[..] {
                [] => {}
                [only] => note += &format!("; held out: cross-entropy {:.4} after {} updates", only.cross_entropy, only.step),
                [first, .., held] => {
                    note += &format!(
                        "; held out: cross-entropy {:.4} after {} updates -> {:.4} after {}",
                        first.cross_entropy, first.step, held.cross_entropy, held.step
                    )
                }
            }
            (r.label.clone(), note)
        })
        .collect();
    let files: Vec<String> = runs.iter().map(|r| r.metrics.display().to_string()).collect();
    LineFigure {
        title: "Training curves".into(),
        subtitle: files.join(", "),
        x_label: "step".into(),
        x_log2: false,
        y_min: None,
        legend,
        panels,
        columns: 3,
        panel_width: 440,
        panel_height: 300,
    }
}

/// Draws `runs` into the PNG `out`, written atomically.
pub fn write(runs: &[RunCurves], out: &Path) -> anyhow::Result<()> {
    figure(runs).render().0.save_png(out)
}

/// Redraws a training run's own `curves.png` from its metrics. A figure that cannot be drawn
/// is a warning: it must not stop the training it describes.
pub fn refresh(output_dir: &Path) {
    let drawn = read_run(output_dir, None).and_then(|r| write(&[r], &output_dir.join(CURVES_FILE)));
    if let Err(e) = drawn {
        tracing::warn!("training curves not drawn: {e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(step: u64, objective: f64) -> String {
        let m = StepMetrics {
            step,
            lr: 5e-5,
            objective,
            cross_entropy: 1.0 + objective,
            mean_token_prob: 0.5,
            log_ratio_to_reference: None,
            grad_norm: 1.0,
            loss_tokens: 100,
            tokens: 4096,
            tokens_per_second: 120.0,
            elapsed_seconds: step as f64,
            rows: vec![0],
        };
        serde_json::to_string(&m).unwrap() + "\n"
    }

    #[test]
    fn runs_are_read_with_their_folder_as_label_and_drawn_one_line_each() {
        let dir = tempfile::tempdir().unwrap();
        let (dft, sft) = (dir.path().join("dft"), dir.path().join("sft"));
        for (d, objs) in [(&dft, [0.3, 0.2, 0.1]), (&sft, [1.3, 1.2, 1.1])] {
            std::fs::create_dir(d).unwrap();
            let text: String = objs.iter().enumerate().map(|(i, &o)| step(i as u64 + 1, o)).collect();
            std::fs::write(d.join(METRICS_FILE), text).unwrap();
        }
        let runs = vec![read_run(&dft, None).unwrap(), read_run(&sft.join(METRICS_FILE), Some("plain SFT".into())).unwrap()];
        assert_eq!((runs[0].label.as_str(), runs[1].label.as_str()), ("dft", "plain SFT"));
        let f = figure(&runs);
        assert_eq!(f.panels.len(), PANELS.len());
        assert_eq!(f.panels[0].series[0], vec![(1.0, 0.3), (2.0, 0.2), (3.0, 0.1)]);
        assert_eq!(f.panels[1].series[1], vec![(1.0, 2.3), (2.0, 2.2), (3.0, 2.1)]);
        // Every panel smooths long runs but the learning rate's, which follows its schedule.
        let smooth: Vec<(&str, bool)> = f.panels.iter().map(|p| (p.title.as_str(), p.smooth)).collect();
        assert!(smooth.iter().all(|&(t, s)| s == (t != "learning rate")), "{smooth:?}");
        assert!(f.legend[0].1.starts_with("3 steps, 300 target tokens; last step: objective 0.1000"), "{}", f.legend[0].1);
        let out = dir.path().join("new/curves.png");
        write(&runs, &out).unwrap();
        assert_eq!(&std::fs::read(&out).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
    }

    /// The reference panel comes with a run that trained on a scored snapshot; another run in
    /// the same figure has no line in it.
    #[test]
    fn a_scored_run_adds_the_reference_panel() {
        let dir = tempfile::tempdir().unwrap();
        let (scored, plain) = (dir.path().join("scored"), dir.path().join("plain"));
        for d in [&scored, &plain] {
            std::fs::create_dir(d).unwrap();
        }
        let with_ratio = |s: u64, r: f64| step(s, 0.2).replace("\"grad_norm\"", &format!("\"log_ratio_to_reference\":{r},\"grad_norm\""));
        std::fs::write(scored.join(METRICS_FILE), with_ratio(1, 0.0) + &with_ratio(2, 0.05)).unwrap();
        std::fs::write(plain.join(METRICS_FILE), step(1, 0.2) + &step(2, 0.1)).unwrap();
        let (s, p) = (read_run(&scored, None).unwrap(), read_run(&plain, None).unwrap());
        assert_eq!(s.steps[1].log_ratio_to_reference, Some(0.05));
        assert_eq!(figure(std::slice::from_ref(&p)).panels.len(), PANELS.len());
        let f = figure(&[s, p]);
        assert_eq!(f.panels.len(), PANELS.len() + 1);
        let last = f.panels.last().unwrap();
        assert_eq!(last.title, REFERENCE_PANEL.title);
        assert_eq!(last.series[0], vec![(1.0, 0.0), (2.0, 0.05)]);
        assert!(last.series[1].iter().all(|(_, y)| y.is_nan()), "the unscored run draws nothing there");
    }

    #[test]
    fn a_missing_or_broken_log_is_an_error_naming_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_run(dir.path(), None).err().unwrap();
        assert!(format!("{e:#}").contains("metrics.jsonl") && format!("{e:#}").contains("output folder"), "{e:#}");
        std::fs::write(dir.path().join(METRICS_FILE), step(1, 0.5) + "{\"step\": 2, \"lr\": \n").unwrap();
        let e = format!("{:#}", read_run(dir.path(), None).err().unwrap());
        assert!(e.contains("metrics.jsonl:2: not a step"), "{e}");
        std::fs::write(dir.path().join(METRICS_FILE), "\n").unwrap();
        let e = format!("{:#}", read_run(dir.path(), None).err().unwrap());
        assert!(e.contains("no step recorded yet"), "{e}");
    }

    /// A run that measured a held-out snapshot adds the held-out panels, their points those of
    /// `validation.jsonl` from step 0, and says the change in the legend; a broken line there is
    /// an error naming file and line.
    #[test]
    fn held_out_measurements_add_their_panels() {
        let dir = tempfile::tempdir().unwrap();
        let (held, plain) = (dir.path().join("held"), dir.path().join("plain"));
        for d in [&held, &plain] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join(METRICS_FILE), step(1, 0.2) + &step(2, 0.1)).unwrap();
        }
        let line = |step: u64, ce: f64| {
            let m = ValidationMetrics {
                step,
                snapshot_id: "82a4cd95c93e5296".into(),
                objective: Some(ce / 2.0),
                cross_entropy: ce,
                mean_token_prob: ce / 4.0,
                loss_tokens: 50,
                rows: 1,
                seconds: 0.5,
            };
            serde_json::to_string(&m).unwrap() + "\n"
        };
        std::fs::write(held.join(VALIDATION_FILE), line(0, 1.5) + &line(2, 1.25)).unwrap();
        let (h, p) = (read_run(&held, None).unwrap(), read_run(&plain, None).unwrap());
        assert!(p.validation.is_empty());
        assert_eq!(figure(std::slice::from_ref(&p)).panels.len(), PANELS.len());
        let f = figure(&[h, p]);
        assert_eq!(f.panels.len(), PANELS.len() + 2);
        let (ce, p) = (&f.panels[PANELS.len()], &f.panels[PANELS.len() + 1]);
        assert_eq!((ce.title.as_str(), p.title.as_str()), (VALIDATION_PANELS[0].0, VALIDATION_PANELS[1].0));
        assert_eq!(ce.series, vec![vec![(0.0, 1.5), (2.0, 1.25)], vec![]]);
        assert_eq!(p.series, vec![vec![(0.0, 0.375), (2.0, 0.3125)], vec![]]);
        assert!(f.legend[0].1.ends_with("held out: cross-entropy 1.5000 after 0 updates -> 1.2500 after 2"), "{}", f.legend[0].1);
        assert!(!f.legend[1].1.contains("held out"), "{}", f.legend[1].1);
        std::fs::write(held.join(VALIDATION_FILE), line(0, 1.5) + "{\"step\": 2,\n").unwrap();
        let e = format!("{:#}", read_run(&held, None).err().unwrap());
        assert!(e.contains("validation.jsonl:2: not a line of validation.jsonl"), "{e}");
    }
}
