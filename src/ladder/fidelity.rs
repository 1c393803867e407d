//! Fidelity of cheap probes: score candidates (drawn by the caller at a study's target:
//! `search::candidates`) with every probe and with the final recipe, and report how well each probe's
//! ranking of the candidates agrees with the final validation accuracy (Kendall's tau
//! with a 95% bootstrap interval, Spearman's rho) and what it costs.
//!
//! Results are appended to a JSON-lines file as they come, so a run that is stopped
//! resumes where it was.

use super::{Context, Probe, Scored, higher_is_better, score};
use crate::stats::noise::{Noise, mean, noise, seeds_for_margin};
use crate::stats::{bootstrap_95, bootstrap_95_by, kendall_tau, spearman_rho};
use crate::{Error, Result};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One candidate of a fidelity run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub index: usize,
    /// `warm` (a warm-start point), `mutant` (one to four mutations of one) or `random`,
    /// before it was filled up to the budget.
    pub origin: String,
    pub config: serde_json::Value,
    pub flops: u64,
    pub params: u64,
}

/// One line of the results file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub candidate: usize,
    /// `signal` in files written before probes had their name.
    #[serde(alias = "signal")]
    pub probe: Probe,
    #[serde(flatten)]
    pub scored: Scored,
}

/// The files of a fidelity run in its output folder.
pub struct RunFiles {
    pub candidates: PathBuf,
    pub results: PathBuf,
}

impl RunFiles {
    pub fn new(dir: &Path) -> Self {
        Self {
            candidates: dir.join("candidates.json"),
            results: dir.join("results.jsonl"),
        }
    }

    /// The stored candidates, or `draw()` written down (`draw` runs only when none are
    /// stored: a resumed run or a second shard does no drawing work).
    pub fn candidates(
        &self,
        draw: impl FnOnce() -> Result<Vec<Candidate>>,
    ) -> Result<Vec<Candidate>> {
        let file = self.candidates.display().to_string();
        if self.candidates.exists() {
            let text = std::fs::read_to_string(&self.candidates)
                .map_err(|e| Error::Failure(format!("{file}: {e}")))?;
            return serde_json::from_str(&text)
                .map_err(|e| Error::BadInput(format!("{file}: {e}")));
        }
        let c = draw()?;
        if let Some(dir) = self.candidates.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::Failure(format!("{file}: {e}")))?;
        }
        let text = serde_json::to_string_pretty(&c).expect("candidates serialize");
        crate::outpath::write_output(&self.candidates, text.as_bytes())?;
        Ok(c)
    }

    /// Records how this run builds and fine-tunes its candidates (`build.json`: the
    /// repair batches, and the proxy's schedule when it is not the default), or checks
    /// that a resumed run does the same, so one run's records never mix two builds.
    pub fn check_build(&self, ctx: &Context) -> Result<()> {
        let path = self.candidates.with_file_name("build.json");
        let file = path.display().to_string();
        let repair = ctx.repair;
        let mut want = serde_json::json!({ "repair": repair });
        if ctx.proxy.schedule != crate::train::LrSchedule::Plateau {
            want["proxy_schedule"] = serde_json::json!(ctx.proxy.schedule);
        }
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let got: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| Error::BadInput(format!("{file}: {e}")))?;
                if got != want {
                    return Err(Error::BadInput(format!(
                        "{file}: this run built its candidates with {got}, the budget asks for {want}: use another --out"
                    )));
                }
                Ok(())
            }
            // A run from before build.json existed built without repair.
            Err(_) if repair == 0 || !self.results.exists() => {
                crate::outpath::write_output(&path, want.to_string().as_bytes())
            }
            Err(_) => Err(Error::BadInput(format!(
                "{}: records of candidates built without repair; the budget asks for search.repair = {repair}: use another --out",
                self.results.display()
            ))),
        }
    }

    /// Every record written so far (a torn last line, from a kill mid-write, is dropped).
    pub fn records(&self) -> Result<Vec<Record>> {
        let Ok(text) = std::fs::read_to_string(&self.results) else {
            return Ok(Vec::new());
        };
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// Ends a torn last line (a kill mid-write), so the next record starts on its own.
    pub fn end_torn_line(&self) -> Result<()> {
        let Ok(bytes) = std::fs::read(&self.results) else {
            return Ok(());
        };
        if bytes.last().is_some_and(|&b| b != b'\n') {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&self.results)
                .map_err(|e| Error::Failure(format!("{}: {e}", self.results.display())))?;
            f.write_all(b"\n")
                .map_err(|e| Error::Failure(format!("{}: {e}", self.results.display())))?;
        }
        Ok(())
    }

    pub fn append(&self, r: &Record) -> Result<()> {
        let file = self.results.display().to_string();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.results)
            .map_err(|e| Error::Failure(format!("{file}: {e}")))?;
        // One write of the whole line: appends from concurrent shards never interleave.
        let line = serde_json::to_string(r).expect("records serialize") + "\n";
        f.write_all(line.as_bytes())
            .and_then(|_| f.sync_data())
            .map_err(|e| Error::Failure(format!("{file}: {e}")))
    }
}

