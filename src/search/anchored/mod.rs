//! Heuristic-anchored search spaces (`[anchored]` in a space file): a few knobs that
//! parametrise the one-shot heuristic itself, so that a study of a few dozen trials can
//! explore them (a per-layer space of vgg19_bn has 76 dimensions).
//!
//! - `calibration.stageS`: the VBMF calibration ratio of the decomposed convs of stage S
//!   (a stage: the convs whose maps have one size; on VGG, those between two max-pools);
//! - `scale.stageS`: log2 of a multiplier on the SLAMP scores of stage S's conv groups (a
//!   higher score keeps more channels);
//! - `scale.tucker_0`, `scale.tucker_2`: log2 multipliers on the scores of the Tucker
//!   factors' 1x1 convs, against the cores and plain convs;
//! - `cost_exponent` b: each score is divided by (FLOPs per channel / their geometric
//!   mean)^b, so that b > 0 prunes the groups whose channels cost most first.
//!
//! Scores are group SLAMP's ([`crate::compress::group_prune`]): on a VGG plan every conv
//! is a group of its own, and a residual network's stream (the convs an add ties) is one.
//!
//! Every point is projected onto the study's cost target exactly: SLAMP solves for its
//! global threshold after the ranks are chosen, as the simple flow does. The heuristic's
//! own config is the point with the control's calibration on every stage and every
//! multiplier and exponent at 0 (a test checks it equals the simple flow's config).

use super::problem::Target;
use super::space::{Knob, KnobKind, Layers, Point, SpaceError, pick_layers};
use crate::compress::decompose::{RankRecommendation, TuckerCache};
use crate::compress::graph_config::{config_cost, empty_config};
use crate::compress::graph_tucker::{decompose_graph_cached, decomposed_layout};
use crate::compress::group_prune::{group_scores, ratios_for_group_scores};
use crate::compress::slamp::PruneTarget;
use crate::config::LayerConfig;
use crate::cost::Cost;
use crate::graph::groups::{Group, groups};
use crate::graph::{Graph, Op};
use crate::weights::Weights;
use indexmap::IndexMap;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Mutex;

/// `min..=max` in steps of `step`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    pub min: f64,
    pub max: f64,
    pub step: f64,
}

impl Grid {
    const fn new(min: f64, max: f64, step: f64) -> Self {
        Self { min, max, step }
    }

    fn knob(&self, key: &str, name: &str, kind: KnobKind, identity: f64) -> Result<Knob, String> {
        let Grid { min, max, step } = *self;
        if !(min.is_finite() && max.is_finite() && min <= max && step > 0.0 && step.is_finite()) {
            return Err(format!(
                "{key}: min = {min}, max = {max}, step = {step}: need min <= max and step > 0"
            ));
        }
        let knob = Knob {
            layer: name.to_string(),
            kind,
            lo: min,
            step,
            levels: ((max - min) / step + 1e-9).floor() as usize + 1,
        };
        if knob.level_of(identity).is_none() {
            return Err(format!(
                "{key}: the grid {min}..={max} step {step} misses {identity}, the heuristic's own value: the heuristic's config must be a point of the space"
            ));
        }
        Ok(knob)
    }
}

/// The `[anchored]` section as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchoredSection {
    /// The convs Tucker-2 decomposes (every conv with more than 3 input channels, or a
    /// list of names).
    #[serde(default)]
    pub layers: Layers,
    /// VBMF calibration ratios per stage, in [-1, 1].
    #[serde(default = "default_calibration")]
    pub calibration: Grid,
    /// log2 multipliers on a stage's SLAMP scores.
    #[serde(default = "default_scale")]
    pub stage_scale: Grid,
    /// log2 multipliers on the scores of the `_tucker_0` and `_tucker_2` convs.
    #[serde(default = "default_factor_scale")]
    pub factor_scale: Grid,
    /// Exponent of the FLOPs-per-filter weighting (0: SLAMP's own scores).
    #[serde(default = "default_cost_exponent")]
    pub cost_exponent: Grid,
    /// The largest share of any conv's filters SLAMP may remove.
    #[serde(default = "default_max_ratio")]
    pub max_ratio: f64,
}

