//! The per-layer compression config (JSON): Tucker-2 ranks and filter-pruning ratios,
//! in the format of the reference's `vgg19-cifar100-search-config.json`.

use crate::arch::{Arch, ConvBody};
use indexmap::IndexMap;
use serde::de::{Deserializer, Error as _, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::marker::PhantomData;
use std::path::Path;

pub const DECOMPOSITION_METHOD: &str = "tucker2";
pub const PRUNING_METHOD: &str = "l2_norm";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decomposition {
    pub method: String,
    /// Layer -> `[in_rank, out_rank]`.
    #[serde(deserialize_with = "unique_ranks")]
    pub ranks: IndexMap<String, [usize; 2]>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pruning {
    pub method: String,
    /// Layer or `LAYER_tucker_i` -> fraction of its filters to remove.
    #[serde(deserialize_with = "unique_ratios")]
    pub ratios: IndexMap<String, f64>,
}

fn unique_ranks<'de, D: Deserializer<'de>>(d: D) -> Result<IndexMap<String, [usize; 2]>, D::Error> {
    d.deserialize_map(UniqueKeys("decomposition.ranks", PhantomData))
}

fn unique_ratios<'de, D: Deserializer<'de>>(d: D) -> Result<IndexMap<String, f64>, D::Error> {
    d.deserialize_map(UniqueKeys("pruning.ratios", PhantomData))
}

/// A map of layer names (the section is named in errors) that refuses a layer listed
/// twice, where a plain map would keep the last value without a word.
struct UniqueKeys<V>(&'static str, PhantomData<V>);

impl<'de, V: Deserialize<'de>> Visitor<'de> for UniqueKeys<V> {
    type Value = IndexMap<String, V>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: a map of layer names", self.0)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = IndexMap::new();
        while let Some(layer) = map.next_key::<String>()? {
            if out.contains_key(&layer) {
                return Err(A::Error::custom(format!(
                    "{}: layer {layer:?} is listed twice (give each layer once)",
                    self.0
                )));
            }
            let v = map.next_value()?;
            out.insert(layer, v);
        }
        Ok(out)
    }
}

/// A layer config: which convs are decomposed (and their ranks), which are pruned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_classes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<[usize; 3]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decomposition: Option<Decomposition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruning: Option<Pruning>,
    /// Figures of the model this config made (written by `export`; ignored on input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<serde_json::Value>,
    /// Where the config came from (written by `export`, and by an anchored search space
    /// for its trials, whose knobs it records; kept on input, changing no layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<serde_json::Value>,
}

/// A config that cannot be read or does not fit the architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File the config came from (`<config>` when it did not come from a file).
    pub file: String,
    /// JSON key path (`pruning.ratios.features.3_tucker_0`), or `line:col` for syntax.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Filters kept when a ratio `r` is applied to `n` filters: n - floor(n*r), at least 1.
pub fn kept_filters(n: usize, ratio: f64) -> usize {
    // The epsilon keeps 0.29 * 100 from flooring to 28 through rounding error.
    let removed = (n as f64 * ratio + 1e-9).floor() as usize;
    n.saturating_sub(removed).max(1)
}

/// Levenshtein distance, for "did you mean" suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn nearest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates.min_by_key(|c| edit_distance(name, c))
}

impl LayerConfig {
    /// An empty config for `arch` (no decomposition, no pruning).
    pub fn for_arch(arch: &Arch) -> Self {
        Self::for_model(&arch.model, arch.num_classes(), arch.input)
    }

    /// An empty config for the network `model` with `num_classes` classes and `input`
    /// images `[C, H, W]`.
    pub fn for_model(model: &str, num_classes: usize, input: [usize; 3]) -> Self {
        Self {
            model: Some(model.to_string()),
            num_classes: Some(num_classes),
            input: Some(input),
            decomposition: None,
            pruning: None,
            metrics: None,
            provenance: None,
        }
    }

    /// Sets the Tucker-2 ranks, layer -> `[in, out]` (no decomposition when empty).
    pub fn set_ranks(&mut self, ranks: IndexMap<String, [usize; 2]>) {
        self.decomposition = (!ranks.is_empty()).then(|| Decomposition {
            method: DECOMPOSITION_METHOD.into(),
            ranks,
        });
    }

