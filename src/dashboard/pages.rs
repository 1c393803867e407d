//! The dashboard's HTML, written with maud (which escapes every interpolated value).

use super::charts;
use super::view::{StudySummary, StudyView, TrialRow};
use crate::config::LayerConfig;
use crate::store::{StudyRow, TrialState};
use maud::{DOCTYPE, Markup, PreEscaped, html};

/// `s` with HTML's special characters escaped (for text outside maud's templates).
pub fn escape(s: &str) -> String {
    html!((s)).into_string()
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:right}\
th a{color:inherit}td.l,th.l{text-align:left}tr.best{background:#fff4d6}\
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}figcaption{font-size:90%;color:#555;max-width:760px}\
.key{display:inline-block;width:.8em;height:.8em;margin:0 .3em 0 .8em}progress{width:20em}\
nav{margin-bottom:1em}code{background:#f3f3f3;padding:0 .2em}";

/// Replaces `#live` with a fresh copy from `data-src` every two seconds while the study runs.
const LIVE: &str = "const live=document.getElementById('live');let last=null;\
if(live&&live.dataset.src){setInterval(async()=>{try{const r=await fetch(live.dataset.src);\
if(!r.ok)return;const t=await r.text();if(t!==last){last=t;live.innerHTML=t;}}catch(e){}},2000);}";

fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · rankprune" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav { a href="/" { "studies" } }
                (body)
                script { (PreEscaped(LIVE)) }
            }
        }
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v))
}

/// A stored proxy value: a percentage if it is an accuracy, else the raw score.
fn proxy(v: Option<f64>) -> String {
    match v {
        Some(v) if !charts::is_acc(v) => format!("{v:.3} (score)"),
        v => pct(v),
    }
}

fn times(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}x"))
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
fn when(secs: f64) -> String {
    chrono::DateTime::from_timestamp(secs as i64, 0).map_or("-".into(), |d| {
        d.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    })
}

fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

fn key(color: plotters::style::RGBColor, label: &str) -> Markup {
    let plotters::style::RGBColor(r, g, b) = color;
    html! {
        span.key style=(format!("background:#{r:02x}{g:02x}{b:02x}")) {} (label)
    }
}

pub fn not_found(what: &str) -> Markup {
    page("not found", html! { h1 { "Not found" } p { (what) } })
}

pub fn studies(db: &str, list: &[StudySummary]) -> Markup {
    page(
        "studies",
        html! {
            h1 { "Studies in " code { (db) } }
            div #live data-src="/live" { (studies_table(list)) }
        },
    )
}

pub fn studies_table(list: &[StudySummary]) -> Markup {
    html! {
        table #studies {
            tr {
                th.l { "study" } th.l { "state" } th.l { "controller" } th { "trials done / limit" }
                th { "best validation" } th { "best test" } th { "FLOPs reduction" }
                th.l { "verdict" } th.l { "started" } th { "wall time" }
            }
            @for s in list {
                tr data-study=(s.row.id) {
                    td.l { a href=(format!("/study/{}", s.row.id)) { (s.row.name) } }
                    td.l { (s.state) }
                    td.l title=[s.controller.as_ref().map(|l| l.holder.clone())] { (s.controller_status()) }
                    td { (s.done) " / " (s.limit.map_or("-".into(), |l| l.to_string())) }
                    td { (pct(s.best_val())) }
                    td { (pct(s.best_test())) }
                    td { (times(s.best.as_ref().and_then(|(t, _)| s.reduction(t.cost.flops)))) }
                    td.l.verdict title=[s.verdict.as_ref().map(|v| v.text.clone())] {
                        (s.verdict.as_ref().map_or("-", |v| v.short()))
                    }
                    td.l { (when(s.row.created_at)) }
                    td { (duration(s.wall_s)) }
                }
            }
        }
        @if list.is_empty() { p { "No study yet." } }
    }
}

/// How the study page's trial table is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SortKey {
    #[default]
    Number,
    Acc,
    Flops,
    Params,
}

pub fn study(view: &StudyView, sort: SortKey, desc: bool) -> Markup {
    let id = view.summary.row.id;
    let desc_q = if desc { "&desc=true" } else { "" };
    let src = format!("/study/{id}/live?sort={}{desc_q}", sort_name(sort));
    page(
        &view.summary.row.name,
        html! {
            h1 { "Study " (view.summary.row.name) }
            div #live data-src=[view.summary.is_live().then_some(src)] {
                (study_body(view, sort, desc))
            }
        },
    )
}

