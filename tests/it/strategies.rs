//! Strategies on cheap synthetic objectives: every proposal meets the cost target and is
//! new, runs are reproducible by seed, and warm starts come first.

use rankprune::arch::ArchSpec;
use rankprune::budget::StrategyName;
use rankprune::cost;
use rankprune::graph::build::of_arch;
use rankprune::search::problem::{Problem, Target};
use rankprune::search::space::{Point, SpaceFile};
use rankprune::search::strategy::make;
use rankprune::search::synthetic::CompressionModel;
use std::collections::HashSet;

fn problem(reduction: f64) -> Problem {
    let base = ArchSpec::parse("vgg11_bn@0.25").unwrap().build(10);
    let space = SpaceFile::from_toml(
        "[decomposition]\nrank = \"fraction\"\nmin = 0.0\nmax = 1.0\n[pruning]\nmax = 0.8\n",
        "s.toml",
    )
    .unwrap()
    .resolve(&of_arch(&base), None, "s.toml")
    .unwrap();
    let flops = cost::count(&base).flops;
    let target = Target {
        max_flops: Some((flops as f64 / reduction) as u64),
        max_params: None,
        max_latency_us: None,
    };
    Problem::new(base.into(), space, target)
}

/// Runs `trials` proposals of `batch` at a time; returns every proposal in order.
fn run(
    name: StrategyName,
    pareto: bool,
    seed: u64,
    trials: usize,
    batch: usize,
    p: &Problem,
) -> Vec<Point> {
    let model = CompressionModel::new(&p.space, 7, 0.002);
    let mut s = make(name, seed, pareto);
    let mut all = Vec::new();
    while all.len() < trials {
        let props = s.propose(batch, p);
        assert!(
            !props.is_empty(),
            "{name:?} ran dry after {} proposals",
            all.len()
        );
        for q in props {
            let acc = model.sample(&p.space, &q, all.len() as u64);
            s.observe(&p.observation(q.clone(), Some(acc)));
            all.push(q);
        }
    }
    all
}

#[test]
fn every_proposal_is_feasible_new_and_reproducible() {
    let p = problem(6.0);
    for (name, pareto) in [
        (StrategyName::Evolution, false),
        (StrategyName::Evolution, true),
        (StrategyName::Bayes, false),
        (StrategyName::Bayes, true),
    ] {
        let a = run(name, pareto, 5, 24, 3, &p);
        let mut seen = HashSet::new();
        for q in &a {
            assert!(p.feasible(q), "{name:?}: infeasible proposal");
            assert!(seen.insert(q.clone()), "{name:?}: duplicate proposal");
            assert!(q.iter().zip(&p.space.knobs).all(|(&l, k)| l < k.levels));
        }
        assert_eq!(
            a,
            run(name, pareto, 5, 24, 3, &p),
            "{name:?} is not reproducible"
        );
    }
}

#[test]
fn warm_starts_are_proposed_first() {
    let mut p = problem(4.0);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
    let seed = p.repair(vec![0; p.space.dims()], &mut rng).unwrap();
    assert!(p.feasible(&seed));
    p.warm_starts = vec![seed.clone()];
    for name in [StrategyName::Evolution, StrategyName::Bayes] {
        let props = make(name, 0, false).propose(2, &p);
        assert_eq!(props[0], seed, "{name:?}");
    }
}

#[test]
fn repair_reaches_the_target_from_the_full_model() {
    let p = problem(10.0);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
    let full: Point = p
        .space
        .knobs
        .iter()
        .map(|k| if k.cheaper_up() { 0 } else { k.levels - 1 })
        .collect();
    assert!(!p.feasible(&full));
    let fixed = p.repair(full, &mut rng).unwrap();
    assert!(p.feasible(&fixed));
}
