//! The final stage's verdict: the winner against the one-shot heuristic's config (the
//! control), both re-trained with the same training seeds, compared seed by seed and
//! image by image ([`crate::stats::paired`]). "Better" needs the paired validation
//! interval above 0; the test set never decides, it is only reported.

use crate::budget::AUTO_MIN_SEEDS;
use crate::stats::noise::{f64_or_nan, mean, sample_sd, t_975};
use crate::stats::paired::{Paired, Z_975, paired};
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
    /// With `[final] seeds = "auto"`: how the number of seeds was chosen.
    #[serde(default)]
    pub sizing: Option<Sizing>,
}

/// How `seeds = "auto"` sized the final stage from the noise it measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sizing {
    /// The half-width (points) asked for.
    pub margin: f64,
    /// One seed's sd of a finalist's difference from the control, pooled over the
    /// finalists, and the image set's standard error of the leader's difference (points).
    #[serde(deserialize_with = "f64_or_nan")]
    pub pair_sd: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub set_se: f64,
    /// The fewest seeds whose interval is that narrow (None: more than `cap`).
    pub needed: Option<usize>,
    pub cap: usize,
}

impl Sizing {
    /// Whether the image set's error alone makes the interval wider than the margin:
    /// then no number of seeds reaches it.
    pub fn out_of_reach(&self) -> bool {
        Z_975 * self.set_se >= self.margin
    }

    /// How many seeds the margin needs, for people: `7`, `more than 10`, or `more than
    /// any number of`.
    pub fn needed_text(&self) -> String {
        match self.needed {
            Some(n) => n.to_string(),
            None if self.out_of_reach() => "more than any number of".into(),
            None => format!("more than {}", self.cap),
        }
    }

    /// The seeds to re-train with: `needed`, within [`AUTO_MIN_SEEDS`, `cap`]; the
    /// fewest when the margin is out of any seed count's reach, `cap` when it is only
    /// out of `cap`'s.
    pub fn seeds(&self) -> usize {
        let least = AUTO_MIN_SEEDS.min(self.cap);
        match self.needed {
            Some(n) => n.clamp(least, self.cap),
            None if self.out_of_reach() => least,
            None => self.cap,
        }
    }
}

/// The noise measured so far, and the seeds that resolve `margin` (points) at 95%: the
/// smallest n with sqrt((t(0.975, n - 1) pair_sd / sqrt(n))^2 + (1.96 set_se)^2) <= margin,
/// the verdict's own half-width. None below two paired seeds or without a control.
pub fn seeds_needed(
    runs: &[FinalRun],
    finalists: &[&Trial],
    margin: f64,
    cap: usize,
) -> Option<Sizing> {
    let control = runs_of(runs, Subject::Control);
    let mut vars = Vec::new();
    let mut leader: Option<(f64, Paired)> = None;
    for t in finalists {
        let ours = runs_of(runs, Subject::Trial(t.id));
        let (a, b) = pair_up(&ours, &control);
        if a.len() < 2 {
            continue;
        }
        let Some(p) = paired(&bits(&a, true), &bits(&b, true)) else {
            continue;
        };
        let d: Vec<f64> = a
            .iter()
            .zip(&b)
            .map(|(x, y)| x.val_top1 - y.val_top1)
            .collect();
        vars.push(sample_sd(&d).powi(2));
        let m = mean(&a.iter().map(|r| r.val_top1).collect::<Vec<f64>>());
        if leader.is_none_or(|(best, _)| m > best) {
            leader = Some((m, p));
        }
    }
    let (_, lead) = leader?;
    let pair_sd = 100.0 * mean(&vars).sqrt();
    let set_se = 100.0 * lead.set_se;
    let half = |n: usize| {
        let seeds = t_975(n - 1) * pair_sd / (n as f64).sqrt();
        (seeds.powi(2) + (Z_975 * set_se).powi(2)).sqrt()
    };
    Some(Sizing {
        margin,
        pair_sd,
        set_se,
        needed: (2..=cap).find(|&n| half(n) <= margin),
        cap,
    })
}