fn default_calibration() -> Grid {
    Grid::new(-0.75, 0.75, 0.25)
}
fn default_scale() -> Grid {
    Grid::new(-2.0, 2.0, 0.5)
}
fn default_factor_scale() -> Grid {
    Grid::new(-2.0, 2.0, 1.0)
}
fn default_cost_exponent() -> Grid {
    Grid::new(0.0, 1.0, 0.25)
}
fn default_max_ratio() -> f64 {
    0.8
}

/// Stage (1-based) of every conv of `graph`: one more than the number of distinct map
/// sides larger than its output's among the graph's node outputs (on a VGG plan, one
/// more than the max-pools before it).
fn stages(graph: &Graph) -> IndexMap<String, usize> {
    let shapes = graph.shapes().expect("a built graph has shapes");
    let mut sides: Vec<usize> = shapes
        .iter()
        .filter(|s| s.len() == 3)
        .map(|s| s[1])
        .collect();
    sides.sort_unstable_by(|a, b| b.cmp(a));
    sides.dedup();
    graph
        .nodes
        .iter()
        .zip(&shapes)
        .filter(|(n, _)| matches!(n.op, Op::Conv(_)))
        .map(|(n, s)| {
            (
                n.name.clone(),
                1 + sides.iter().filter(|&&d| d > s[1]).count(),
            )
        })
        .collect()
}

/// The base conv a conv of a decomposed graph comes from (`features.3_tucker_1` comes
/// from `features.3`).
fn unit_of(conv: &str) -> &str {
    conv.split("_tucker_").next().unwrap_or(conv)
}

/// Where each anchored knob sits in the point (None: the grid has one level).
#[derive(Debug, Clone, Default, PartialEq)]
struct Slots {
    calibration: HashMap<usize, usize>,
    stage_scale: HashMap<usize, usize>,
    factor_scale: [Option<usize>; 2],
    cost_exponent: Option<usize>,
}

/// The knobs of a section over `base` with the control's `calibration` as the anchor,
/// the decomposed layers, and where each knob sits. Grids of one level give no knob.
fn resolve_knobs(
    section: &AnchoredSection,
    base: &Graph,
    calibration: f64,
) -> Result<(Vec<Knob>, Vec<String>, Slots), String> {
    let decomposed = decomposed_layers(section, base)?;
    check_section(section, calibration)?;
    let stage_of = stages(base);
    let mut all_stages: Vec<usize> = stage_of.values().copied().collect();
    all_stages.dedup();
    let mut knobs = Vec::new();
    let mut slots = Slots::default();
    // A grid of one level fixes its knob: no dimension.
    let mut push = |knob: Knob| -> Option<usize> {
        (knob.levels > 1).then(|| {
            knobs.push(knob);
            knobs.len() - 1
        })
    };
    for &s in &all_stages {
        if decomposed.iter().any(|l| stage_of[l] == s) {
            let name = format!("stage{s}");
            let k = section.calibration.knob(
                "anchored.calibration",
                &name,
                KnobKind::Calibration,
                calibration,
            )?;
            if let Some(i) = push(k) {
                slots.calibration.insert(s, i);
            }
        }
    }
    for &s in &all_stages {
        let name = format!("stage{s}");
        let k = section
            .stage_scale
            .knob("anchored.stage_scale", &name, KnobKind::Scale, 0.0)?;
        if let Some(i) = push(k) {
            slots.stage_scale.insert(s, i);
        }
    }
    if !decomposed.is_empty() {
        for (f, name) in [(0, "tucker_0"), (1, "tucker_2")] {
            let g = &section.factor_scale;
            slots.factor_scale[f] =
                push(g.knob("anchored.factor_scale", name, KnobKind::Scale, 0.0)?);
        }
    }
    let g = &section.cost_exponent;
    slots.cost_exponent = push(g.knob(
        "anchored.cost_exponent",
        "flops",
        KnobKind::CostExponent,
        0.0,
    )?);
    if knobs.is_empty() {
        return Err("[anchored]: every grid has one level: the space is one point".into());
    }
    Ok((knobs, decomposed, slots))
}