/// Scores every (candidate, probe) pair not yet in the results file, cheap probes for
/// all candidates before the final ones; `progress(done, total, what)` after each.
/// `shard = (k, n)` takes only the candidates whose index is k modulo n, so n processes
/// can share a run (each appends whole lines to the same file).
pub fn run(
    ctx: &Context,
    candidates: &[Candidate],
    probes: &[Probe],
    files: &RunFiles,
    shard: (usize, usize),
    device: &Device,
    mut progress: impl FnMut(usize, usize, &str),
) -> Result<Vec<Record>> {
    let candidates: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.index % shard.1.max(1) == shard.0)
        .collect();
    files.end_torn_line()?;
    let mut records = files.records()?;
    let done: HashSet<(usize, Probe)> = records.iter().map(|r| (r.candidate, r.probe)).collect();
    let mut order: Vec<Probe> = probes.to_vec();
    order.sort_by_key(|s| matches!(s, Probe::Final { .. }));
    let total = order.len() * candidates.len();
    let mut count = done.len();
    for &probe in &order {
        for &c in &candidates {
            if done.contains(&(c.index, probe)) {
                continue;
            }
            let config =
                crate::config::LayerConfig::from_json(&c.config.to_string(), "<candidate>")?;
            let candidate = ctx.build(&config, "<candidate>", device)?;
            let scored = score(probe, ctx, candidate, device)?;
            let r = Record {
                candidate: c.index,
                probe,
                scored,
            };
            files.append(&r)?;
            records.push(r);
            count += 1;
            progress(count, total, &format!("candidate {} {probe}", c.index));
        }
    }
    Ok(records)
}

/// How well one score of one probe ranks the candidates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fidelity {
    pub probe: String,
    pub score: String,
    /// Candidates with both this score and every re-training of the reference.
    pub n: usize,
    pub kendall_tau: f64,
    pub tau_95: (f64, f64),
    pub spearman_rho: f64,
    /// The mean Kendall tau against each seed's re-training alone, with its 95%
    /// bootstrap interval: like with like beside the ceiling (one seed's ranking against
    /// another's). None with one seed, and for the reference's own rows.
    pub tau_one_seed: Option<f64>,
    pub tau_one_seed_95: Option<(f64, f64)>,
    /// Whether that interval reaches the ceiling: the probe ranks as well as one
    /// re-training does.
    pub at_ceiling: Option<bool>,
    /// Mean seconds per candidate.
    pub cpu_s: f64,
    pub wall_s: f64,
}

/// Margins (in accuracy points) the report says the paired seed count for.
pub const MARGINS: [f64; 2] = [0.3, 0.5];

/// The paired seeds a margin needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedsNeeded {
    /// Accuracy points either side of a mean paired difference, at 95%.
    pub margin_points: f64,
    /// None: more than a thousand.
    pub seeds: Option<usize>,
}

/// A fidelity run's report: every probe against the mean of the reference's seeds, and
/// (with two seeds or more) the reference's own noise.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The reference's re-trainings, one per seed.
    pub finals: Vec<Probe>,
    pub rows: Vec<Fidelity>,
    pub noise: Option<Noise>,
    pub seeds_needed: Vec<SeedsNeeded>,
}

/// One probe score of one candidate: (oriented score, candidate, its record).
type Scoring<'a> = (f64, usize, &'a Scored);

