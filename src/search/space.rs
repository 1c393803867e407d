//! Search spaces (TOML, `search_spaces/*.toml`): which convs are decomposed and their
//! rank range, which convs and Tucker sub-convs are pruned and their ratio grid. A space
//! file is resolved against a base network's graph into a list of integer [`Knob`]s; a
//! candidate ([`Point`]) is one level per knob. A pruning knob acts on a dependency
//! group, named by its first conv (on a VGG plan every conv is a group of its own).

use super::anchored::{Anchored, AnchoredSection};
use crate::arch::ArchSpec;
use crate::compress::decompose::RankRecommendation;
use crate::compress::graph_config::empty_config;
use crate::compress::graph_tucker::decomposed_layout;
use crate::compress::vbmf::calibrated_rank;
use crate::config::LayerConfig;
use crate::graph::groups::groups;
use crate::graph::{Graph, Op};
use indexmap::IndexMap;
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

/// A space file as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpaceFile {
    /// The architecture the file is written for, if it says: a budget whose `model.arch`
    /// is another model is refused ([`SpaceFile::check_arch`]).
    #[serde(default)]
    pub arch: Option<String>,
    #[serde(default)]
    pub decomposition: Option<RankSection>,
    #[serde(default)]
    pub pruning: Option<RatioSection>,
    /// A heuristic-anchored space ([`super::anchored`]), instead of the two above.
    #[serde(default)]
    pub anchored: Option<AnchoredSection>,
}

/// `"all"` or a list of layer names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Layers {
    Keyword(String),
    Names(Vec<String>),
}

impl Default for Layers {
    fn default() -> Self {
        Layers::Keyword("all".into())
    }
}

/// How `min`/`max` of a rank range are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RankKind {
    /// Ranks themselves (clamped to the full rank).
    Absolute,
    /// Fractions of the full rank, in [0, 1].
    Fraction,
    /// Calibration ratios in [-1, 1] around the VBMF ranks of the base weights.
    Vbmf,
}

/// A per-layer range replacing a section's `min`/`max`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerRange {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankSection {
    #[serde(default)]
    pub layers: Layers,
    pub rank: RankKind,
    pub min: f64,
    pub max: f64,
    /// Rank granularity (ranks are `lo + k * step`), default 1.
    #[serde(default = "one")]
    pub step: usize,
    /// Per-layer ranges replacing `min`/`max` (same kind).
    #[serde(default)]
    pub layer: IndexMap<String, LayerRange>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatioSection {
    /// `"all"`: every conv of the decomposed model (plain convs and Tucker sub-convs).
    #[serde(default)]
    pub layers: Layers,
    #[serde(default)]
    pub min: f64,
    #[serde(default = "default_ratio_max")]
    pub max: f64,
    #[serde(default = "default_ratio_step")]
    pub step: f64,
    #[serde(default)]
    pub layer: IndexMap<String, LayerRange>,
}

fn default_ratio_max() -> f64 {
    0.9
}
fn default_ratio_step() -> f64 {
    0.1
}

/// What one knob sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnobKind {
    InRank,
    OutRank,
    Ratio,
    /// An anchored space's VBMF calibration ratio of a stage.
    Calibration,
    /// An anchored space's log2 multiplier on SLAMP scores.
    Scale,
    /// An anchored space's FLOPs-per-filter exponent.
    CostExponent,
}

/// One integer-valued dimension: value = `lo + level * step`, `level < levels`.
#[derive(Debug, Clone, PartialEq)]
pub struct Knob {
    pub layer: String,
    pub kind: KnobKind,
    pub lo: f64,
    pub step: f64,
    pub levels: usize,
}

impl Knob {
    pub fn value(&self, level: usize) -> f64 {
        debug_assert!(level < self.levels);
        // Six decimals keep ratios such as 0.3 exact in JSON.
        ((self.lo + level as f64 * self.step) * 1e6).round() / 1e6
    }

    /// The level whose value is nearest `v` (clamped to the grid).
    pub fn nearest_level(&self, v: f64) -> usize {
        let l = ((v - self.lo) / self.step).round();
        (l.max(0.0) as usize).min(self.levels - 1)
    }