/// The convs a section decomposes (of those larger than 1x1 with more than 3 input
/// channels), in graph order.
fn decomposed_layers(section: &AnchoredSection, base: &Graph) -> Result<Vec<String>, String> {
    let candidates: Vec<String> = base
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Conv(c) if c.in_channels > 3 && c.kernel > 1 => Some(n.name.clone()),
            _ => None,
        })
        .collect();
    let picked = pick_layers(&section.layers, candidates.iter().map(String::as_str))
        .map_err(|m| format!("anchored.layers: {m}"))?;
    Ok(candidates
        .into_iter()
        .filter(|c| picked.contains(c))
        .collect())
}

/// The ratio cap and the calibration range, and the anchor on the calibration grid (even
/// where no stage has a calibration knob).
fn check_section(section: &AnchoredSection, calibration: f64) -> Result<(), String> {
    if !(0.0..1.0).contains(&section.max_ratio) {
        return Err(format!(
            "anchored.max_ratio = {}: allowed [0, 1)",
            section.max_ratio
        ));
    }
    let c = section.calibration;
    if c.min < -1.0 || c.max > 1.0 {
        return Err(format!(
            "anchored.calibration: min = {}, max = {}: calibration ratios lie in [-1, 1]",
            c.min, c.max
        ));
    }
    c.knob(
        "anchored.calibration",
        "",
        KnobKind::Calibration,
        calibration,
    )
    .map(|_| ())
}

/// Refuses a study without a cost target: an anchored space projects every candidate
/// onto it. `file` names the space.
pub fn check_target(target: &Target, file: &str) -> crate::Result<()> {
    if *target == Target::default() {
        return Err(crate::Error::BadInput(format!(
            "{file}: an anchored space projects every candidate onto the study's cost target: set objective.target_flops_reduction or objective.target_params_reduction"
        )));
    }
    Ok(())
}

/// A knob's name in provenance and tables (`calibration.stage2`, `scale.tucker_0`).
pub fn knob_name(k: &Knob) -> String {
    match k.kind {
        KnobKind::Calibration => format!("calibration.{}", k.layer),
        KnobKind::Scale => format!("scale.{}", k.layer),
        KnobKind::CostExponent => "cost_exponent".into(),
        _ => k.layer.clone(),
    }
}

/// A resolved anchored space: its knobs and the tables that map a point to its config
/// without weights (each decomposed conv's ranks per calibration level, and the group
/// SLAMP scores of the decomposed network at those ranks).
pub struct Anchored {
    pub knobs: Vec<Knob>,
    pub decomposed: Vec<String>,
    slots: Slots,
    base: Graph,
    base_cost: Cost,
    max_ratio: f64,
    /// Its level for the control's calibration.
    anchor_level: usize,
    stage_of: IndexMap<String, usize>,
    /// Decomposed layer -> its ranks at each calibration level.
    ranks: RankTable,
    /// SLAMP scores of a conv (plain, or a sub-conv at ranks) of the base weights.
    scores: ScoreTable,
    memo: Mutex<Memo>,
}

/// Configs kept by point before the memo starts over.
const MEMO_POINTS: usize = 20_000;

#[derive(Default)]
struct Memo {
    /// By point and target (as `Debug` prints it).
    by_point: HashMap<(Point, String), LayerConfig>,
    /// A model's first point (decomposition and pruning as JSON).
    by_model: HashMap<String, Point>,
}

impl std::fmt::Debug for Anchored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anchored")
            .field("knobs", &self.knobs.len())
            .field("decomposed", &self.decomposed)
            .finish()
    }
}

impl PartialEq for Anchored {
    fn eq(&self, other: &Self) -> bool {
        (
            &self.knobs,
            &self.slots,
            &self.ranks,
            &self.scores,
            &self.base,
        ) == (
            &other.knobs,
            &other.slots,
            &other.ranks,
            &other.scores,
            &other.base,
        ) && (self.max_ratio, self.anchor_level) == (other.max_ratio, other.anchor_level)
    }
}

/// Decomposition and pruning of a config as JSON: equal for equal models.
pub fn model_key(c: &LayerConfig) -> String {
    serde_json::to_string(&(&c.decomposition, &c.pruning)).expect("configs serialize")
}