/// The runs of `ours` and `theirs` with the seeds both have, in seed order.
fn pair_up<'a>(
    ours: &[&'a FinalRun],
    theirs: &[&'a FinalRun],
) -> (Vec<&'a FinalRun>, Vec<&'a FinalRun>) {
    ours.iter()
        .filter_map(|r| Some((*r, *theirs.iter().find(|c| c.seed == r.seed)?)))
        .unzip()
}

/// Per-image correctness of each run, on validation or test.
fn bits(rs: &[&FinalRun], val: bool) -> Vec<Vec<bool>> {
    rs.iter()
        .map(|r| {
            if val {
                r.val_correct.clone()
            } else {
                r.test_correct.clone()
            }
        })
        .collect()
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
        if let (Some(w), Some(v)) = (self.winner, &self.val) {
            out.push(format!(
                "  trial {w} - control, {} paired seed{}: validation {}",
                self.seeds,
                if self.seeds == 1 { "" } else { "s" },
                v.describe(true)
            ));
            if let Some(t) = &self.test {
                out.push(format!("  test (reported only) {}", t.describe(true)));
            }
            if let Some(d) = self.detectable_points() {
                out.push(format!(
                    "  smallest validation margin these seeds resolve: ±{d:.2} points"
                ));
            }
            if let Some(s) = &self.sizing {
                out.push(format!(
                    "  seeds = \"auto\": ±{:.2} points needs {} seeds (pair sd {:.2}, image-set se {:.2} points)",
                    s.margin,
                    s.needed_text(),
                    s.pair_sd,
                    s.set_se
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
        sizing: None,
    };
    let Some(w) = winner else {
        v.text = "no comparison: no finalist was re-trained".into();
        return v;
    };
    // The seeds both were re-trained with, in order.
    let (ours, theirs) = pair_up(&runs_of(runs, Subject::Trial(w.id)), &control);
    v.seeds = ours.len();
    v.val = paired(&bits(&ours, true), &bits(&theirs, true));
    v.test = paired(&bits(&ours, false), &bits(&theirs, false));
    v.better = v.val.is_some_and(|p| p.interval.lo > 0.0);
    v.text = match (&v.val, v.better) {
        (None, _) if control.is_empty() => {
            "no comparison: the study has no control (its objective has no cost target)".into()
        }
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
    use crate::store::TrialState;

    fn trial(id: i64) -> Trial {
        Trial::fixture(id, TrialState::Complete, Some(0.5), 1)
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

    /// Differences 2, 4, 3 points (sd 1); per image, the finalist's extra right answers
    /// average 1, 1, 2/3, 1/3 over seeds on 4 of 100 images.
    #[test]
    fn auto_seeds_are_sized_by_hand() {
        let a = trial(1);
        let mut runs = Vec::new();
        for (seed, right) in [62, 64, 63].into_iter().enumerate() {
            runs.push(run(Subject::Trial(1), seed as i64, right));
            runs.push(run(Subject::Control, seed as i64, 60));
        }
        let s = seeds_needed(&runs, &[&a], 3.5, 10).unwrap();
        assert!((s.pair_sd - 1.0).abs() < 1e-9, "{s:?}");
        // Per image over the 3 seeds: means 1, 1, 2/3, 1/3 and 96 zeros; seed variances
        // 0, 0, 1/3, 1/3 and zeros. The set's variance: that of the means, less the mean
        // seed variance over 3 seeds; over 100 images, in points.
        let var_means = (1.0 + 1.0 + 4.0 / 9.0 + 1.0 / 9.0 - 100.0 * 0.03f64.powi(2)) / 99.0;
        let set_var = var_means - (2.0 / 3.0 / 100.0) / 3.0;
        let se = 100.0 * (set_var / 100.0).sqrt();
        assert!((s.set_se - se).abs() < 1e-9, "{s:?} vs {se}");
        // 1.96 se = 2.95 leaves sqrt(3.5^2 - 2.95^2) = 1.88 for t(0.975, n - 1) / sqrt(n):
        // 2.48 at n = 3, 1.59 at n = 4.
        assert_eq!((s.needed, s.seeds()), (Some(4), 4));
        // Just above the set's floor: t / sqrt(n) <= 0.55 takes 16 seeds, past the cap.
        let s = seeds_needed(&runs, &[&a], 1.96 * se + 0.05, 10).unwrap();
        assert!(!s.out_of_reach());
        assert_eq!((s.needed, s.seeds()), (None, 10));
        // Below the set's own error: no seed count reaches it, so the fewest.
        let s = seeds_needed(&runs, &[&a], 0.5, 10).unwrap();
        assert!(s.out_of_reach());
        assert_eq!((s.needed, s.seeds()), (None, 3));
        // Fewer than two paired seeds measure nothing.
        assert!(seeds_needed(&runs[..2], &[&a], 3.5, 10).is_none());
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