    /// Whether a higher level makes the model cheaper (ratios) or dearer (ranks).
    pub fn cheaper_up(&self) -> bool {
        self.kind == KnobKind::Ratio
    }

    /// The level whose value is `v`, if `v` is on the grid.
    pub fn level_of(&self, v: f64) -> Option<usize> {
        let l = ((v - self.lo) / self.step).round();
        (l >= 0.0 && (l as usize) < self.levels && (self.value(l as usize) - v).abs() < 1e-6)
            .then_some(l as usize)
    }
}

/// A candidate: one level per knob of a [`Space`].
pub type Point = Vec<usize>;

/// A resolved space: knobs over one base architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct Space {
    pub knobs: Vec<Knob>,
    /// Decomposed layers in architecture order.
    pub decomposed: Vec<String>,
    /// The anchored space's tables, when it is one (its points' configs depend on the
    /// study's target: [`super::problem::Problem::config`]).
    pub anchored: Option<Arc<Anchored>>,
}

impl Space {
    /// An anchored space over its resolved tables.
    pub fn anchored(a: Anchored) -> Self {
        Self {
            knobs: a.knobs.clone(),
            decomposed: a.decomposed.clone(),
            anchored: Some(Arc::new(a)),
        }
    }
}

/// A space file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct SpaceError {
    pub file: String,
    pub message: String,
}

impl SpaceError {
    /// Makes the errors of space file `file` from their messages.
    pub fn in_file(file: &str) -> impl Fn(String) -> SpaceError + Copy + '_ {
        move |message| SpaceError {
            file: file.to_string(),
            message,
        }
    }
}

impl SpaceFile {
    pub fn from_toml(text: &str, file: &str) -> Result<Self, SpaceError> {
        let space: SpaceFile = toml::from_str(text).map_err(|e| SpaceError {
            file: file.to_string(),
            message: crate::budget::toml_message(text, &e),
        })?;
        if space.anchored.is_some() && (space.decomposition.is_some() || space.pruning.is_some()) {
            return Err(SpaceError {
                file: file.to_string(),
                message: "[anchored] with [decomposition] or [pruning]: an anchored space sets ranks and ratios through the heuristic's knobs; give one kind of space".into(),
            });
        }
        if space.decomposition.is_none() && space.pruning.is_none() && space.anchored.is_none() {
            return Err(SpaceError {
                file: file.to_string(),
                message: "neither [decomposition] nor [pruning] nor [anchored]: the space is empty"
                    .into(),
            });
        }
        Ok(space)
    }

    pub fn load(path: &Path) -> Result<Self, SpaceError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SpaceError {
            file: file.clone(),
            message: format!("cannot read: {e}"),
        })?;
        Self::from_toml(&text, &file)
    }

    /// Refuses a space written for another model than `arch` (a budget's `model.arch`);
    /// `vgg19_bn` and `vgg19_bn@1` are the same model. `file` names the space in errors.
    pub fn check_arch(&self, arch: &str, file: &str) -> Result<(), SpaceError> {
        let Some(own) = &self.arch else {
            return Ok(());
        };
        let same = match (ArchSpec::parse(own), ArchSpec::parse(arch)) {
            (Ok(a), Ok(b)) => a.cfg == b.cfg && a.batch_norm == b.batch_norm,
            _ => own.trim() == arch.trim(),
        };
        if same {
            return Ok(());
        }
        Err(SpaceError {
            file: file.to_string(),
            message: format!(
                "arch = {own:?}: the space is written for another model than the budget's model.arch = {arch:?}"
            ),
        })
    }

    /// Whether resolving needs VBMF ranks of the base weights.
    pub fn needs_vbmf(&self) -> bool {
        self.anchored.is_some()
            || self
                .decomposition
                .as_ref()
                .is_some_and(|d| d.rank == RankKind::Vbmf)
    }

    /// Knobs over `base` (undecomposed). `vbmf` holds the VBMF ranks when the rank kind
    /// is `vbmf`. `file` names the space in errors.
    pub fn resolve(
        &self,
        base: &Graph,
        vbmf: Option<&[RankRecommendation]>,
        file: &str,
    ) -> Result<Space, SpaceError> {
        let err = SpaceError::in_file(file);
        if self.anchored.is_some() {
            return Err(err(
                "an anchored space is resolved with the base weights (Anchored::resolve)".into(),
            ));
        }
        let mut knobs = Vec::new();
        let mut decomposed = Vec::new();
        if let Some(d) = &self.decomposition {
            decomposed = rank_knobs(d, base, vbmf, &mut knobs).map_err(err)?;
        }
        if let Some(p) = &self.pruning {
            let ones = decomposed.iter().map(|n| (n.clone(), [1, 1])).collect();
            let layout = decomposed_layout(base, &ones).map_err(err)?;
            ratio_knobs(p, &layout, &mut knobs).map_err(err)?;
        }
        if knobs.is_empty() {
            return Err(err("the space selects no layer".into()));
        }
        Ok(Space {
            knobs,
            decomposed,
            anchored: None,
        })
    }
}

