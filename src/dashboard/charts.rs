//! The dashboard's charts as SVG, drawn with plotters. Legends are left to the page (an
//! HTML list beside each chart), so every mark inside a chart is data: the scatter has
//! exactly one circle per completed trial.

use super::view::{LayerBar, StudyView, TrialRow, best_so_far, retrained};
use crate::store::TrialState;
use plotters::coord::Shift;
use plotters::prelude::*;

pub const BLUE_: RGBColor = RGBColor(0x4a, 0x7e, 0xbb);
pub const GREY: RGBColor = RGBColor(0xaa, 0xaa, 0xaa);
pub const BROWN: RGBColor = RGBColor(0x8c, 0x56, 0x4b);
pub const ORANGE: RGBColor = RGBColor(0xe0, 0x8a, 0x1e);
pub const GREEN_: RGBColor = RGBColor(0x3a, 0x9a, 0x5b);

/// A labelled point drawn beside the trials (a model of a pipeline's table).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Mark {
    pub name: String,
    pub flops: u64,
    /// Accuracy in [0, 1].
    pub acc: f64,
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Drawn = Result<(), Box<dyn std::error::Error>>;

/// Runs `draw` on a white `w` x `h` SVG canvas; a drawing error becomes a note in the SVG.
fn svg(w: u32, h: u32, draw: impl FnOnce(&Area) -> Drawn) -> String {
    let mut out = String::new();
    let failed = {
        let root = SVGBackend::with_string(&mut out, (w, h)).into_drawing_area();
        let r = root
            .fill(&WHITE)
            .map_err(Into::into)
            .and_then(|_| draw(&root))
            .and_then(|_| root.present().map_err(Into::into));
        r.err().map(|e| e.to_string())
    };
    match failed {
        None => out,
        Some(e) => format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\"><text x=\"10\" y=\"20\">chart failed: {}</text></svg>",
            super::pages::escape(&e)
        ),
    }
}

/// A range around `values` (with `pad` of its width each side), inside [lo, hi].
fn span(values: impl Iterator<Item = f64>, pad: f64, lo: f64, hi: f64) -> (f64, f64) {
    let (a, b) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !a.is_finite() {
        return (lo, hi);
    }
    let w = (b - a).max(0.02);
    ((a - pad * w).max(lo), (b + pad * w).min(hi))
}

const FONT: (&str, u32) = ("sans-serif", 13);

/// Whether a stored proxy value is an accuracy: an early-stopped trial scored by KL at
/// step 0 stores that score (-KL, below 0) instead.
pub fn is_acc(v: f64) -> bool {
    (0.0..=1.0).contains(&v)
}

/// A log axis's label: only at 1, 2 and 5 times a power of ten, so labels never crowd.
fn one_two_five(v: &f64) -> String {
    let lead = (v / 10f64.powf(v.log10().floor())).round();
    if [1.0, 2.0, 5.0].contains(&lead) {
        format!("{}", (v * 100.0).round() / 100.0)
    } else {
        String::new()
    }
}

fn mflops(f: u64) -> f64 {
    f as f64 / 1e6
}

/// The completed and early-stopped trials with a proxy accuracy.
fn with_acc(view: &StudyView) -> impl Iterator<Item = (&TrialRow, f64)> {
    view.trials
        .iter()
        .filter_map(|r| Some((r, r.trial.proxy_acc.filter(|a| is_acc(*a))?)))
        .filter(|(r, _)| {
            matches!(
                r.trial.state,
                TrialState::Complete | TrialState::EarlyStopped
            )
        })
}

/// (MFLOPs, validation accuracy after re-training) of the re-trained trials.
fn retrained_points(view: &StudyView) -> Vec<(f64, f64)> {
    view.trials
        .iter()
        .filter_map(|r| Some((mflops(r.trial.cost.flops), r.fin.as_ref()?.val_top1?)))
        .collect()
}

