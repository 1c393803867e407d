//! Every way a layer config can be wrong gives an error naming the file, the key and
//! what is allowed; none panics.

use crate::common::vgg19_bn;
use rankprune::config::LayerConfig;

/// Parses and applies `json` to vgg19_bn/100; returns the error text.
fn error_of(json: &str) -> String {
    let base = vgg19_bn();
    let result = LayerConfig::from_json(json, "bad.json").and_then(|c| c.apply(&base, "bad.json"));
    let e = result.expect_err("config should be rejected").to_string();
    assert!(
        e.starts_with("bad.json: "),
        "error does not name the file: {e}"
    );
    e
}

fn assert_has(e: &str, parts: &[&str]) {
    for p in parts {
        assert!(e.contains(p), "{e:?} lacks {p:?}");
    }
}

const DEC: &str = r#""decomposition": {"method": "tucker2", "ranks": {"features.3": [33, 39]}}"#;

#[test]
fn syntax_error_names_line_and_column() {
    let e = error_of("{\n  \"model\": \"vgg19_bn\",\n  oops\n}");
    assert_has(&e, &["line 3 column"]);
}

#[test]
fn unknown_top_level_key() {
    let e = error_of(r#"{"model": "vgg19_bn", "pruneing": {}}"#);
    assert_has(
        &e,
        &["unknown field `pruneing`", "decomposition", "pruning"],
    );
}

#[test]
fn unknown_nested_key() {
    let e = error_of(r#"{"decomposition": {"method": "tucker2", "ranks": {}, "rank": 3}}"#);
    assert_has(&e, &["unknown field `rank`"]);
}

#[test]
fn unknown_layer_suggests_nearest() {
    let e = error_of(r#"{"decomposition": {"method": "tucker2", "ranks": {"feature.3": [3, 3]}}}"#);
    assert_has(
        &e,
        &[
            "decomposition.ranks.feature.3",
            "did you mean \"features.3\"",
        ],
    );
}

#[test]
fn zero_rank() {
    let e =
        error_of(r#"{"decomposition": {"method": "tucker2", "ranks": {"features.3": [0, 3]}}}"#);
    assert_has(
        &e,
        &[
            "decomposition.ranks.features.3",
            "in_rank 0",
            "allowed 1..=64",
        ],
    );
}

#[test]
fn rank_above_mode_size() {
    let e =
        error_of(r#"{"decomposition": {"method": "tucker2", "ranks": {"features.7": [10, 129]}}}"#);
    assert_has(
        &e,
        &[
            "decomposition.ranks.features.7",
            "out_rank 129",
            "allowed 1..=128",
        ],
    );
}

#[test]
fn rank_of_wrong_arity_or_type() {
    let e = error_of(r#"{"decomposition": {"method": "tucker2", "ranks": {"features.3": [3]}}}"#);
    assert_has(&e, &["line 1"]);
    let e =
        error_of(r#"{"decomposition": {"method": "tucker2", "ranks": {"features.3": [-1, 3]}}}"#);
    assert_has(&e, &["line 1"]);
}

#[test]
fn ratio_out_of_range() {
    for r in ["1.0", "-0.1", "1.5"] {
        let e = error_of(&format!(
            r#"{{"pruning": {{"method": "l2_norm", "ratios": {{"features.0": {r}}}}}}}"#
        ));
        assert_has(&e, &["pruning.ratios.features.0", "allowed [0, 1)"]);
    }
}

#[test]
fn tucker_ratio_for_undecomposed_layer() {
    let e =
        error_of(r#"{"pruning": {"method": "l2_norm", "ratios": {"features.7_tucker_0": 0.2}}}"#);
    assert_has(
        &e,
        &[
            "pruning.ratios.features.7_tucker_0",
            "features.7 is not decomposed",
        ],
    );
}

#[test]
fn plain_ratio_for_decomposed_layer() {
    let e = error_of(&format!(
        r#"{{{DEC}, "pruning": {{"method": "l2_norm", "ratios": {{"features.3": 0.2}}}}}}"#
    ));
    assert_has(
        &e,
        &[
            "pruning.ratios.features.3",
            "is decomposed",
            "features.3_tucker_0/1/2",
        ],
    );
}

#[test]
fn tucker_index_out_of_range() {
    let e = error_of(&format!(
        r#"{{{DEC}, "pruning": {{"method": "l2_norm", "ratios": {{"features.3_tucker_3": 0.2}}}}}}"#
    ));
    assert_has(
        &e,
        &["pruning.ratios.features.3_tucker_3", "allowed 0, 1, 2"],
    );
}

#[test]
fn unknown_pruning_layer_suggests_nearest() {
    let e = error_of(r#"{"pruning": {"method": "l2_norm", "ratios": {"featurs.27": 0.2}}}"#);
    assert_has(
        &e,
        &["pruning.ratios.featurs.27", "did you mean \"features.27\""],
    );
}

#[test]
fn wrong_methods() {
    let e = error_of(r#"{"decomposition": {"method": "cp", "ranks": {}}}"#);
    assert_has(&e, &["decomposition.method", "allowed: \"tucker2\""]);
    let e = error_of(r#"{"pruning": {"method": "l1", "ratios": {}}}"#);
    assert_has(&e, &["pruning.method", "allowed: \"l2_norm\""]);
}

#[test]
fn model_mismatch() {
    assert_has(
        &error_of(r#"{"model": "vgg16_bn"}"#),
        &["model", "vgg16_bn"],
    );
    assert_has(&error_of(r#"{"num_classes": 10}"#), &["num_classes", "10"]);
    assert_has(&error_of(r#"{"input": [3, 64, 64]}"#), &["input"]);
}

#[test]
fn missing_file_is_named() {
    let e = LayerConfig::load(std::path::Path::new("/nonexistent/c.json"))
        .unwrap_err()
        .to_string();
    assert_has(&e, &["/nonexistent/c.json", "cannot read"]);
}

#[test]
fn reference_config_round_trips_equal() {
    let path = crate::common::repo_path("experiments/reference-search-config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = LayerConfig::from_json(&text, "ref").unwrap();
    let again = LayerConfig::from_json(&config.to_json(), "again").unwrap();
    assert_eq!(config, again);
    let original: serde_json::Value = serde_json::from_str(&text).unwrap();
    let written: serde_json::Value = serde_json::from_str(&config.to_json()).unwrap();
    assert_eq!(original, written);
    // Key order survives too (features.10 stays after features.7).
    assert_eq!(config.to_json().trim(), text.trim());
}

#[test]
fn decomposing_a_three_channel_conv_is_allowed() {
    let json = r#"{"decomposition": {"method": "tucker2", "ranks": {"features.0": [3, 16]}}}"#;
    let arch = LayerConfig::from_json(json, "c")
        .unwrap()
        .apply(&vgg19_bn(), "c")
        .unwrap();
    assert!(arch.find_conv("features.0_tucker_1").is_some());
}