impl Anchored {
    /// Resolves `section` over `base` with the base `weights` and their VBMF ranks,
    /// anchored at the control's `calibration`: decomposes every decomposed conv at the
    /// ranks of each calibration level (once per distinct ranks) for the score tables.
    pub fn resolve(
        section: &AnchoredSection,
        base: &Graph,
        weights: &Weights,
        vbmf: &[RankRecommendation],
        calibration: f64,
        file: &str,
    ) -> Result<Self, SpaceError> {
        let err = SpaceError::in_file(file);
        let (knobs, decomposed, slots) = resolve_knobs(section, base, calibration).map_err(err)?;
        // The calibration knobs' levels, whether or not a stage has one.
        let grid = section
            .calibration
            .knob(
                "anchored.calibration",
                "",
                KnobKind::Calibration,
                calibration,
            )
            .map_err(err)?;
        let calibrations: Vec<f64> = (0..grid.levels).map(|l| grid.value(l)).collect();
        let anchor_level = calibrations
            .iter()
            .position(|&c| (c - calibration).abs() < 1e-6)
            .expect("checked on the grid");
        let mut ranks = RankTable::new();
        for name in &decomposed {
            let rec = vbmf
                .iter()
                .find(|r| &r.layer == name)
                .ok_or_else(|| err(format!("{name}: no VBMF ranks for a decomposed layer")))?;
            let per_level: Vec<[usize; 2]> = calibrations.iter().map(|&c| rec.at(c)).collect();
            ranks.insert(name.clone(), per_level);
        }
        let scores = score_tables(base, weights, &ranks, calibrations.len(), file).map_err(err)?;
        Ok(Self {
            knobs,
            decomposed,
            slots,
            base: base.clone(),
            base_cost: crate::graph::cost::count(base),
            max_ratio: section.max_ratio,
            anchor_level,
            stage_of: stages(base),
            ranks,
            scores,
            memo: Mutex::default(),
        })
    }

    pub fn max_ratio(&self) -> f64 {
        self.max_ratio
    }

    /// The heuristic's own point: the control's calibration, every multiplier and the
    /// exponent at 0.
    pub fn heuristic_point(&self) -> Point {
        self.knobs
            .iter()
            .map(|k| match k.kind {
                KnobKind::Calibration => self.anchor_level,
                _ => k.level_of(0.0).expect("0 is on every multiplier grid"),
            })
            .collect()
    }

    /// The heuristic's point with every stage's calibration `shift` levels away (None
    /// when that leaves the grid).
    pub fn shifted_heuristic(&self, shift: isize) -> Option<Point> {
        let mut p = self.heuristic_point();
        for (i, k) in self.knobs.iter().enumerate() {
            if k.kind == KnobKind::Calibration {
                let l = p[i] as isize + shift;
                if l < 0 || l >= k.levels as isize {
                    return None;
                }
                p[i] = l as usize;
            }
        }
        Some(p)
    }

    fn value(&self, p: &[usize], slot: Option<usize>) -> f64 {
        slot.map_or(0.0, |i| self.knobs[i].value(p[i]))
    }

    /// Ranks of each decomposed layer at point `p`.
    fn ranks_at(&self, p: &[usize]) -> IndexMap<String, [usize; 2]> {
        self.decomposed
            .iter()
            .map(|l| {
                // A calibration knob's levels are the section grid's.
                let level = self
                    .slots
                    .calibration
                    .get(&self.stage_of[l])
                    .map_or(self.anchor_level, |&i| p[i]);
                (l.clone(), self.ranks[l][level])
            })
            .collect()
    }

    /// The config of point `p` for a study whose cost target is `target`: SLAMP ratios
    /// meeting it on the scaled scores; every group at the largest ratio when they
    /// cannot (the point is then infeasible).
    pub fn config(&self, p: &[usize], target: Option<PruneTarget>) -> LayerConfig {
        assert_eq!(p.len(), self.knobs.len(), "point of another space");
        let memo_key = (p.to_vec(), format!("{target:?}"));
        if let Some(c) = self.memo.lock().expect("memo lock").by_point.get(&memo_key) {
            return c.clone();
        }
        let ranks = self.ranks_at(p);
        let mut config = empty_config(&self.base);
        config.set_ranks(ranks.clone());
        let by_name = ranks.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let layout = decomposed_layout(&self.base, &by_name).expect("ranks within the full ranks");
        let layers = self.scaled_scores(p, &layout, &ranks);
        let found = target.and_then(|t| {
            ratios_for_group_scores(&layout, &layers, t, self.max_ratio, &self.base_cost).ok()
        });
        let ratios = found.unwrap_or_else(|| {
            let r = if target.is_some() {
                self.max_ratio
            } else {
                0.0
            };
            layers.iter().map(|(n, _)| (n.clone(), r)).collect()
        });
        config.set_ratios(ratios);
        let mut memo = self.memo.lock().expect("memo lock");
        let first = memo
            .by_model
            .entry(model_key(&config))
            .or_insert_with(|| p.to_vec())
            .clone();
        config.provenance = Some(self.provenance(&first));
        // Bayes scores some 250 points per proposal: a bounded memo.
        if memo.by_point.len() >= MEMO_POINTS {
            memo.by_point.clear();
        }
        memo.by_point.insert(memo_key, config.clone());
        config
    }