/// The in- and out-rank knobs of the layers `d` decomposes (convs of `base` with more
/// than 3 input channels and a kernel larger than 1x1), pushed to `knobs`; returns those
/// layers' names.
fn rank_knobs(
    d: &RankSection,
    base: &Graph,
    vbmf: Option<&[RankRecommendation]>,
    knobs: &mut Vec<Knob>,
) -> Result<Vec<String>, String> {
    let candidates: Vec<(String, [usize; 2])> = base
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Conv(c) if c.in_channels > 3 && c.kernel > 1 => {
                Some((n.name.clone(), [c.in_channels, c.out_channels]))
            }
            _ => None,
        })
        .collect();
    let names = pick_layers(&d.layers, candidates.iter().map(|c| c.0.as_str()))
        .map_err(|m| format!("decomposition.layers: {m}"))?;
    for key in d.layer.keys() {
        if !names.contains(key) {
            return Err(format!(
                "decomposition.layer.{key:?}: not a decomposed layer of {} (decomposed: {})",
                base.model,
                names.join(", ")
            ));
        }
    }
    if d.step == 0 {
        return Err("decomposition.step = 0: allowed >= 1".into());
    }
    let mut decomposed = Vec::new();
    for (name, full) in candidates.iter().filter(|c| names.contains(&c.0)) {
        let range = d.layer.get(name);
        let min = range.and_then(|r| r.min).unwrap_or(d.min);
        let max = range.and_then(|r| r.max).unwrap_or(d.max);
        let key = if range.is_some() {
            format!("decomposition.layer.{name:?}")
        } else {
            "decomposition".into()
        };
        let rec = vbmf.and_then(|v| v.iter().find(|r| &r.layer == name));
        let mut ranks = [[0usize; 2]; 2];
        for (side, &full_rank) in full.iter().enumerate() {
            ranks[side] = rank_bounds(d.rank, min, max, full_rank, rec.map(|r| r.vbmf[side]))
                .map_err(|m| format!("{key}: {m}"))?;
        }
        for (side, kind) in [(0, KnobKind::InRank), (1, KnobKind::OutRank)] {
            let [lo, hi] = ranks[side];
            knobs.push(Knob {
                layer: name.clone(),
                kind,
                lo: lo as f64,
                step: d.step as f64,
                levels: (hi - lo) / d.step + 1,
            });
        }
        decomposed.push(name.clone());
    }
    Ok(decomposed)
}