fn sort_name(k: SortKey) -> &'static str {
    match k {
        SortKey::Number => "number",
        SortKey::Acc => "acc",
        SortKey::Flops => "flops",
        SortKey::Params => "params",
    }
}

/// The part of the study page that live updates replace.
pub fn study_body(view: &StudyView, sort: SortKey, desc: bool) -> Markup {
    let best = view.summary.best.as_ref().map(|(t, _)| t.number);
    html! {
        (progress(view))
        @if let Some(v) = &view.summary.verdict { (verdict(view.summary.row.id, v)) }
        (figures(view))
        (trial_table(view, sort, desc, best))
    }
}

/// The final stage's verdict: the winner against the one-shot heuristic's config over
/// paired seeds, and each re-trained subject's mean and sd.
fn verdict(study: i64, v: &crate::search::verdict::Verdict) -> Markup {
    html! {
        div #verdict {
            p {
                "Verdict: " strong #verdict-text { (v.text) } ". "
                @if v.subjects.iter().any(|s| s.trial.is_none()) {
                    a href=(format!("/api/studies/{study}/control/export")) download { "control JSON" }
                }
            }
            @if let (Some(w), Some(val)) = (v.winner, &v.val) {
                p #verdict-diff {
                    "Trial " (w) " − control over " (v.seeds) " paired seeds: validation "
                    span #verdict-val { (val.describe(false)) }
                    @if let Some(t) = &v.test { "; test (reported only) " (t.describe(false)) }
                    @if let Some(d) = v.detectable_points() {
                        ". Smallest validation margin these seeds resolve: ±" (format!("{d:.2}")) " points"
                    }
                    "."
                }
            }
            @if let Some(z) = &v.sizing {
                p #verdict-sizing {
                    "Seeds chosen from the measured noise (seeds = \"auto\"): ±" (format!("{:.2}", z.margin))
                    " points needs " (z.needed_text())
                    " seeds (one seed's sd of the paired difference " (format!("{:.2}", z.pair_sd))
                    ", the image set's se " (format!("{:.2}", z.set_se)) " points)."
                }
            }
            table #verdict-subjects {
                tr { th.l { "re-trained" } th { "seeds" } th { "validation %" } th { "test %" } }
                @for s in &v.subjects {
                    tr { td.l { (s.name) } td { (s.seeds) } td { (s.val.points()) } td { (s.test.points()) } }
                }
            }
        }
    }
}

/// The progress line and the best trial.
fn progress(view: &StudyView) -> Markup {
    let s = &view.summary;
    let count = |st: TrialState| view.trials.iter().filter(|r| r.trial.state == st).count();
    html! {
        p #progress {
            "State: " strong #state { (s.state) } ". "
            @if let Some(l) = &s.controller {
                "Controller: " span #controller title=(l.holder) { (s.controller_status()) } ". "
            }
            span #trial-count { (s.total) } " trials: "
            (s.done) " done of " (s.limit.map_or("-".into(), |l| l.to_string()))
            ", " (count(TrialState::Running)) " running, "
            (count(TrialState::Queued)) " queued, "
            (count(TrialState::EarlyStopped)) " early-stopped, "
            (count(TrialState::Failed)) " failed. Wall time " (duration(s.wall_s)) ". "
            @if let Some(l) = s.limit { progress value=(s.done) max=(l) {} }
        }
        @if let Some((t, _)) = &s.best {
            p #best {
                "Best: trial " a #best-trial href=(format!("/study/{}/trial/{}", s.row.id, t.number)) { (t.number) }
                ", validation accuracy " span #best-acc { (pct(s.best_val())) }
                ", test " (pct(s.best_test()))
                ", FLOPs reduction " (times(s.reduction(t.cost.flops)))
                ", " (format!("{:.3}", t.cost.params as f64 / 1e6)) "M params. "
                a href=(format!("/api/studies/{}/export", s.row.id)) download { "winner JSON" }
            }
        } @else {
            p #best { "No completed trial meets the target yet." }
        }
    }
}