    /// `{"space": "anchored", "knobs": {name: value}}`: what made the config.
    fn provenance(&self, p: &[usize]) -> serde_json::Value {
        let knobs: serde_json::Map<String, serde_json::Value> = self
            .knobs
            .iter()
            .zip(p)
            .map(|(k, &l)| (knob_name(k), serde_json::json!(k.value(l))))
            .collect();
        serde_json::json!({"space": "anchored", "knobs": knobs})
    }

    /// The point a config's provenance names (configs this space made, as trials store
    /// them or as `export` nests them under `search_space`). Whether that point still
    /// builds the config is [`super::problem::Problem::point_of`]'s check.
    pub fn knobs_of(&self, config: &LayerConfig) -> Result<Point, String> {
        let prov = config.provenance.as_ref();
        let knobs = prov
            .into_iter()
            .flat_map(|v| [v, &v["search_space"]])
            .find(|v| v["space"] == "anchored")
            .and_then(|v| v["knobs"].as_object())
            .ok_or("the config carries no anchored-space knobs (provenance)")?;
        self.knobs
            .iter()
            .map(|k| {
                let name = knob_name(k);
                let v = knobs
                    .get(&name)
                    .and_then(|v| v.as_f64())
                    .ok_or_else(|| format!("{name}: missing from the config's knobs"))?;
                k.level_of(v)
                    .ok_or_else(|| format!("{name} = {v} is off the space's grid"))
            })
            .collect()
    }

    /// Records that `config` (stored, or given) is point `p`'s model, so that other
    /// points of the same model name `p` in their provenance.
    pub fn register(&self, p: &[usize], config: &LayerConfig) {
        let mut memo = self.memo.lock().expect("memo lock");
        memo.by_model
            .entry(model_key(config))
            .or_insert_with(|| p.to_vec());
    }

    /// Every group of `layout` (the base decomposed at `ranks`) with its SLAMP scores at
    /// point `p`: the base scores times the stage's and the factor's multipliers, over
    /// (FLOPs per channel / their geometric mean)^b.
    fn scaled_scores(
        &self,
        p: &[usize],
        layout: &Graph,
        ranks: &IndexMap<String, [usize; 2]>,
    ) -> Vec<(String, Vec<f64>)> {
        let gs = groups(layout);
        let b = self.value(p, self.slots.cost_exponent);
        let per_channel: Vec<f64> = if b != 0.0 {
            let flops: HashMap<String, u64> = crate::graph::cost::count(layout)
                .layers
                .into_iter()
                .map(|l| (l.name, l.flops))
                .collect();
            gs.iter()
                .map(|g| {
                    let total: u64 = g
                        .members
                        .iter()
                        .map(|&m| flops[&layout.nodes[m].name])
                        .sum();
                    let channels = match &layout.nodes[g.members[0]].op {
                        Op::Conv(c) => c.out_channels,
                        _ => unreachable!("a group's members are convs"),
                    };
                    total as f64 / channels as f64
                })
                .collect()
        } else {
            Vec::new()
        };
        let gmean = if per_channel.is_empty() {
            1.0
        } else {
            (per_channel.iter().map(|v| v.max(1.0).ln()).sum::<f64>() / per_channel.len() as f64)
                .exp()
        };
        gs.iter()
            .enumerate()
            .map(|(i, g)| {
                let unit = unit_of(&g.name);
                let factor = g
                    .name
                    .split_once("_tucker_")
                    .and_then(|(_, f)| f.parse::<usize>().ok());
                let base = &self.scores[&score_key(layout, g, ranks)];
                let mut log2 =
                    self.value(p, self.slots.stage_scale.get(&self.stage_of[unit]).copied());
                log2 += match factor {
                    Some(0) => self.value(p, self.slots.factor_scale[0]),
                    Some(2) => self.value(p, self.slots.factor_scale[1]),
                    _ => 0.0,
                };
                let mut m = 2f64.powf(log2);
                if b != 0.0 {
                    m /= (per_channel[i].max(1.0) / gmean).powf(b);
                }
                let scores = if m == 1.0 {
                    base.clone()
                } else {
                    base.iter().map(|s| s * m).collect()
                };
                (g.name.clone(), scores)
            })
            .collect()
    }
}