/// The ratio knobs of the groups `p` prunes (of `layout`, the base decomposed as the
/// space says), pushed to `knobs`.
fn ratio_knobs(p: &RatioSection, layout: &Graph, knobs: &mut Vec<Knob>) -> Result<(), String> {
    let all: Vec<String> = groups(layout).into_iter().map(|g| g.name).collect();
    let names = pick_layers(&p.layers, all.iter().map(String::as_str))
        .map_err(|m| format!("pruning.layers: {m}"))?;
    for key in p.layer.keys() {
        if !names.contains(key) {
            return Err(format!(
                "pruning.layer.{key:?}: not a pruned conv group (pruned: {})",
                names.join(", ")
            ));
        }
    }
    if !(p.step.is_finite() && p.step > 0.0 && p.step <= 1.0) {
        return Err(format!("pruning.step = {}: allowed (0, 1]", p.step));
    }
    for name in all.iter().filter(|n| names.contains(n)) {
        let range = p.layer.get(name);
        let min = range.and_then(|r| r.min).unwrap_or(p.min);
        let max = range.and_then(|r| r.max).unwrap_or(p.max);
        let key = if range.is_some() {
            format!("pruning.layer.{name:?}")
        } else {
            "pruning".into()
        };
        if !(0.0..1.0).contains(&min) || !(0.0..1.0).contains(&max) || min > max {
            return Err(format!(
                "{key}: min = {min}, max = {max}: allowed 0 <= min <= max < 1 (a ratio of 1 removes every filter)"
            ));
        }
        let levels = ((max - min) / p.step + 1e-9).floor() as usize + 1;
        knobs.push(Knob {
            layer: name.clone(),
            kind: KnobKind::Ratio,
            lo: min,
            step: p.step,
            levels,
        });
    }
    Ok(())
}

/// `"all"` or names checked against `candidates` (with a suggestion for typos).
pub(super) fn pick_layers<'a>(
    layers: &Layers,
    candidates: impl Iterator<Item = &'a str> + Clone,
) -> Result<Vec<String>, String> {
    match layers {
        Layers::Keyword(k) if k == "all" => Ok(candidates.map(String::from).collect()),
        Layers::Keyword(k) => Err(format!("{k:?}: allowed \"all\" or a list of layer names")),
        Layers::Names(names) => {
            if names.is_empty() {
                return Err("empty list: name at least one layer or use \"all\"".into());
            }
            for n in names {
                if !candidates.clone().any(|c| c == n) {
                    let list: Vec<&str> = candidates.clone().collect();
                    return Err(format!("{n:?} is not one of {}", list.join(", ")));
                }
            }
            Ok(names.clone())
        }
    }
}

/// `[lo, hi]` ranks for one side of a conv.
fn rank_bounds(
    kind: RankKind,
    min: f64,
    max: f64,
    full: usize,
    vbmf: Option<usize>,
) -> Result<[usize; 2], String> {
    if !(min.is_finite() && max.is_finite()) || min > max {
        return Err(format!("min = {min}, max = {max}: need min <= max"));
    }
    let [lo, hi] = match kind {
        RankKind::Absolute => {
            if min < 1.0 {
                return Err(format!("min = {min}: absolute ranks are >= 1"));
            }
            [min.ceil() as usize, (max.floor() as usize).min(full)]
        }
        RankKind::Fraction => {
            if min < 0.0 || max > 1.0 {
                return Err(format!(
                    "min = {min}, max = {max}: fractions of the full rank lie in [0, 1]"
                ));
            }
            [
                ((min * full as f64).ceil() as usize).max(1),
                ((max * full as f64).floor() as usize).max(1),
            ]
        }
        RankKind::Vbmf => {
            if min < -1.0 || max > 1.0 {
                return Err(format!(
                    "min = {min}, max = {max}: calibration ratios lie in [-1, 1]"
                ));
            }
            let v = vbmf.ok_or("rank = \"vbmf\" needs the VBMF ranks of the base weights")?;
            [calibrated_rank(v, full, min), calibrated_rank(v, full, max)]
        }
    };
    if lo > hi {
        return Err(format!(
            "min = {min}, max = {max} leave no rank between 1 and the full rank {full}"
        ));
    }
    Ok([lo, hi])
}

impl Space {
    pub fn dims(&self) -> usize {
        self.knobs.len()
    }

    /// A point with uniform levels.
    pub fn random_point(&self, rng: &mut impl rand::Rng) -> Point {
        use rand::RngExt;
        self.knobs
            .iter()
            .map(|k| rng.random_range(0..k.levels))
            .collect()
    }