/// The study's charts, each with its legend.
fn figures(view: &StudyView) -> Markup {
    html! {
        figure #scatter {
            (PreEscaped(charts::scatter(view, &[])))
            figcaption {
                (key(charts::BLUE_, "completed trial (proxy)"))
                (key(charts::GREY, "early-stopped"))
                (key(charts::BROWN, "after re-training (validation)"))
                " Line: Pareto front of the completed trials; dashed: FLOPs target."
            }
        }
        figure #history {
            (PreEscaped(charts::history(view)))
            figcaption {
                (key(charts::GREEN_, "best so far (meets the target)"))
                (key(charts::GREY, "each trial's proxy accuracy"))
            }
        }
        @if !view.layers.is_empty() {
            figure #layers {
                (PreEscaped(charts::layers(&view.layers)))
                figcaption {
                    "Best trial per layer, as a fraction of the base layer: "
                    (key(charts::BLUE_, "input rank"))
                    (key(charts::GREEN_, "output rank"))
                    (key(charts::ORANGE, "filters kept"))
                }
            }
        }
        @if !super::view::retrained(view).is_empty() {
            figure #agreement {
                (PreEscaped(charts::agreement(view)))
                figcaption {
                    "Proxy against re-trained accuracy. Kendall tau per rung: "
                    @for r in &view.fidelity {
                        "step " (r.step) ": "
                        (r.kendall_tau.map_or("-".into(), |t| format!("{t:+.2}")))
                        " (" (r.n) " trials); "
                    }
                    @if view.fidelity.is_empty() { "not computed yet (after the final stage)." }
                }
            }
        }
    }
}

fn sorted(view: &StudyView, sort: SortKey, desc: bool) -> Vec<&TrialRow> {
    let mut rows: Vec<&TrialRow> = view.trials.iter().collect();
    let key = |r: &TrialRow| match sort {
        SortKey::Number => r.trial.number as f64,
        SortKey::Acc => r.trial.proxy_acc.unwrap_or(-1.0),
        SortKey::Flops => r.trial.cost.flops as f64,
        SortKey::Params => r.trial.cost.params as f64,
    };
    rows.sort_by(|a, b| key(a).total_cmp(&key(b)));
    if desc {
        rows.reverse();
    }
    rows
}

fn trial_table(view: &StudyView, sort: SortKey, desc: bool, best: Option<i64>) -> Markup {
    let id = view.summary.row.id;
    let head = |k: SortKey, label: &str| {
        // Clicking the sorted column again flips it.
        let flip = k == sort && !desc;
        let q = format!(
            "/study/{id}?sort={}{}",
            sort_name(k),
            if flip { "&desc=true" } else { "" }
        );
        let arrow = match (k == sort, desc) {
            (true, false) => " ▲",
            (true, true) => " ▼",
            _ => "",
        };
        html! { th { a href=(q) { (label) (arrow) } } }
    };
    html! {
        table #trials {
            tr {
                (head(SortKey::Number, "trial")) th.l { "state" }
                (head(SortKey::Acc, "proxy acc")) (head(SortKey::Flops, "MFLOPs"))
                th { "FLOPs÷" } (head(SortKey::Params, "params M"))
                th.l { "rung scores" } th { "re-trained val" } th { "test" }
                th.l { "worker" } th { "secs" }
            }
            @for r in sorted(view, sort, desc) {
                @let t = &r.trial;
                tr.best[best == Some(t.number)] data-number=(t.number) data-state=(t.state.as_str()) {
                    td { a href=(format!("/study/{id}/trial/{}", t.number)) { (t.number) } }
                    td.l { (t.state.as_str()) }
                    td { (proxy(t.proxy_acc)) }
                    td { (format!("{:.2}", t.cost.flops as f64 / 1e6)) }
                    td { (times(view.summary.reduction(t.cost.flops))) }
                    td { (format!("{:.3}", t.cost.params as f64 / 1e6)) }
                    td.l {
                        @for (step, v) in &r.reports { (step) ": " (format!("{v:.3}")) " " }
                    }
                    td { (pct(r.fin.as_ref().and_then(|f| f.val_top1))) }
                    td { (pct(r.fin.as_ref().map(|f| f.top1))) }
                    td.l { (t.worker.as_deref().unwrap_or("-")) }
                    td { (match (t.started_at, t.finished_at) {
                        (Some(a), Some(b)) => format!("{:.0}", b - a),
                        _ => "-".into(),
                    }) }
                }
            }
        }
    }
}

