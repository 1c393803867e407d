//! Strategy benchmark on synthetic objectives (no training): `cargo bench --bench strategies`.
//! Prints Markdown tables: best feasible value at 50/100/200 trials (mean ± sd over 10
//! seeds) for random, evolution and bayes on (a) a compression-shaped accuracy model over
//! the vgg19_bn space (76 knobs) under an 8x FLOPs target, (b) Ackley in 46 dimensions;
//! hypervolume in Pareto mode on (a) without a target; proposal latency at 500 observed
//! trials. `BENCH_SEEDS=3` shortens it.

use rankprune::arch::ArchSpec;
use rankprune::budget::StrategyName;
use rankprune::cost;
use rankprune::graph::build::of_arch;
use rankprune::search::problem::{Problem, Target};
use rankprune::search::space::{Point, SpaceFile};
use rankprune::search::strategy::make;
use rankprune::search::synthetic::{CompressionModel, hypervolume, neg_ackley};
use std::path::Path;
use std::time::Instant;

/// Per trial of one run: observed value, true value, FLOPs fraction.
type Run = Vec<(f64, f64, f64)>;

const BUDGETS: [usize; 3] = [50, 100, 200];
const STRATEGIES: [StrategyName; 3] = [
    StrategyName::Random,
    StrategyName::Evolution,
    StrategyName::Bayes,
];

enum Objective {
    Compression(CompressionModel),
    Ackley,
}

impl Objective {
    /// (observed value, true value)
    fn eval(&self, p: &Problem, q: &Point, i: u64) -> (f64, f64) {
        match self {
            Objective::Compression(m) => (m.sample(&p.space, q, i), m.mean(&p.space, q)),
            Objective::Ackley => {
                let v = neg_ackley(&p.space, q);
                (v, v)
            }
        }
    }
}

fn vgg19_problem(target: Option<f64>) -> Problem {
    let base = ArchSpec::parse("vgg19_bn").unwrap().build(100);
    let space = SpaceFile::load(Path::new("search_spaces/vgg19_bn.toml"))
        .unwrap()
        .resolve(&of_arch(&base), None, "vgg19_bn.toml")
        .unwrap();
    let flops = cost::count(&base).flops as f64;
    let t = Target {
        max_flops: target.map(|r| (flops / r) as u64),
        max_params: None,
        max_latency_us: None,
    };
    Problem::new(base.into(), space, t)
}

fn ackley_problem() -> Problem {
    // 46 plain convs, each pruned on 21 levels (0, 0.04, ..., 0.8); no cost target.
    let plan = vec!["4"; 46].join(",");
    let base = ArchSpec::parse(&format!("cfg:{plan}")).unwrap().build(10);
    let space = SpaceFile::from_toml(
        "[pruning]\nmin = 0.0\nmax = 0.8\nstep = 0.04\n",
        "ackley.toml",
    )
    .unwrap()
    .resolve(&of_arch(&base), None, "ackley.toml")
    .unwrap();
    assert_eq!(space.dims(), 46);
    Problem::new(base.into(), space, Target::default())
}

/// One run: per trial the observed value, the true value and the FLOPs fraction.
fn run(
    name: StrategyName,
    pareto: bool,
    seed: u64,
    trials: usize,
    p: &Problem,
    obj: &Objective,
) -> Vec<(f64, f64, f64)> {
    let mut s = make(name, seed, pareto);
    let mut out = Vec::with_capacity(trials);
    while out.len() < trials {
        let props = s.propose(1, p);
        assert!(!props.is_empty(), "{name:?} ran dry");
        for q in props {
            assert!(p.feasible(&q));
            let (obs, truth) = obj.eval(p, &q, seed * 100_000 + out.len() as u64);
            let o = p.observation(q, Some(obs));
            s.observe(&o);
            out.push((obs, truth, o.flops as f64 / p.base_cost.flops as f64));
        }
    }
    out
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
    (m, sd)
}

