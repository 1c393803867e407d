//! `rankprune fidelity` and `rankprune score` end to end on tiny generated data: every
//! candidate is feasible and distinct, every (candidate, probe) pair is scored once and
//! a re-run resumes without scoring again; `score` prints one JSON line per probe.

use crate::search::{edit_budget, run, study, text, tiny_base_flops};

/// Fresh base weights where the study's budget looks for them (`runs/base.safetensors`).
fn init_base(s: &crate::search::Study) {
    let weights = s.path("runs/base.safetensors").display().to_string();
    std::fs::create_dir_all(s.path("runs")).unwrap();
    let o = run(&[
        "init",
        "--arch",
        "cfg_bn:8,M,16,M",
        "--num-classes",
        "4",
        "--out",
        &weights,
    ]);
    assert!(o.status.success(), "{}", text(&o));
}

const PROBES: &str = "compressed,bn:1,recon:1,ft:2,ftd:2,kd:2";

#[test]
fn fidelity_scores_every_candidate_once_and_resumes() {
    let s = study(1, "batch_size = 16\neval_samples = 32", "");
    let budget = s.budget().display().to_string();
    let out = s.path("fidelity").display().to_string();
    let args = [
        "fidelity",
        &budget,
        "--candidates",
        "4",
        "--probes",
        PROBES,
        "--final-epochs",
        "1",
        "--gt-seeds",
        "2",
        "--out",
        &out,
        "--json",
    ];

    // No base weights yet: a clear input error.
    let o = run(&args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no such file"), "{}", text(&o));

    init_base(&s);

    // Shard 1 of 2 scores candidates 1 and 3 only; the unsharded run then does the rest.
    let mut shard = args.to_vec();
    shard.extend(["--shard", "1/2"]);
    let o = run(&shard);
    assert!(o.status.success(), "{}", text(&o));
    let results = s.path("fidelity/results.jsonl");
    let scored: Vec<serde_json::Value> = std::fs::read_to_string(&results)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(scored.len(), 2 * 8);
    assert!(
        scored
            .iter()
            .all(|r| r["candidate"] == 1 || r["candidate"] == 3)
    );

    let o = run(&args);
    assert!(o.status.success(), "{}", text(&o));
    let first: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = first["rows"].as_array().unwrap();
    // Every cheap probe's scores, and each re-training against the two seeds' mean.
    for (signal, score) in [
        ("compressed", "acc"),
        ("bn:1", "loss"),
        ("recon:1", "cka"),
        ("recon:1", "kl"),
        ("ft:2", "acc"),
        ("ft:2", "tse"),
        ("ftd:2", "acc"),
        ("ftd:2", "tse"),
        ("kd:2", "loss"),
        ("final:1", "acc"),
        ("final:1@1", "acc"),
    ] {
        let row = rows
            .iter()
            .find(|r| r["probe"] == signal && r["score"] == score)
            .unwrap_or_else(|| panic!("no row {signal} {score}: {rows:?}"));
        assert_eq!(row["n"], 4, "{row}");
        assert!(row["cpu_s"].as_f64().unwrap() >= 0.0);
        // Cheap probes are also ranked against each seed alone (null where a score ties
        // throughout); the reference's own rows are not held against the ceiling.
        assert!(row.get("tau_one_seed").is_some(), "{row}");
        if signal.starts_with("final") {
            assert!(
                row["tau_one_seed"].is_null() && row["at_ceiling"].is_null(),
                "{row}"
            );
        }
    }
    // The reference's own noise: two seeds, four candidates.
    let noise = &first["noise"];
    assert_eq!(
        (&noise["seeds"], &noise["candidates"]),
        (&2.into(), &4.into())
    );
    // (null: a seed's accuracies tie across the candidates, so it ranks nothing.)
    let ceiling = noise["ceiling"].as_f64();
    assert!(ceiling.is_none_or(|t| (-1.0..=1.0).contains(&t)), "{noise}");
    assert!(noise["run_sd"].as_f64().unwrap() >= 0.0, "{noise}");
    assert_eq!(first["seeds_needed"].as_array().unwrap().len(), 2);

    let dir = s.path("fidelity");
    let candidates: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("candidates.json")).unwrap())
            .unwrap();
    assert_eq!(candidates.len(), 4);
    let configs: std::collections::HashSet<String> =
        candidates.iter().map(|c| c["config"].to_string()).collect();
    assert_eq!(configs.len(), 4, "candidates are distinct");
    // The target is 1.2x fewer FLOPs than the base model.
    let base_flops = tiny_base_flops();
    // Every candidate spends its budget: no single knob can move dearer, which on this
    // tiny space's coarse grids leaves it within 30% of the target.
    for c in &candidates {
        let f = c["flops"].as_f64().unwrap();
        assert!(f * 1.2 <= base_flops && f * 1.2 >= 0.7 * base_flops, "{c}");
    }
    let lines = || {
        std::fs::read_to_string(dir.join("results.jsonl"))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(lines(), 4 * 8);
    let md = std::fs::read_to_string(dir.join("fidelity.md")).unwrap();
    assert!(
        md.contains("Ceiling (one seed's ranking") && md.contains("Paired seeds for"),
        "{md}"
    );

    // A re-run scores nothing again and reports the same rows.
    let again = run(&args);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(lines(), 4 * 8);
    // The same rows, up to the last bit of floats read back from results.jsonl.
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["noise"], first["noise"]);
    let again = again["rows"].as_array().unwrap();
    assert_eq!(again.len(), rows.len());
    for (a, b) in again.iter().zip(rows) {
        for (k, v) in b.as_object().unwrap() {
            match (v.as_f64(), a[k].as_f64()) {
                (Some(x), Some(y)) => {
                    assert!((x - y).abs() <= 1e-12 * x.abs().max(1.0), "{k}: {a} vs {b}")
                }
                _ => assert_eq!(&a[k], v, "{k}"),
            }
        }
    }

    // --report-only summarises what is recorded and scores nothing, whatever the probes.
    let mut report = args.to_vec();
    report[5] = "compressed,ft:3";
    report.push("--report-only");
    let o = run(&report);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(lines(), 4 * 8);
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["rows"].as_array().unwrap().len(), rows.len());

    // `score` runs one candidate's config through the probes.
    let config = s.path("c0.json");
    std::fs::write(&config, candidates[0]["config"].to_string()).unwrap();
    let config = config.display().to_string();
    let score = |probes: &str| run(&["score", &budget, "--config", &config, "--probes", probes]);
    let o = score("bn:1,recon:1");
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["probe"], "bn:1");
    let cka = lines[1]["scores"]["cka"].as_f64().unwrap();
    assert!(cka > 0.0 && cka <= 1.0 + 1e-6, "{cka}");
    // The same config and probe give the score the fidelity run recorded.
    let recorded: serde_json::Value = std::fs::read_to_string(dir.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["candidate"] == 0 && r["probe"] == "bn:1")
        .unwrap();
    assert_eq!(recorded["scores"], lines[0]["scores"]);
    // `--signals`, the option's earlier name, is still read.
    let o = run(&["score", &budget, "--config", &config, "--signals", "bn:1"]);
    assert!(o.status.success(), "{}", text(&o));
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (&line["probe"], &line["scores"]),
        (&lines[0]["probe"], &lines[0]["scores"])
    );

    // A budget that builds candidates differently (repaired) cannot add to this run.
    edit_budget(&s, "seed = 1\n", "seed = 1\nrepair = 1\n");
    let o = run(&args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("use another --out"), "{}", text(&o));
    // `score` builds it repaired: the repair:1 probe on a repaired build runs too.
    let o = score("compressed,repair:1");
    assert!(o.status.success(), "{}", text(&o));
    edit_budget(&s, "seed = 1\nrepair = 1\n", "seed = 1\n");

    let o = run(&["fidelity", &budget, "--probes", "bn"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("allowed compressed, bn:K"),
        "{}",
        text(&o)
    );
}