    /// Sets the pruning ratios, conv -> fraction of its filters (no pruning when empty).
    pub fn set_ratios(&mut self, ratios: IndexMap<String, f64>) {
        self.pruning = (!ratios.is_empty()).then(|| Pruning {
            method: PRUNING_METHOD.into(),
            ratios,
        });
    }

    /// Parses JSON text; `file` names the source in errors.
    pub fn from_json(text: &str, file: &str) -> Result<Self, ConfigError> {
        serde_json::from_str(text).map_err(|e| {
            let key = format!("line {} column {}", e.line(), e.column());
            let message = e.to_string();
            let message = message
                .strip_suffix(&format!(" at {key}"))
                .unwrap_or(&message)
                .to_string();
            ConfigError {
                file: file.to_string(),
                key,
                message,
            }
        })
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "-".to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Self::from_json(&text, &file)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a config always serializes")
    }

    /// Writes the config through a temporary file (see [`crate::outpath::write_atomic`]).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        crate::outpath::write_atomic(path, (self.to_json() + "\n").as_bytes())
    }

    /// Checks the config against `base` (an undecomposed, unpruned architecture) and
    /// returns the compressed architecture: ranks first, then pruning.
    pub fn apply(&self, base: &Arch, file: &str) -> Result<Arch, ConfigError> {
        let err = |key: &str, message: String| ConfigError {
            file: file.to_string(),
            key: key.to_string(),
            message,
        };
        self.check_header(base).map_err(|(k, m)| err(k, m))?;
        let mut arch = base.clone();
        if let Some(dec) = &self.decomposition {
            decompose(&mut arch, base, dec).map_err(|(k, m)| err(&k, m))?;
        }
        if let Some(pruning) = &self.pruning {
            prune(&mut arch, &base.layer_names(), pruning).map_err(|(k, m)| err(&k, m))?;
        }
        debug_assert!(arch.check().is_ok(), "{:?}", arch.check());
        Ok(arch)
    }

    /// The optional `model`, `num_classes` and `input` against `base`: (key, message)
    /// of the first that differs.
    fn check_header(&self, base: &Arch) -> Result<(), (&'static str, String)> {
        if let Some(model) = &self.model
            && model != &base.model
        {
            return Err((
                "model",
                format!(
                    "config is for {model:?}, the architecture is {:?}",
                    base.model
                ),
            ));
        }
        if let Some(n) = self.num_classes
            && n != base.num_classes()
        {
            return Err((
                "num_classes",
                format!(
                    "config says {n}, the architecture has {}",
                    base.num_classes()
                ),
            ));
        }
        if let Some(input) = self.input
            && input != base.input
        {
            return Err((
                "input",
                format!(
                    "config says {input:?}, the architecture takes {:?}",
                    base.input
                ),
            ));
        }
        Ok(())
    }
}

/// A config error's key and message, before the file is named.
type Keyed = (String, String);

/// Decomposes the layers `dec` lists in `arch` (a copy of `base`), each checked against
/// `base`.
fn decompose(arch: &mut Arch, base: &Arch, dec: &Decomposition) -> Result<(), Keyed> {
    if dec.method != DECOMPOSITION_METHOD {
        return Err((
            "decomposition.method".into(),
            format!(
                "{:?} is not supported; allowed: {DECOMPOSITION_METHOD:?}",
                dec.method
            ),
        ));
    }
    let layers = base.layer_names();
    for (name, &[in_rank, out_rank]) in &dec.ranks {
        let key = format!("decomposition.ranks.{name}");
        let Some((_, unit)) = base.find_unit(name) else {
            let hint = nearest(name, layers.iter().map(String::as_str))
                .map(|n| format!("; did you mean {n:?}?"))
                .unwrap_or_default();
            return Err((key, format!("no conv layer called {name:?}{hint}")));
        };
        let ConvBody::Plain(conv) = &unit.body else {
            return Err((
                key,
                format!("{name} is already decomposed in the base model"),
            ));
        };
        if !(1..=conv.in_channels).contains(&in_rank) {
            return Err((
                key,
                format!(
                    "in_rank {in_rank} out of range: allowed 1..={} (input channels)",
                    conv.in_channels
                ),
            ));
        }
        if !(1..=conv.out_channels).contains(&out_rank) {
            return Err((
                key,
                format!(
                    "out_rank {out_rank} out of range: allowed 1..={} (filters)",
                    conv.out_channels
                ),
            ));
        }
        if conv.in_channels <= 3 {
            tracing::warn!(layer = %name, "decomposing a conv whose input has only {} channels", conv.in_channels);
        }
        arch.decompose(name, in_rank, out_rank)
            .map_err(|m| (key, m))?;
    }
    Ok(())
}