/// The scatter's x (MFLOPs, log scale) and y (accuracy) ranges: every point with a
/// margin, the target included.
fn scatter_frame(
    view: &StudyView,
    marks: &[Mark],
    retrained: &[(f64, f64)],
    target: Option<f64>,
) -> ((f64, f64), (f64, f64)) {
    let xs = with_acc(view)
        .map(|(r, _)| mflops(r.trial.cost.flops))
        .chain(marks.iter().map(|m| mflops(m.flops)))
        .chain(target);
    let (x0, x1) = xs.fold((f64::INFINITY, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let x = if x0.is_finite() && x0 > 0.0 {
        (x0 / 1.3, x1 * 1.3)
    } else {
        (0.1, 10.0)
    };
    let ys = with_acc(view)
        .map(|(_, a)| a)
        .chain(retrained.iter().map(|p| p.1))
        .chain(marks.iter().map(|m| m.acc));
    (x, span(ys, 0.1, 0.0, 1.0))
}

/// Accuracy against MFLOPs (log scale): completed trials (circles), early-stopped ones
/// (grey crosses), the Pareto front of the completed ones, the FLOPs target (dashed),
/// the validation accuracy after re-training (brown triangles) and `marks` (squares, with
/// a legend).
pub fn scatter(view: &StudyView, marks: &[Mark]) -> String {
    let rows = &view.trials;
    let retrained = retrained_points(view);
    let target = view.summary.target.and_then(|t| t.max_flops).map(mflops);
    let ((x0, x1), (y0, y1)) = scatter_frame(view, marks, &retrained, target);
    // One plotters chart: its drawing steps share the chart's context, so they stay here.
    svg(760, 440, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d((x0..x1).log_scale(), y0..y1)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_labels(20)
            .x_label_formatter(&one_two_five)
            .x_desc("MFLOPs (log scale)")
            .y_desc("validation accuracy")
            .y_label_formatter(&|v| format!("{:.0}%", 100.0 * v))
            .label_style(FONT)
            .draw()?;
        if let Some(t) = target {
            chart.draw_series(DashedLineSeries::new(
                [(t, y0), (t, y1)],
                6,
                4,
                GREY.stroke_width(2),
            ))?;
        }
        let front: Vec<(f64, f64)> = view
            .front
            .iter()
            .map(|&i| {
                let t = &rows[i].trial;
                (mflops(t.cost.flops), t.proxy_acc.unwrap_or(0.0))
            })
            .collect();
        chart.draw_series(LineSeries::new(front, BLUE_.stroke_width(2)))?;
        chart.draw_series(with_acc(view).map(|(r, a)| {
            let p = (mflops(r.trial.cost.flops), a);
            if r.trial.state == TrialState::Complete {
                Circle::new(p, 4, BLUE_.filled()).into_dyn()
            } else {
                Cross::new(p, 4, GREY.stroke_width(2)).into_dyn()
            }
        }))?;
        chart.draw_series(
            retrained
                .iter()
                .map(|&p| TriangleMarker::new(p, 7, BROWN.filled())),
        )?;
        // Marks (only `rankprune plot` has them) get a legend, since their labels would
        // overlap where models sit close together.
        for (i, m) in marks.iter().enumerate() {
            let c = Palette99::pick(i + 1).stroke_width(2);
            chart
                .draw_series([EmptyElement::at((mflops(m.flops), m.acc))
                    + Rectangle::new([(-5, -5), (5, 5)], c)])?
                .label(m.name.clone())
                .legend(move |(x, y)| Rectangle::new([(x - 5, y - 5), (x + 5, y + 5)], c));
        }
        if !marks.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.9))
                .border_style(GREY)
                .label_font(FONT)
                .draw()?;
        }
        Ok(())
    })
}

/// Best proxy accuracy so far (among trials that meet the target) by trial number, over
/// each trial's own proxy accuracy.
pub fn history(view: &StudyView) -> String {
    let best = best_so_far(view);
    let own: Vec<(f64, f64)> = view
        .trials
        .iter()
        .filter_map(|r| {
            Some((
                r.trial.number as f64,
                r.trial.proxy_acc.filter(|a| is_acc(*a))?,
            ))
        })
        .collect();
    let n = view.trials.len().max(2) as f64;
    let (y0, y1) = span(own.iter().map(|p| p.1), 0.1, 0.0, 1.0);
    svg(760, 300, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(-0.5..n - 0.5, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc("trial")
            .y_desc("proxy accuracy")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{:.0}%", 100.0 * v))
            .label_style(FONT)
            .draw()?;
        chart.draw_series(own.iter().map(|&p| Circle::new(p, 3, GREY.filled())))?;
        let steps = best.iter().map(|&(i, b)| (i as f64, b));
        chart.draw_series(LineSeries::new(steps, GREEN_.stroke_width(2)))?;
        Ok(())
    })
}

