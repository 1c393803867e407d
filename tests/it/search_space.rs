//! Search spaces: the shipped files resolve, the reference config is a point of the
//! vgg19_bn space, encoding round-trips, and random search only proposes feasible, new
//! points, reproducibly.

use crate::common::{reference_config, repo_path, vgg19_bn};
use rankprune::arch::ArchSpec;
use rankprune::compress::decompose::RankRecommendation;
use rankprune::cost;
use rankprune::graph::build::of_arch;
use rankprune::search::problem::{Observation, Problem, Target};
use rankprune::search::space::{KnobKind, SpaceFile};
use rankprune::search::strategy::Strategy;
use rankprune::search::strategy::random::RandomSearch;

fn vgg19_space() -> rankprune::search::space::Space {
    let path = repo_path("search_spaces/vgg19_bn.toml");
    SpaceFile::load(&path)
        .unwrap()
        .resolve(&of_arch(&vgg19_bn()), None, "vgg19_bn.toml")
        .unwrap()
}

#[test]
fn reference_config_is_a_point_of_the_vgg19_space() {
    let space = vgg19_space();
    let ranks = space
        .knobs
        .iter()
        .filter(|k| k.kind != KnobKind::Ratio)
        .count();
    let ratios = space
        .knobs
        .iter()
        .filter(|k| k.kind == KnobKind::Ratio)
        .count();
    assert_eq!((ranks, ratios), (30, 46));
    assert_eq!(space.decomposed.len(), 15);
    let reference = reference_config();
    let point = space.point_of(&reference).unwrap();
    let back = space.config(&of_arch(&vgg19_bn()), &point);
    assert_eq!(back.decomposition, reference.decomposition);
    assert_eq!(back.pruning, reference.pruning);
    // Its cost is the reference figure (tests/fixtures/reference_params.py counts it
    // independently).
    let base = vgg19_bn();
    let arch = back.apply(&base, "<point>").unwrap();
    assert_eq!(cost::count(&arch).params, 661_164);
}

#[test]
fn off_grid_configs_are_not_points() {
    let space = vgg19_space();
    let mut c = reference_config();
    c.pruning
        .as_mut()
        .unwrap()
        .ratios
        .insert("features.0".into(), 0.95);
    let e = space.point_of(&c).unwrap_err();
    assert!(
        e.contains("features.0") && e.contains("off the grid"),
        "{e}"
    );
    let mut c = reference_config();
    c.decomposition
        .as_mut()
        .unwrap()
        .ranks
        .insert("features.3".into(), [65, 10]);
    assert!(space.point_of(&c).unwrap_err().contains("features.3"));
}

#[test]
fn encode_decode_round_trip() {
    let space = vgg19_space();
    let mut s = 7u64;
    for _ in 0..200 {
        let p: Vec<usize> = space
            .knobs
            .iter()
            .map(|k| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 33) as usize % k.levels
            })
            .collect();
        let x = space.encode(&p);
        assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(space.decode(&x), p);
    }
    // The corners of the box decode to the ends of every grid.
    let lo = space.decode(&vec![0.0; space.dims()]);
    let hi = space.decode(&vec![1.0; space.dims()]);
    assert!(lo.iter().all(|&l| l == 0));
    assert!(hi.iter().zip(&space.knobs).all(|(&l, k)| l == k.levels - 1));
}

#[test]
fn vbmf_ranges_follow_the_calibration_ratios() {
    let base = ArchSpec::parse("vgg11_bn@0.25").unwrap().build(10);
    let file = SpaceFile::load(&repo_path("search_spaces/demo-vgg.toml")).unwrap();
    assert!(file.needs_vbmf());
    let e = file
        .resolve(&of_arch(&base), None, "demo-vgg.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs the VBMF ranks"), "{e}");
    // Pretend VBMF kept half of each input side and a quarter of each output side.
    let recs: Vec<RankRecommendation> = base
        .conv_units()
        .filter(|u| u.body.in_channels() > 3)
        .map(|u| {
            let (s, t) = (u.body.in_channels(), u.body.out_channels());
            RankRecommendation {
                layer: u.body.name().to_string(),
                full: [s, t],
                vbmf: [s / 2, t / 4],
                chosen: [s / 2, t / 4],
            }
        })
        .collect();
    let space = file
        .resolve(&of_arch(&base), Some(&recs), "demo-vgg.toml")
        .unwrap();
    let k = &space.knobs[0];
    assert_eq!((k.layer.as_str(), k.kind), ("features.4", KnobKind::InRank));
    // features.4 has 16 inputs, VBMF 8: calibration -0.25 gives 6, +0.75 gives 14.
    assert_eq!((k.value(0), k.value(k.levels - 1)), (6.0, 14.0));
    let first = space
        .knobs
        .iter()
        .find(|k| k.layer == "features.0")
        .unwrap();
    assert_eq!(first.value(first.levels - 1), 0.3);
}

#[test]
fn random_search_proposes_feasible_new_points_reproducibly() {
    let base = vgg19_bn();
    let space = vgg19_space();
    let c = cost::count(&base);
    let target = Target {
        max_flops: Some(c.flops / 8),
        max_params: None,
        max_latency_us: None,
    };
    let problem = Problem::new(base.into(), space, target);
    let mut a = RandomSearch::new(3);
    let pa = a.propose(20, &problem);
    assert_eq!(pa.len(), 20);
    for p in &pa {
        assert!(problem.cost(p).flops <= c.flops / 8);
    }
    let mut seen = std::collections::HashSet::new();
    assert!(
        pa.iter().all(|p| seen.insert(p.clone())),
        "duplicate proposal"
    );
    let pb = RandomSearch::new(3).propose(20, &problem);
    assert_eq!(pa, pb, "same seed, same proposals");
    // An observed point is never proposed again.
    let mut s = RandomSearch::new(3);
    s.observe(&Observation {
        point: pa[0].clone(),
        acc: Some(0.5),
        flops: 0,
        params: 0,
    });
    assert!(!s.propose(20, &problem).contains(&pa[0]));
}

/// The budget files shipped under experiments/ parse, and their spaces load.
#[test]
fn shipped_budgets_parse() {
    for name in ["experiments/demo-digits.toml", "experiments/fmnist.toml"] {
        let b = rankprune::budget::Budget::load(&repo_path(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        SpaceFile::load(&b.search.space).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