/// `--final-epochs 1,2`: every candidate is re-trained with both recipes and the same
/// paired seeds, and the report ranks the second recipe's means against the first's.
/// The summary records the regime it was measured in (for a study's step-0 gate).
#[test]
fn fidelity_compares_two_final_recipes() {
    let s = study(1, "batch_size = 16\neval_samples = 32", "");
    let budget = s.budget().display().to_string();
    let out = s.path("fidelity").display().to_string();
    init_base(&s);
    let o = run(&[
        "fidelity",
        &budget,
        "--candidates",
        "3",
        "--probes",
        "compressed",
        "--final-epochs",
        "1,2",
        "--gt-seeds",
        "2",
        "--out",
        &out,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let dir = s.path("fidelity");
    let results = std::fs::read_to_string(dir.join("results.jsonl")).unwrap();
    // compressed, final:1 and final:1@1, final:2 and final:2@1, for each candidate.
    assert_eq!(results.lines().count(), 3 * 5);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("fidelity.json")).unwrap()).unwrap();
    let recipes = summary["recipes"].as_array().unwrap();
    assert_eq!(recipes.len(), 1, "{summary}");
    let r = &recipes[0];
    assert_eq!(
        (&r["reference"], &r["recipe"]),
        (&"final:1".into(), &"final:2".into())
    );
    assert_eq!((&r["n"], &r["seeds"]), (&3.into(), &2.into()));
    assert!(
        r["kendall_tau"]
            .as_f64()
            .is_none_or(|t| (-1.0..=1.0).contains(&t)),
        "{r}"
    );
    assert!(summary["regime"]["target"]["max_flops"].as_u64().is_some());
    assert_eq!(
        summary["regime"]["weights_sha256"].as_str().unwrap().len(),
        64
    );
    let md = std::fs::read_to_string(dir.join("fidelity.md")).unwrap();
    assert!(
        md.contains("Recipe sensitivity: final:2 ranks the 3 candidates"),
        "{md}"
    );
}