/// One probe score's row: its ranking against the seeds' mean and, when `ceiling` is
/// given (two seeds or more, a cheap probe), against each seed alone.
fn fidelity_row(
    probe: Probe,
    score: String,
    rows: &[Scoring],
    runs: &BTreeMap<usize, Vec<f64>>,
    ceiling: Option<f64>,
) -> Fidelity {
    let x: Vec<f64> = rows.iter().map(|r| r.0).collect();
    let seeds: Vec<&Vec<f64>> = rows.iter().map(|r| &runs[&r.1]).collect();
    let y: Vec<f64> = seeds.iter().map(|v| mean(v)).collect();
    let n = rows.len();
    let cost = |f: fn(&Scored) -> f64| rows.iter().map(|r| f(r.2)).sum::<f64>() / n as f64;
    // The mean over seeds of tau against that seed, of the candidates `idx`.
    let per_seed = |idx: &[usize]| {
        let k = seeds.first().map_or(0, |v| v.len());
        let xs: Vec<f64> = idx.iter().map(|&i| x[i]).collect();
        let taus: Vec<f64> = (0..k)
            .map(|s| kendall_tau(&xs, &idx.iter().map(|&i| seeds[i][s]).collect::<Vec<_>>()))
            .filter(|t| t.is_finite())
            .collect();
        mean(&taus)
    };
    let all: Vec<usize> = (0..n).collect();
    let one_seed = ceiling.map(|_| {
        let tau = per_seed(&all);
        (tau, bootstrap_95_by(n, 2000, 0, per_seed))
    });
    Fidelity {
        probe: probe.to_string(),
        score,
        n,
        kendall_tau: kendall_tau(&x, &y),
        tau_95: bootstrap_95(&x, &y, kendall_tau, 2000, 0),
        spearman_rho: spearman_rho(&x, &y),
        tau_one_seed: one_seed.map(|o| o.0),
        tau_one_seed_95: one_seed.map(|o| o.1),
        at_ceiling: ceiling
            .zip(one_seed)
            .filter(|(c, o)| c.is_finite() && o.1.1.is_finite())
            .map(|(c, o)| o.1.1 >= c),
        cpu_s: cost(|s| s.cpu_s),
        wall_s: cost(|s| s.wall_s),
    }
}

/// The reference's validation accuracy per candidate, one value per probe of `finals`
/// (only candidates re-trained with all of them).
pub(crate) fn reference_runs(records: &[Record], finals: &[Probe]) -> BTreeMap<usize, Vec<f64>> {
    let mut runs: BTreeMap<usize, Vec<Option<f64>>> = BTreeMap::new();
    for r in records {
        if let Some(i) = finals.iter().position(|f| *f == r.probe)
            && let Some(&acc) = r.scored.scores.get("acc")
        {
            runs.entry(r.candidate)
                .or_insert_with(|| vec![None; finals.len()])[i] = Some(acc);
        }
    }
    runs.into_iter()
        .filter_map(|(c, v)| Some((c, v.into_iter().collect::<Option<Vec<f64>>>()?)))
        .collect()
}

/// Kendall's tau and Spearman's rho of every probe's scores (oriented so that higher
/// means better) against the mean validation accuracy of the reference's seeds
/// (`finals`), with 2,000 bootstrap draws; with two seeds or more, the seeds' ceiling
/// and noise, and the paired seeds the [`MARGINS`] need.
pub fn summarize(records: &[Record], finals: &[Probe]) -> Summary {
    let runs = reference_runs(records, finals);
    let scored: HashSet<usize> = records.iter().map(|r| r.candidate).collect();
    if runs.len() < scored.len() {
        tracing::warn!(
            left_out = scored.len() - runs.len(),
            reference = finals.len(),
            "candidates without every re-training of the reference are left out"
        );
    }
    let table: Vec<Vec<f64>> = runs.values().cloned().collect();
    let noise = (finals.len() >= 2 && table.len() >= 2).then(|| noise(&table));
    // (oriented score, candidate, the probe's record) per (probe, score name).
    let mut by: BTreeMap<(Probe, String), Vec<Scoring>> = BTreeMap::new();
    for r in records.iter().filter(|r| runs.contains_key(&r.candidate)) {
        for (name, &v) in &r.scored.scores {
            let x = if higher_is_better(name) { v } else { -v };
            by.entry((r.probe, name.clone()))
                .or_default()
                .push((x, r.candidate, &r.scored));
        }
    }
    let rows = by
        .into_iter()
        .map(|((probe, score), rows)| {
            let ceiling = noise.as_ref().filter(|_| !finals.contains(&probe));
            fidelity_row(probe, score, &rows, &runs, ceiling.map(|z| z.ceiling))
        })
        .collect();
    let seeds_needed = match &noise {
        Some(z) => MARGINS
            .iter()
            .map(|&m| SeedsNeeded {
                margin_points: m,
                seeds: seeds_for_margin(z.pair_sd, m / 100.0, 1000),
            })
            .collect(),
        None => Vec::new(),
    };
    Summary {
        finals: finals.to_vec(),
        rows,
        noise,
        seeds_needed,
    }
}

