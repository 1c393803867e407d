//! A layer config applied to a [`Graph`]: its Tucker-2 ranks first
//! ([`super::graph_tucker`]), then its pruning ratios by dependency group
//! ([`super::group_prune`]), named as in the decomposed graph (a group by its first
//! conv: `layer2.0.conv2`, or `layer2.0.conv2_tucker_2` once that conv is decomposed).

use super::decompose::TuckerCache;
use super::graph_tucker::{decompose_graph_cached, decomposed_layout};
use super::group_prune::{prune_groups_kept, pruned_layout};
use super::prune::Kept;
use crate::config::LayerConfig;
use crate::graph::Graph;
use crate::weights::Weights;
use std::collections::BTreeMap;

/// `graph` and `weights` compressed as `config` says; errors name the layer or group.
pub fn apply_config(
    graph: &Graph,
    weights: &Weights,
    config: &LayerConfig,
) -> Result<(Graph, Weights), String> {
    let (g, w, _) = apply_config_cached(graph, weights, config, None)?;
    Ok((g, w))
}

/// [`apply_config`] with the Tucker factors from `cache` (see
/// [`decompose_graph_cached`]), and the channels each pruned group kept.
pub fn apply_config_cached(
    graph: &Graph,
    weights: &Weights,
    config: &LayerConfig,
    cache: Option<&TuckerCache>,
) -> Result<(Graph, Weights, Kept), String> {
    let (g, w) = decompose_graph_cached(graph, weights, &ranks(config), cache)
        .map_err(|e| format!("decomposition: {e}"))?;
    prune_groups_kept(&g, &w, &ratios(config)).map_err(|e| format!("pruning: {e}"))
}

/// The graph [`apply_config`] gives, without weights (no factorisation, no norms): the
/// compressed network's layout, for counting it or checking weights against it.
pub fn config_layout(graph: &Graph, config: &LayerConfig) -> Result<Graph, String> {
    let g = decomposed_layout(graph, &ranks(config)).map_err(|e| format!("decomposition: {e}"))?;
    pruned_layout(&g, &ratios(config)).map_err(|e| format!("pruning: {e}"))
}

/// An empty config (no decomposition, no pruning) for `graph`.
pub fn empty_config(graph: &Graph) -> LayerConfig {
    let classes = graph.num_classes().unwrap_or(0);
    LayerConfig::for_model(&graph.model, classes, graph.input)
}

/// The cost of `config` applied to `graph` (counted on its layout, no weights needed).
pub fn config_cost(graph: &Graph, config: &LayerConfig) -> Result<crate::cost::Cost, String> {
    config_layout(graph, config).map(|g| crate::graph::cost::count(&g))
}

/// The config's Tucker-2 ranks by layer name.
pub fn ranks(config: &LayerConfig) -> BTreeMap<String, [usize; 2]> {
    config
        .decomposition
        .iter()
        .flat_map(|d| d.ranks.iter().map(|(k, v)| (k.clone(), *v)))
        .collect()
}

/// The config's pruning ratios by group name.
pub fn ratios(config: &LayerConfig) -> BTreeMap<String, f64> {
    config
        .pruning
        .iter()
        .flat_map(|p| p.ratios.iter().map(|(k, v)| (k.clone(), *v)))
        .collect()
}