pub fn trial(study: &StudyRow, row: &TrialRow, base: Option<&crate::cost::Cost>) -> Markup {
    let t = &row.trial;
    let export = format!("/api/studies/{}/trials/{}/export", study.id, t.number);
    page(
        &format!("trial {}", t.number),
        html! {
            p { a href=(format!("/study/{}", study.id)) { "study " (study.name) } }
            h1 { "Trial " (t.number) }
            (trial_facts(row, base))
            p { a #download href=(export) download=(format!("trial-{}.json", t.number)) { "Download the config (reference JSON)" } }
            h2 { "Rung scores" }
            @if row.reports.is_empty() { p { "None reported." } } @else {
                figure #curve { (PreEscaped(charts::curve(&row.reports))) }
                table #reports {
                    tr { th { "step" } th { "value" } }
                    @for (step, v) in &row.reports { tr { td { (step) } td { (format!("{v:.4}")) } } }
                }
            }
            (trial_config(study, t))
        },
    )
}

/// State, scores, cost, worker and timings of a trial.
fn trial_facts(row: &TrialRow, base: Option<&crate::cost::Cost>) -> Markup {
    let t = &row.trial;
    let reduction = |b: Option<u64>, v: u64| times(b.map(|b| b as f64 / v.max(1) as f64));
    html! {
        table #facts {
            tr { th.l { "state" } td.l #trial-state { (t.state.as_str()) } }
            tr { th.l { "proxy accuracy" } td.l { (proxy(t.proxy_acc)) } }
            tr { th.l { "proxy loss" } td.l { (t.proxy_loss.map_or("-".into(), |v| format!("{v:.4}"))) } }
            @if let Some(f) = &row.fin {
                tr { th.l { "after re-training" } td.l {
                    "validation " (pct(f.val_top1)) ", test top-1 " (pct(Some(f.top1)))
                    ", top-5 " (pct(Some(f.top5))) " after " (f.epochs) " epochs"
                    (f.reason.as_deref().map_or(String::new(), |r| format!(" (chosen by {r})")))
                } }
            }
            tr { th.l { "FLOPs" } td.l { (format!("{:.2} M", t.cost.flops as f64 / 1e6)) ", reduction " (reduction(base.map(|b| b.flops), t.cost.flops)) } }
            tr { th.l { "params" } td.l { (format!("{:.3} M", t.cost.params as f64 / 1e6)) ", reduction " (reduction(base.map(|b| b.params), t.cost.params)) } }
            tr { th.l { "size" } td.l { (format!("{:.2} MB", t.cost.size_bytes as f64 / 1e6)) } }
            @if let Some(us) = t.cost.latency_us {
                tr { th.l { "latency" } td.l { (format!("{:.3} ms (predicted by the study's latency table)", us as f64 / 1e3)) } }
            }
            tr { th.l { "worker" } td.l { (t.worker.as_deref().unwrap_or("-")) } }
            tr { th.l { "queued" } td.l { (when(t.queued_at)) } }
            tr { th.l { "started" } td.l { (t.started_at.map_or("-".into(), when)) } }
            tr { th.l { "finished" } td.l { (t.finished_at.map_or("-".into(), when)) } }
            tr { th.l { "run time" } td.l { (match (t.started_at, t.finished_at) { (Some(a), Some(b)) => duration(b - a), _ => "-".into() }) } }
            @if let Some(e) = &t.error { tr { th.l { "error" } td.l #error { (e) } } }
        }
    }
}

/// A trial's ranks and output ratios by base layer, and its ratio of every conv.
fn trial_config(study: &StudyRow, t: &crate::store::Trial) -> Markup {
    let layers = super::view::layer_bars(study, &t.config).unwrap_or_default();
    let config = LayerConfig::from_json(&t.config, "trial config").ok();
    let ratios = config.as_ref().and_then(|c| c.pruning.as_ref());
    html! {
        h2 { "Config per layer" }
        table #config {
            tr {
                th.l { "layer" } th { "input channels" } th { "input rank" }
                th { "output channels" } th { "output rank" } th { "output filters pruned" }
            }
            @for l in &layers {
                tr {
                    td.l { (l.name) }
                    td { (l.in_channels) }
                    td { (l.ranks.map_or("-".into(), |r| r[0].to_string())) }
                    td { (l.out_channels) }
                    td { (l.ranks.map_or("-".into(), |r| r[1].to_string())) }
                    td { (l.ratio.map_or("-".into(), |v| format!("{v:.3}"))) }
                }
            }
        }
        @if let Some(p) = ratios {
            h3 { "Pruning ratios per conv (" (p.method) ")" }
            table #ratios {
                tr { th.l { "conv" } th { "ratio" } }
                @for (k, v) in &p.ratios { tr { td.l { (k) } td { (format!("{v:.3}")) } } }
            }
        }
    }
}