/// `--top-of STUDY`: the candidates are that study's best completed trials by proxy, in
/// order; asking for more than it has is an input error.
#[test]
fn fidelity_takes_a_studys_best_trials_as_candidates() {
    let s = study(
        4,
        crate::search::FAST_PROXY,
        "[final]\ntop_k = 0\nwarm_starts = 0",
    );
    let budget = s.budget().display().to_string();
    let o = run(&["search", &budget]);
    assert!(o.status.success(), "{}", text(&o));
    let out = s.path("top").display().to_string();
    let args = |n: &str| {
        run(&[
            "fidelity",
            &budget,
            "--top-of",
            "tiny",
            "--candidates",
            n,
            "--probes",
            "compressed",
            "--final-epochs",
            "1",
            "--gt-seeds",
            "1",
            "--out",
            &out,
        ])
    };
    let o = args("9");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--top-of tiny: 4 completed trials"),
        "{}",
        text(&o)
    );
    let o = args("3");
    assert!(o.status.success(), "{}", text(&o));
    let candidates: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(s.path("top/candidates.json")).unwrap())
            .unwrap();
    let trials = s.store().trials(1).unwrap();
    let mut best: Vec<_> = trials.iter().collect();
    best.sort_by(|a, b| b.proxy_acc.unwrap().total_cmp(&a.proxy_acc.unwrap()));
    for (c, t) in candidates.iter().zip(&best) {
        assert_eq!(c["origin"], format!("trial{}", t.number));
        assert_eq!(
            c["config"],
            serde_json::from_str::<serde_json::Value>(&t.config).unwrap()
        );
    }
    assert_eq!(candidates.len(), 3);
}
