//! The final stage's verdict: the winner against the one-shot heuristic's config (the
//! control), both re-trained with the same training seeds, compared seed by seed and
//! image by image ([`crate::stats::paired`]). "Better" needs the paired validation
//! interval above 0; the test set never decides, it is only reported.

use crate::stats::noise::{f64_or_nan, mean, sample_sd};
use crate::stats::paired::{Paired, paired};
use crate::store::{FinalRun, Subject, Trial};
use serde::{Deserialize, Serialize};

/// Said of a winner whose paired validation interval lies above 0.
pub const BETTER: &str = "better than the one-shot heuristic";
/// Said otherwise.
pub const NOT_SHOWN: &str = "not shown better than the one-shot heuristic";

/// A mean over seeds with its sd (NaN below two seeds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanSd {
    pub mean: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub sd: f64,
}

impl MeanSd {
    fn of(v: &[f64]) -> Self {
        Self {
            mean: mean(v),
            sd: sample_sd(v),
        }
    }

    /// `88.12 ± 0.40` in points (`88.12` for one seed).
    pub fn points(&self) -> String {
        if self.sd.is_finite() {
            format!("{:.2} ± {:.2}", 100.0 * self.mean, 100.0 * self.sd)
        } else {
            format!("{:.2}", 100.0 * self.mean)
        }
    }
}

/// One re-trained subject's scores over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectStats {
    /// `trial N` or `control`.
    pub name: String,
    /// The finalist's trial number (None for the control).
    pub trial: Option<i64>,
    pub seeds: usize,
    pub val: MeanSd,
    pub test: MeanSd,
}

/// What the final stage concluded, stored with the study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether the winner is shown better than the control (paired validation interval
    /// above 0).
    pub better: bool,
    /// [`BETTER`] or [`NOT_SHOWN`], or why there is no comparison.
    pub text: String,
    /// The winner's trial number.
    pub winner: Option<i64>,
    /// Seeds the winner and the control were both re-trained with.
    pub seeds: usize,
    /// Winner minus control on validation and on test (fractions).
    pub val: Option<Paired>,
    pub test: Option<Paired>,
    pub subjects: Vec<SubjectStats>,
}

impl Verdict {
    /// The smallest validation difference (points) these seeds and images could tell
    /// from zero: the interval's half-width (None below two seeds).
    pub fn detectable_points(&self) -> Option<f64> {
        let h = self.val?.half_width();
        h.is_finite().then_some(100.0 * h)
    }

    /// `better`, `not shown` or `-` (no comparison): the studies table's column.
    pub fn short(&self) -> &'static str {
        match (self.val.is_some(), self.better) {
            (_, true) => "better",
            (true, false) => "not shown",
            (false, false) => "-",
        }
    }

    /// The verdict for people: a headline, the paired differences, and each subject.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!("verdict: {}", self.text)];
        let diff = |p: &Paired| {
            let pt = |v: f64| format!("{:+.2}", 100.0 * v);
            if p.interval.lo.is_finite() {
                format!(
                    "{} points, 95% [{}, {}] (seeds alone [{}, {}])",
                    pt(p.seeds.mean),
                    pt(p.interval.lo),
                    pt(p.interval.hi),
                    pt(p.seeds.lo),
                    pt(p.seeds.hi)
                )
            } else {
                format!("{} points (one seed: no interval)", pt(p.seeds.mean))
            }
        };
        if let (Some(w), Some(v)) = (self.winner, &self.val) {
            out.push(format!(
                "  trial {w} - control, {} paired seeds: validation {}",
                self.seeds,
                diff(v)
            ));
            if let Some(t) = &self.test {
                out.push(format!("  test (reported only) {}", diff(t)));
            }
            if let Some(d) = self.detectable_points() {
                out.push(format!(
                    "  smallest validation margin these seeds resolve: ±{d:.2} points"
                ));
            }
        }
        for s in &self.subjects {
            out.push(format!(
                "  {:<10} seeds {}  validation {}  test {}",
                s.name,
                s.seeds,
                s.val.points(),
                s.test.points()
            ));
        }
        out
    }
}

/// The verdict stored with a study, if its final stage gave one.
pub fn stored_verdict(row: &crate::store::StudyRow) -> Option<Verdict> {
    serde_json::from_str(row.verdict.as_deref()?).ok()
}

/// The runs of `subject`, ordered by seed.
fn runs_of(runs: &[FinalRun], subject: Subject) -> Vec<&FinalRun> {
    let mut v: Vec<&FinalRun> = runs.iter().filter(|r| r.subject == subject).collect();
    v.sort_by_key(|r| r.seed);
    v
}

fn stats(name: String, trial: Option<i64>, runs: &[&FinalRun]) -> SubjectStats {
    let (val, test): (Vec<f64>, Vec<f64>) = runs.iter().map(|r| (r.val_top1, r.top1)).unzip();
    SubjectStats {
        name,
        trial,
        seeds: runs.len(),
        val: MeanSd::of(&val),
        test: MeanSd::of(&test),
    }
}