    /// The layer config of a point of a per-layer space, for `base` (an anchored space's
    /// configs come from [`super::problem::Problem::config`]).
    pub fn config(&self, base: &Graph, point: &[usize]) -> LayerConfig {
        assert_eq!(point.len(), self.knobs.len(), "point of another space");
        assert!(
            self.anchored.is_none(),
            "an anchored space's config needs its target"
        );
        let mut config = empty_config(base);
        let mut ranks: IndexMap<String, [usize; 2]> = IndexMap::new();
        let mut ratios = IndexMap::new();
        for (k, &level) in self.knobs.iter().zip(point) {
            let v = k.value(level);
            match k.kind {
                KnobKind::InRank => ranks.entry(k.layer.clone()).or_default()[0] = v as usize,
                KnobKind::OutRank => ranks.entry(k.layer.clone()).or_default()[1] = v as usize,
                KnobKind::Ratio => {
                    ratios.insert(k.layer.clone(), v);
                }
                KnobKind::Calibration | KnobKind::Scale | KnobKind::CostExponent => {
                    unreachable!("knobs of anchored spaces only")
                }
            }
        }
        config.set_ranks(ranks);
        config.set_ratios(ratios);
        config
    }

    /// The point of a config, if the config is one (same layers, values on the grids).
    /// Layers the config omits must have 0 in their grid (pruning) to be a point.
    pub fn point_of(&self, config: &LayerConfig) -> Result<Point, String> {
        if self.anchored.is_some() {
            return Err("an anchored space's points are read by Problem::point_of".into());
        }
        let ranks = config.decomposition.as_ref().map(|d| &d.ranks);
        let ratios = config.pruning.as_ref().map(|p| &p.ratios);
        let mut point = Vec::with_capacity(self.knobs.len());
        for k in &self.knobs {
            let v = match k.kind {
                KnobKind::InRank | KnobKind::OutRank => {
                    let r = ranks
                        .and_then(|r| r.get(&k.layer))
                        .ok_or_else(|| format!("{}: no ranks in the config", k.layer))?;
                    r[usize::from(k.kind == KnobKind::OutRank)] as f64
                }
                KnobKind::Ratio => ratios.and_then(|r| r.get(&k.layer)).copied().unwrap_or(0.0),
                _ => unreachable!("knobs of anchored spaces only"),
            };
            let level = k.level_of(v).ok_or_else(|| {
                format!(
                    "{} {:?} = {v} is off the grid {}..={} step {}",
                    k.layer,
                    k.kind,
                    k.value(0),
                    k.value(k.levels - 1),
                    k.step
                )
            })?;
            point.push(level);
        }
        if let Some(r) = ranks
            && let Some(extra) = r.keys().find(|l| !self.decomposed.contains(l))
        {
            return Err(format!(
                "{extra}: decomposed in the config, not in the space"
            ));
        }
        if let Some(r) = ratios
            && let Some((extra, _)) = r
                .iter()
                .find(|(l, v)| **v != 0.0 && !self.knobs.iter().any(|k| &k.layer == *l))
        {
            return Err(format!("{extra}: pruned in the config, not in the space"));
        }
        Ok(point)
    }

    /// Coordinates in [0, 1]^d: level `i` of `n` maps to the middle of its cell.
    pub fn encode(&self, point: &[usize]) -> Vec<f64> {
        self.knobs
            .iter()
            .zip(point)
            .map(|(k, &l)| (l as f64 + 0.5) / k.levels as f64)
            .collect()
    }

    /// The point whose cells hold `x` (clamped into [0, 1]).
    pub fn decode(&self, x: &[f64]) -> Point {
        self.knobs
            .iter()
            .zip(x)
            .map(|(k, &v)| ((v.clamp(0.0, 1.0) * k.levels as f64) as usize).min(k.levels - 1))
            .collect()
    }
}

/// A bad search space is bad input (exit code 2).
impl From<SpaceError> for crate::error::Error {
    fn from(e: SpaceError) -> Self {
        crate::error::Error::BadInput(e.to_string())
    }
}