/// Runs every strategy over `seeds` seeds (two threads); returns runs[strategy][seed].
fn all_runs(
    pareto: bool,
    seeds: u64,
    p: &Problem,
    obj: &Objective,
) -> Vec<Vec<Vec<(f64, f64, f64)>>> {
    let only = std::env::var("BENCH_ONLY").ok();
    STRATEGIES
        .iter()
        .map(|&name| {
            if only.as_ref().is_some_and(|o| {
                !format!("{name:?}").eq_ignore_ascii_case(o) && !o.eq_ignore_ascii_case("random")
            }) && name != StrategyName::Random
            {
                return vec![vec![(0.0, 0.0, 1.0); BUDGETS[2]]; seeds as usize];
            }
            let t0 = Instant::now();
            let runs: Vec<_> = std::thread::scope(|sc| {
                let handles: Vec<_> = (0..2u64)
                    .map(|half| {
                        sc.spawn(move || {
                            (0..seeds)
                                .filter(|s| s % 2 == half)
                                .map(|s| (s, run(name, pareto, s, BUDGETS[2], p, obj)))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                let mut all: Vec<_> = handles
                    .into_iter()
                    .flat_map(|h| h.join().unwrap())
                    .collect();
                all.sort_by_key(|r| r.0);
                all.into_iter().map(|r| r.1).collect()
            });
            eprintln!(
                "{name:?} (pareto {pareto}): {:.1} s",
                t0.elapsed().as_secs_f64()
            );
            runs
        })
        .collect()
}

/// One row per strategy: `metric(run, budget)` as mean ± sd over the seeds.
fn table(title: &str, runs: &[Vec<Run>], metric: impl Fn(&Run, usize) -> f64) {
    println!("\n{title}\n");
    println!("| strategy | 50 trials | 100 trials | 200 trials |");
    println!("|---|---|---|---|");
    for (name, r) in STRATEGIES.iter().zip(runs) {
        let cells: Vec<String> = BUDGETS
            .iter()
            .map(|&b| {
                let (m, sd) = mean_sd(&r.iter().map(|run| metric(run, b)).collect::<Vec<_>>());
                format!("{m:.4} ± {sd:.4}")
            })
            .collect();
        println!("| {name:?} | {} |", cells.join(" | "));
    }
}

/// True value of the trial that looked best within the budget (what a user would pick).
fn best_true(run: &Run, budget: usize) -> f64 {
    run[..budget]
        .iter()
        .max_by(|x, y| x.0.total_cmp(&y.0))
        .unwrap()
        .1
}

fn run_hypervolume(run: &Run, budget: usize) -> f64 {
    hypervolume(&run[..budget].iter().map(|t| (t.1, t.2)).collect::<Vec<_>>())
}

fn latency(p: &Problem, obj: &Objective) {
    println!(
        "\nProposal latency after 500 observed trials (vgg19_bn space, 8x FLOPs target; 40 proposals, each observed)\n"
    );
    println!("| strategy | mean ms | median ms | max ms |");
    println!("|---|---|---|---|");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(9);
    let mut history = Vec::new();
    while history.len() < 500 {
        let q = p.space.random_point(&mut rng);
        if let Some(q) = p.repair(q, &mut rng) {
            let (obs, _) = obj.eval(p, &q, history.len() as u64);
            history.push((q, obs));
        }
    }
    for name in STRATEGIES {
        let mut s = make(name, 0, false);
        for (q, v) in &history {
            s.observe(&p.observation(q.clone(), Some(*v)));
        }
        let mut times = Vec::new();
        for i in 0..40 {
            let t0 = Instant::now();
            let props = s.propose(1, p);
            times.push(t0.elapsed().as_secs_f64() * 1e3);
            for q in props {
                let (obs, _) = obj.eval(p, &q, 10_000 + i);
                s.observe(&p.observation(q, Some(obs)));
            }
        }
        let (m, _) = mean_sd(&times);
        let max = times.iter().copied().fold(0.0, f64::max);
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "| {name:?} | {m:.1} | {:.1} | {max:.1} |",
            sorted[sorted.len() / 2]
        );
    }
}

fn main() {
    let seeds: u64 = std::env::var("BENCH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let constrained = vgg19_problem(Some(8.0));
    let model = CompressionModel::new(&constrained.space, 42, 0.002);
    let obj = Objective::Compression(model.clone());
    println!("# Strategy benchmark ({seeds} seeds, sequential proposals)");
    let runs = all_runs(false, seeds, &constrained, &obj);
    table(
        "Compression model, vgg19_bn space (76 knobs), FLOPs <= 1/8 of the base: true accuracy of the best-looking trial (noise sd 0.002)",
        &runs,
        best_true,
    );
    let ackley = ackley_problem();
    let runs = all_runs(false, seeds, &ackley, &Objective::Ackley);
    table(
        "Ackley, 46 dimensions x 21 levels: best -f (optimum 0)",
        &runs,
        best_true,
    );
    let free = vgg19_problem(None);
    let runs = all_runs(true, seeds, &free, &obj);
    table(
        "Pareto mode, compression model without a target: hypervolume of (true accuracy, FLOPs fraction) against (0, 1)",
        &runs,
        run_hypervolume,
    );
    latency(&constrained, &obj);
}