/// The fidelity table as Markdown, with the reference's noise below it.
pub fn table(summary: &Summary) -> String {
    use std::fmt::Write as _;
    let mut s = String::from(
        "| probe | score | n | Kendall tau | 95% interval | Spearman rho | tau against one seed | 95% interval | at ceiling | CPU s / candidate | wall s / candidate |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &summary.rows {
        let _ = writeln!(
            s,
            "| {} | {}{} | {} | {:+.2} | [{:+.2}, {:+.2}] | {:+.2} | {} | {} | {} | {:.1} | {:.1} |",
            r.probe,
            if higher_is_better(&r.score) { "" } else { "-" },
            r.score,
            r.n,
            r.kendall_tau,
            r.tau_95.0,
            r.tau_95.1,
            r.spearman_rho,
            r.tau_one_seed.map_or("-".into(), |t| format!("{t:+.2}")),
            r.tau_one_seed_95
                .map_or("-".into(), |(a, b)| format!("[{a:+.2}, {b:+.2}]")),
            r.at_ceiling.map_or("-", |c| if c { "yes" } else { "no" }),
            r.cpu_s,
            r.wall_s
        );
    }
    let names: Vec<String> = summary.finals.iter().map(Probe::to_string).collect();
    let _ = writeln!(
        s,
        "\nReference: the mean validation accuracy of {} ({} paired seeds).",
        names.join(", "),
        names.len()
    );
    if let Some(z) = &summary.noise {
        let _ = writeln!(
            s,
            "Ceiling (one seed's ranking against another's, mean Kendall tau over seed pairs): {:+.2}. \
             Reliability of one re-training (mean Spearman rho between seeds): {:.2}; of the mean of {} (Spearman-Brown): {:.2}.",
            z.ceiling, z.run_reliability, z.seeds, z.mean_reliability
        );
        let _ = writeln!(
            s,
            "Noise: one re-training's seed sd {:.2} points; sd between the candidates' means {:.2} points, \
             {:.2} times what seed noise alone gives with {} seeds (about 1: these candidates cannot be told apart), \
             {:.2} points once that noise is taken out; one seed's sd of a paired difference {:.2} points.",
            100.0 * z.run_sd,
            100.0 * z.between_sd,
            z.between_over_noise,
            z.seeds,
            100.0 * z.candidate_sd,
            100.0 * z.pair_sd
        );
        for n in &summary.seeds_needed {
            let seeds = n.seeds.map_or("more than 1000".into(), |k| k.to_string());
            let _ = writeln!(
                s,
                "Paired seeds for a 95% interval of +-{:.1} points on a difference: {seeds}.",
                n.margin_points
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(candidate: usize, probe: Probe, pairs: &[(&str, f64)]) -> Record {
        Record {
            candidate,
            probe,
            scored: Scored {
                scores: pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect(),
                wall_s: 2.0,
                cpu_s: 3.0,
            },
        }
    }

    #[test]
    fn summary_orients_losses_and_pairs_by_candidate() {
        let fin = Probe::Final { epochs: 1, seed: 0 };
        let bn = Probe::BnRecal { batches: 2 };
        let mut rs = Vec::new();
        for (i, acc) in [0.5, 0.7, 0.6, 0.9].into_iter().enumerate() {
            rs.push(record(i, fin, &[("acc", acc), ("loss", 1.0 - acc)]));
            // Loss falls as the final accuracy rises: a perfect probe once negated.
            rs.push(record(i, bn, &[("acc", 0.1), ("loss", 2.0 - acc)]));
        }
        // A candidate without a final result is left out.
        rs.push(record(9, bn, &[("acc", 0.2), ("loss", 0.0)]));
        let summary = summarize(&rs, &[fin]);
        let rows = &summary.rows;
        let loss = rows
            .iter()
            .find(|r| r.probe == "bn:2" && r.score == "loss")
            .unwrap();
        assert_eq!((loss.n, loss.kendall_tau, loss.spearman_rho), (4, 1.0, 1.0));
        assert_eq!((loss.cpu_s, loss.wall_s), (3.0, 2.0));
        let acc = rows
            .iter()
            .find(|r| r.probe == "bn:2" && r.score == "acc")
            .unwrap();
        assert!(acc.kendall_tau.is_nan(), "a constant score ranks nothing");
        assert!(table(&summary).contains("| bn:2 | -loss | 4 | +1.00 |"));
        // One seed: no noise to report.
        assert!(summary.noise.is_none() && loss.at_ceiling.is_none());
    }

    /// Two paired seeds: the reference is their mean, and the noise is the table's.
    #[test]
    fn two_seeds_give_the_mean_as_reference_and_their_noise() {
        let finals = [
            Probe::Final { epochs: 1, seed: 0 },
            Probe::Final { epochs: 1, seed: 1 },
        ];
        let bn = Probe::BnRecal { batches: 2 };
        let mut rs = Vec::new();
        // The noise test's table (stats::noise): seed 0 ranks 0 < 1 < 2, seed 1 0 < 2 < 1.
        for (i, accs) in [[0.01, 0.02], [0.03, 0.06], [0.04, 0.05]]
            .into_iter()
            .enumerate()
        {
            rs.push(record(i, finals[0], &[("acc", accs[0])]));
            rs.push(record(i, finals[1], &[("acc", accs[1])]));
            // Ranks by the mean (0.015, 0.045, 0.045): tied at the top.
            rs.push(record(i, bn, &[("acc", [0.1, 0.3, 0.2][i])]));
        }
        // Candidate 3 lacks its second re-training: left out of the reference.
        rs.push(record(3, finals[0], &[("acc", 0.5)]));
        let summary = summarize(&rs, &finals);
        let z = summary.noise.as_ref().unwrap();
        assert_eq!((z.candidates, z.seeds), (3, 2));
        assert!((z.ceiling - 1.0 / 3.0).abs() < 1e-9);
        assert!((z.pair_sd - (4.0f64 / 3.0).sqrt() / 100.0).abs() < 1e-12);
        let bn_acc = summary
            .rows
            .iter()
            .find(|r| r.probe == "bn:2" && r.score == "acc")
            .unwrap();
        assert_eq!(bn_acc.n, 3);
        // tau-b of (1, 3, 2) against (1.5, 4.5, 4.5): 2 concordant, 1 tied in y.
        assert!(
            (bn_acc.kendall_tau - 2.0 / 6f64.sqrt()).abs() < 1e-9,
            "{}",
            bn_acc.kendall_tau
        );
        // Against each seed alone: seed 0 (1, 3, 4) disagrees with bn's (1, 3, 2) on one
        // pair of three (tau 1/3), seed 1 (2, 6, 5) agrees (tau 1): the mean is 2/3,
        // above the ceiling of 1/3.
        assert!((bn_acc.tau_one_seed.unwrap() - 2.0 / 3.0).abs() < 1e-9);
        let (_, hi) = bn_acc.tau_one_seed_95.unwrap();
        assert_eq!(bn_acc.at_ceiling, Some(hi >= z.ceiling));
        assert_eq!(bn_acc.at_ceiling, Some(true));
        // The reference's own rows are not held against the ceiling.
        let own = summary.rows.iter().find(|r| r.probe == "final:1").unwrap();
        assert_eq!((own.tau_one_seed, own.at_ceiling), (None, None));
        // A paired sd of 1.15 points: 0.3 points take more seeds than 0.5.
        let [a, b] = [&summary.seeds_needed[0], &summary.seeds_needed[1]];
        assert_eq!((a.margin_points, b.margin_points), (0.3, 0.5));
        assert!(a.seeds.unwrap() > b.seeds.unwrap());
        assert_eq!(b.seeds, seeds_for_margin(z.pair_sd, 0.005, 1000));
        let t = table(&summary);
        assert!(
            t.contains("mean validation accuracy of final:1, final:1@1 (2 paired seeds)"),
            "{t}"
        );
        assert!(t.contains("Ceiling (one seed's ranking against another's, mean Kendall tau over seed pairs): +0.33"), "{t}");
    }

    #[test]
    fn records_survive_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let files = RunFiles::new(dir.path());
        let r = record(0, Probe::Compressed, &[("acc", 0.25)]);
        files.append(&r).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&files.results)
            .unwrap();
        f.write_all(b"{\"candidate\": 1, \"sig").unwrap();
        assert_eq!(files.records().unwrap(), vec![r.clone()]);
        files.end_torn_line().unwrap();
        let r2 = record(1, Probe::FineTune { steps: 5 }, &[("acc", 0.5)]);
        files.append(&r2).unwrap();
        assert_eq!(files.records().unwrap(), vec![r, r2]);
        let line = std::fs::read_to_string(&files.results).unwrap();
        assert!(line.contains("\"probe\":\"ft:5\""), "{line}");
    }

    #[test]
    fn records_written_before_probes_had_their_name_still_read() {
        let old =
            r#"{"candidate":3,"signal":"bn:2","scores":{"acc":0.5},"wall_s":1.0,"cpu_s":2.0}"#;
        let r: Record = serde_json::from_str(old).unwrap();
        assert_eq!((r.candidate, r.probe), (3, Probe::BnRecal { batches: 2 }));
    }
}