/// A group's key in the score table: its name and the ranks of every member's unit
/// (`[0, 0]` for a plain conv), which its channel norms depend on.
fn score_key(layout: &Graph, g: &Group, ranks: &IndexMap<String, [usize; 2]>) -> ScoreKey {
    let member_ranks = g
        .members
        .iter()
        .map(|&m| {
            let unit = unit_of(&layout.nodes[m].name);
            ranks.get(unit).copied().unwrap_or([0, 0])
        })
        .collect();
    (g.name.clone(), member_ranks)
}

/// Per-layer ranks at each calibration level (`ranks`: decomposed layer -> its ranks per
/// level).
type RankTable = HashMap<String, Vec<[usize; 2]>>;

/// A group's name and its members' unit ranks ([`score_key`]).
type ScoreKey = (String, Vec<[usize; 2]>);

/// Group SLAMP scores by [`score_key`].
type ScoreTable = HashMap<ScoreKey, Vec<f64>>;

/// The group SLAMP scores of the base network decomposed at each calibration level's
/// ranks (Tucker-2 once per conv and distinct ranks), keyed by [`score_key`].
fn score_tables(
    base: &Graph,
    weights: &Weights,
    ranks: &RankTable,
    levels: usize,
    file: &str,
) -> Result<ScoreTable, String> {
    let mut scores = HashMap::new();
    let cache = TuckerCache::new(usize::MAX);
    for level in 0..levels {
        let at_level: IndexMap<String, [usize; 2]> = base
            .nodes
            .iter()
            .filter_map(|n| Some((n.name.clone(), ranks.get(&n.name)?[level])))
            .collect();
        let by_name = at_level.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let (g, w) = decompose_graph_cached(base, weights, &by_name, Some(&cache))
            .map_err(|e| format!("{file}: {e}"))?;
        for (group, (name, s)) in groups(&g).iter().zip(group_scores(&g, &w)) {
            debug_assert_eq!(group.name, name);
            scores.entry(score_key(&g, group, &at_level)).or_insert(s);
        }
    }
    Ok(scores)
}

/// The cheapest model an `[anchored]` section allows over `base`, whatever its weights:
/// every decomposed conv at its lowest calibration of the ranks `vbmf` (rank 1 gives a
/// bound for any weights), every conv pruned by `max_ratio`. For the start-up check that
/// the target is within reach, before the base weights exist.
pub fn cheapest_cost(
    section: &AnchoredSection,
    base: &Graph,
    vbmf: &[RankRecommendation],
    calibration: f64,
    file: &str,
) -> Result<Cost, SpaceError> {
    let err = SpaceError::in_file(file);
    let (_, decomposed, _) = resolve_knobs(section, base, calibration).map_err(err)?;
    let mut config = empty_config(base);
    let ranks: IndexMap<String, [usize; 2]> = decomposed
        .iter()
        .filter_map(|l| vbmf.iter().find(|r| &r.layer == l))
        .map(|r| (r.layer.clone(), r.at(section.calibration.min)))
        .collect();
    let by_name = ranks.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let layout = decomposed_layout(base, &by_name).map_err(err)?;
    config.set_ranks(ranks);
    config.set_ratios(
        groups(&layout)
            .into_iter()
            .map(|g| (g.name, section.max_ratio))
            .collect(),
    );
    config_cost(base, &config).map_err(err)
}

#[cfg(test)]
mod tests;
