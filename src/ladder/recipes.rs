//! Recipe sensitivity of a fidelity run (`fidelity --final-epochs 1,2`): whether "the
//! best candidate" depends on the final recipe. Each other recipe re-trains every
//! candidate with the reference's paired seeds; its ranking by mean validation accuracy
//! is compared with the reference's by Kendall's tau, with a bootstrap interval over
//! candidates. Both means carry seed noise, so the seeds' own ceiling (one seed against
//! another) bounds what agreement can show.

use super::Probe;
use super::fidelity::{Record, reference_runs};
use crate::stats::noise::mean;
use crate::stats::{bootstrap_95, kendall_tau};
use serde::Serialize;

/// One other recipe's ranking against the reference's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecipeAgreement {
    /// The reference recipe and the other one, as probes name them (`final:1`, `final:2`).
    pub reference: String,
    pub recipe: String,
    /// Paired seeds per recipe, and candidates re-trained with every seed of both.
    pub seeds: usize,
    pub n: usize,
    /// Kendall's tau between the two recipes' mean accuracies, and its 95% interval
    /// (2,000 bootstrap draws over candidates).
    pub kendall_tau: f64,
    pub tau_95: (f64, f64),
}

/// The agreement of the recipe whose seeds are `other` with the reference's (`reference`,
/// the same seeds); None when fewer than 3 candidates have both.
pub fn agreement(
    records: &[Record],
    reference: &[Probe],
    other: &[Probe],
) -> Option<RecipeAgreement> {
    let a = reference_runs(records, reference);
    let b = reference_runs(records, other);
    let (x, y): (Vec<f64>, Vec<f64>) = a
        .iter()
        .filter_map(|(c, runs)| Some((mean(runs), mean(b.get(c)?))))
        .unzip();
    (x.len() >= 3).then(|| RecipeAgreement {
        reference: reference.first().map(Probe::to_string).unwrap_or_default(),
        recipe: other.first().map(Probe::to_string).unwrap_or_default(),
        seeds: other.len(),
        n: x.len(),
        kendall_tau: kendall_tau(&x, &y),
        tau_95: bootstrap_95(&x, &y, kendall_tau, 2000, 0),
    })
}

/// One line per agreement, for the fidelity table.
pub fn lines(agreements: &[RecipeAgreement]) -> String {
    agreements
        .iter()
        .map(|r| {
            format!(
                "Recipe sensitivity: {} ranks the {} candidates at Kendall tau {:+.2}, 95% [{:+.2}, {:+.2}] against {} (means of {} paired seeds each).\n",
                r.recipe, r.n, r.kendall_tau, r.tau_95.0, r.tau_95.1, r.reference, r.seeds
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ladder::Scored;

    fn record(candidate: usize, epochs: usize, seed: u64, acc: f64) -> Record {
        Record {
            candidate,
            probe: Probe::Final { epochs, seed },
            scored: Scored {
                scores: [("acc".to_string(), acc)].into(),
                wall_s: 1.0,
                cpu_s: 1.0,
            },
        }
    }

    #[test]
    fn the_recipes_rankings_are_compared_by_their_seed_means() {
        // Four candidates. One epoch, two seeds: means 0.5, 0.6, 0.7, 0.8. Two epochs:
        // means 0.55, 0.65, 0.85, 0.75 (the last two swapped): one discordant pair of
        // six, tau = (5 - 1) / 6.
        let one = [0.5, 0.6, 0.7, 0.8];
        let two = [0.55, 0.65, 0.85, 0.75];
        let mut records = Vec::new();
        for c in 0..4 {
            for (seed, d) in [(0, -0.01), (1, 0.01)] {
                records.push(record(c, 1, seed, one[c] + d));
                records.push(record(c, 2, seed, two[c] - d));
            }
        }
        // A candidate without the second recipe's seeds is left out.
        records.push(record(4, 1, 0, 0.9));
        records.push(record(4, 1, 1, 0.9));
        let finals =
            |epochs| -> Vec<Probe> { (0..2).map(|seed| Probe::Final { epochs, seed }).collect() };
        let r = agreement(&records, &finals(1), &finals(2)).unwrap();
        assert_eq!((r.n, r.seeds), (4, 2));
        assert!((r.kendall_tau - 4.0 / 6.0).abs() < 1e-12, "{r:?}");
        assert!(
            r.tau_95.0 <= r.kendall_tau && r.kendall_tau <= r.tau_95.1,
            "{r:?}"
        );
        assert_eq!(
            (r.reference.as_str(), r.recipe.as_str()),
            ("final:1", "final:2")
        );
        assert!(lines(&[r]).contains("final:2 ranks the 4 candidates at Kendall tau +0.67"));
        // Too few candidates with both: no figure.
        assert_eq!(agreement(&records[..8], &finals(1), &finals(2)), None);
    }
}