/// The verdict on `winner` (the study's best re-trained trial, if any) against the
/// control, from the study's final runs; `finalists` names the re-trained trials.
pub fn verdict(runs: &[FinalRun], finalists: &[&Trial], winner: Option<&Trial>) -> Verdict {
    let mut subjects: Vec<SubjectStats> = finalists
        .iter()
        .map(|t| {
            let r = runs_of(runs, Subject::Trial(t.id));
            (t, r)
        })
        .filter(|(_, r)| !r.is_empty())
        .map(|(t, r)| stats(format!("trial {}", t.number), Some(t.number), &r))
        .collect();
    let control = runs_of(runs, Subject::Control);
    if !control.is_empty() {
        subjects.push(stats("control".into(), None, &control));
    }
    let mut v = Verdict {
        better: false,
        text: String::new(),
        winner: winner.map(|w| w.number),
        seeds: 0,
        val: None,
        test: None,
        subjects,
    };
    let Some(w) = winner else {
        v.text = "no comparison: no finalist was re-trained".into();
        return v;
    };
    // The seeds both were re-trained with, in order.
    let ours: Vec<&FinalRun> = runs_of(runs, Subject::Trial(w.id))
        .into_iter()
        .filter(|r| control.iter().any(|c| c.seed == r.seed))
        .collect();
    let theirs: Vec<&FinalRun> = control
        .iter()
        .copied()
        .filter(|c| ours.iter().any(|r| r.seed == c.seed))
        .collect();
    v.seeds = ours.len();
    let bits = |rs: &[&FinalRun], val: bool| -> Vec<Vec<bool>> {
        rs.iter()
            .map(|r| {
                if val {
                    r.val_correct.clone()
                } else {
                    r.test_correct.clone()
                }
            })
            .collect()
    };
    v.val = paired(&bits(&ours, true), &bits(&theirs, true));
    v.test = paired(&bits(&ours, false), &bits(&theirs, false));
    v.better = v.val.is_some_and(|p| p.interval.lo > 0.0);
    v.text = match (&v.val, v.better) {
        (None, _) => "no comparison: the control was not re-trained with the winner's seeds".into(),
        (Some(_), true) => BETTER.into(),
        (Some(_), false) => format!(
            "{NOT_SHOWN}: its config is the safe choice (`rankprune export --control` writes it)"
        ),
    };
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CandidateCost, TrialState};

    fn trial(id: i64) -> Trial {
        Trial {
            id,
            study_id: 1,
            number: id - 1,
            state: TrialState::Complete,
            config: String::new(),
            cost: CandidateCost {
                flops: 1,
                params: 1,
                size_bytes: 4,
            },
            proxy_acc: Some(0.5),
            proxy_loss: None,
            worker: None,
            error: None,
            queued_at: 0.0,
            started_at: None,
            finished_at: None,
        }
    }

    /// A run whose first `right` of 100 images are correct (validation and test alike).
    fn run(subject: Subject, seed: i64, right: usize) -> FinalRun {
        let bits: Vec<bool> = (0..100).map(|i| i < right).collect();
        FinalRun {
            subject,
            seed,
            val_top1: right as f64 / 100.0,
            top1: right as f64 / 100.0,
            top5: 1.0,
            loss: 0.1,
            epochs: 1,
            weights_path: None,
            val_correct: bits.clone(),
            test_correct: bits,
        }
    }

    #[test]
    fn a_control_that_is_best_is_not_beaten() {
        let (a, b) = (trial(1), trial(2));
        let mut runs = Vec::new();
        for (seed, (x, y, c)) in [(60, 55, 70), (62, 50, 71), (61, 52, 69)]
            .into_iter()
            .enumerate()
        {
            runs.push(run(Subject::Trial(1), seed as i64, x));
            runs.push(run(Subject::Trial(2), seed as i64, y));
            runs.push(run(Subject::Control, seed as i64, c));
        }
        let v = verdict(&runs, &[&a, &b], Some(&a));
        assert!(!v.better && v.text.starts_with(NOT_SHOWN), "{}", v.text);
        assert!(v.text.contains("export --control"));
        let val = v.val.unwrap();
        // Differences -10, -9, -8 points.
        assert!((val.seeds.mean + 0.09).abs() < 1e-12 && val.interval.hi < 0.0);
        assert_eq!((v.seeds, v.winner, v.short()), (3, Some(0), "not shown"));
        let names: Vec<&str> = v.subjects.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["trial 0", "trial 1", "control"]);
        assert!((v.subjects[2].val.mean - 0.70).abs() < 1e-12);
        assert!((v.subjects[2].val.sd - 0.01).abs() < 1e-12);
    }

    #[test]
    fn a_clear_steady_margin_is_better_and_one_seed_never_is() {
        let a = trial(1);
        let mut runs = Vec::new();
        for (seed, (x, c)) in [(80, 60), (81, 60), (79, 61), (80, 59)]
            .into_iter()
            .enumerate()
        {
            runs.push(run(Subject::Trial(1), seed as i64, x));
            runs.push(run(Subject::Control, seed as i64, c));
        }
        let v = verdict(&runs, &[&a], Some(&a));
        assert!(v.better && v.text == BETTER, "{}", v.text);
        assert!(v.val.unwrap().interval.lo > 0.0 && v.detectable_points().is_some());
        // The same margin on one seed: no interval, no claim.
        let v = verdict(&runs[..2], &[&a], Some(&a));
        assert!(!v.better && v.detectable_points().is_none(), "{v:?}");
        // Seeds the control lacks are left out of the pairing.
        let v = verdict(&runs[..3], &[&a], Some(&a));
        assert_eq!(v.seeds, 1);
    }

    #[test]
    fn without_a_control_there_is_no_comparison() {
        let a = trial(1);
        let runs = vec![run(Subject::Trial(1), 0, 50)];
        let v = verdict(&runs, &[&a], Some(&a));
        assert!(!v.better && v.val.is_none() && v.short() == "-");
        assert!(v.text.starts_with("no comparison"));
        let back: Verdict = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(back.text, v.text);
    }
}