/// Per conv layer: input rank / input channels, output rank / output channels and kept
/// filters / filters, as fractions of the base model (1.0 = untouched).
pub fn layers(layers: &[LayerBar]) -> String {
    let n = layers.len().max(1);
    // PyTorch's VGG names every conv `features.N`: label the bars by N alone.
    let prefix = "features.";
    let short = layers.iter().all(|l| l.name.starts_with(prefix));
    let names: Vec<String> = layers
        .iter()
        .map(|l| {
            l.name
                .strip_prefix(prefix)
                .filter(|_| short)
                .unwrap_or(&l.name)
                .to_string()
        })
        .collect();
    let desc = if short { "layer (features.N)" } else { "layer" };
    svg(760, 320, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..1.05)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .label_style(FONT)
            .x_labels(2 * n + 1)
            .x_label_formatter(&|x| {
                let i = x.round();
                let named = (x - i).abs() < 1e-6 && i >= 0.0;
                named
                    .then(|| names.get(i as usize).cloned())
                    .flatten()
                    .unwrap_or_default()
            })
            .x_desc(desc)
            .y_desc("fraction of the base layer")
            .draw()?;
        let bar = |i: usize, k: usize, v: f64, c: RGBColor| {
            let x = i as f64 - 0.4 + 0.27 * k as f64;
            Rectangle::new([(x, 0.0), (x + 0.25, v)], c.filled())
        };
        for (i, l) in layers.iter().enumerate() {
            let mut bars = Vec::new();
            if let Some([r_in, r_out]) = l.ranks {
                bars.push(bar(i, 0, r_in as f64 / l.in_channels as f64, BLUE_));
                bars.push(bar(i, 1, r_out as f64 / l.out_channels as f64, GREEN_));
            }
            if let Some(r) = l.ratio {
                bars.push(bar(i, 2, 1.0 - r, ORANGE));
            }
            chart.draw_series(bars)?;
        }
        Ok(())
    })
}

/// Proxy accuracy against validation accuracy after re-training, one circle per
/// re-trained trial.
pub fn agreement(view: &StudyView) -> String {
    let pts = retrained(view);
    let (x0, x1) = span(pts.iter().map(|p| p.1), 0.2, 0.0, 1.0);
    let (y0, y1) = span(pts.iter().map(|p| p.2), 0.2, 0.0, 1.0);
    svg(420, 340, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        let pct = |v: &f64| format!("{:.0}%", 100.0 * v);
        chart
            .configure_mesh()
            .x_desc("proxy accuracy")
            .y_desc("after re-training")
            .x_label_formatter(&pct)
            .y_label_formatter(&pct)
            .label_style(FONT)
            .draw()?;
        chart.draw_series(pts.iter().map(|&(n, x, y)| {
            EmptyElement::at((x, y))
                + Circle::new((0, 0), 4, BROWN.filled())
                + Text::new(format!("#{n}"), (6, -12), FONT)
        }))?;
        Ok(())
    })
}

/// A trial's rung scores (validation value by step).
pub fn curve(reports: &[(i64, f64)]) -> String {
    let pts: Vec<(f64, f64)> = reports.iter().map(|&(s, v)| (s as f64, v)).collect();
    // Scores need not be accuracies (a KL-scored rung records -KL).
    let (x0, x1) = span(pts.iter().map(|p| p.0), 0.05, 0.0, f64::MAX);
    let (y0, y1) = span(pts.iter().map(|p| p.1), 0.1, f64::MIN, f64::MAX);
    let (x0, x1) = if x1 - x0 < 1.0 {
        (x0 - 1.0, x1 + 1.0)
    } else {
        (x0, x1)
    };
    svg(560, 300, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("validation score")
            .label_style(FONT)
            .draw()?;
        chart.draw_series(LineSeries::new(pts.clone(), BLUE_.stroke_width(2)))?;
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, BLUE_.filled())))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axis_labels_only_one_two_five() {
        let label = |v: f64| one_two_five(&v);
        assert_eq!(label(1.0), "1");
        assert_eq!(label(20.0), "20");
        assert_eq!(label(0.5), "0.5");
        assert_eq!(label(3.0), "");
        assert_eq!(label(9.0), "");
    }
}