/// Prunes the convs `pruning` lists in `arch` (`layers`: the base model's layer names,
/// for the messages).
fn prune(arch: &mut Arch, layers: &[String], pruning: &Pruning) -> Result<(), Keyed> {
    if pruning.method != PRUNING_METHOD {
        return Err((
            "pruning.method".into(),
            format!(
                "{:?} is not supported; allowed: {PRUNING_METHOD:?}",
                pruning.method
            ),
        ));
    }
    let mut sizes = Vec::new();
    for (name, &ratio) in &pruning.ratios {
        let key = format!("pruning.ratios.{name}");
        if !(ratio.is_finite() && (0.0..1.0).contains(&ratio)) {
            return Err((key, format!("ratio {ratio} out of range: allowed [0, 1)")));
        }
        let Some(pos) = arch.find_conv(name) else {
            return Err((key, no_such_conv(arch, layers, name)));
        };
        let n = arch.conv(pos).out_channels;
        sizes.push((pos, kept_filters(n, ratio)));
    }
    for (pos, kept) in sizes {
        arch.set_out_channels(pos, kept);
    }
    Ok(())
}

/// Why `name` names no conv of `arch` that can be pruned, with a hint.
fn no_such_conv(arch: &Arch, layers: &[String], name: &str) -> String {
    match name.rsplit_once("_tucker_") {
        Some((layer, i)) if layers.contains(&layer.to_string()) => {
            if arch
                .find_unit(layer)
                .is_some_and(|(_, u)| matches!(u.body, ConvBody::Plain(_)))
            {
                format!("{layer} is not decomposed; prune it as {layer:?}")
            } else {
                format!("sub-conv index {i:?} out of range: allowed 0, 1, 2")
            }
        }
        _ if layers.iter().any(|l| l == name) => {
            format!("{name} is decomposed; prune its sub-convs {name}_tucker_0/1/2 instead")
        }
        _ => {
            let targets: Vec<String> = arch.convs().map(|c| c.name.clone()).collect();
            let hint = nearest(name, targets.iter().map(String::as_str))
                .map(|n| format!("; did you mean {n:?}?"))
                .unwrap_or_default();
            format!("no conv layer called {name:?}{hint}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_filters_floors_and_keeps_one() {
        assert_eq!(kept_filters(64, 0.5), 32);
        assert_eq!(kept_filters(39, 0.3), 28); // floor(11.7) = 11 removed
        assert_eq!(kept_filters(100, 0.29), 71);
        assert_eq!(kept_filters(1, 0.9), 1);
        assert_eq!(kept_filters(10, 0.0), 10);
    }

    #[test]
    fn a_layer_listed_twice_is_refused_naming_the_section_and_layer() {
        let ranks = r#"{"decomposition": {"method": "tucker2",
            "ranks": {"features.3": [4, 4], "features.3": [8, 8]}}}"#;
        let e = LayerConfig::from_json(ranks, "c.json").unwrap_err();
        assert!(e.key.starts_with("line 2 column "), "{e}");
        assert_eq!(
            e.message,
            "decomposition.ranks: layer \"features.3\" is listed twice (give each layer once)"
        );
        let ratios = r#"{"pruning": {"method": "l2_norm",
            "ratios": {"features.0": 0.5, "features.3": 0.1, "features.0": 0.2}}}"#;
        let e = LayerConfig::from_json(ratios, "c.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pruning.ratios: layer \"features.0\" is listed twice"),
            "{e}"
        );
        let once = ratios.replace(", \"features.0\": 0.2", "");
        let c = LayerConfig::from_json(&once, "c.json").unwrap();
        assert_eq!(c.pruning.unwrap().ratios.len(), 2);
    }

    #[test]
    fn edit_distance_known_values() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("features.3", "features.3"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
