//! VGG configurations (CIFAR variant: 3x3 convs with padding 1, one Linear classifier),
//! named exactly as PyTorch indexes `features` and `classifier`.

use super::{Arch, ConvBody, ConvSpec, ConvUnit, LinearSpec, Unit};
use std::fmt;

/// One entry of a VGG channel plan: a 3x3 conv with this many filters, or a 2x2 max-pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VggCfgItem {
    Conv(usize),
    Pool,
}

/// The channel plan of torchvision's VGG variants (`A`=11, `B`=13, `D`=16, `E`=19).
pub fn vgg_cfg(depth: usize) -> Option<Vec<VggCfgItem>> {
    use VggCfgItem::{Conv as C, Pool as M};
    Some(match depth {
        11 => vec![
            C(64),
            M,
            C(128),
            M,
            C(256),
            C(256),
            M,
            C(512),
            C(512),
            M,
            C(512),
            C(512),
            M,
        ],
        13 => vec![
            C(64),
            C(64),
            M,
            C(128),
            C(128),
            M,
            C(256),
            C(256),
            M,
            C(512),
            C(512),
            M,
            C(512),
            C(512),
            M,
        ],
        16 => vec![
            C(64),
            C(64),
            M,
            C(128),
            C(128),
            M,
            C(256),
            C(256),
            C(256),
            M,
            C(512),
            C(512),
            C(512),
            M,
            C(512),
            C(512),
            C(512),
            M,
        ],
        19 => vec![
            C(64),
            C(64),
            M,
            C(128),
            C(128),
            M,
            C(256),
            C(256),
            C(256),
            C(256),
            M,
            C(512),
            C(512),
            C(512),
            C(512),
            M,
            C(512),
            C(512),
            C(512),
            C(512),
            M,
        ],
        _ => return None,
    })
}

/// A parsed `--arch` value: `vgg19_bn`, `vgg11`, `vgg16_bn@0.25` (width multiplier) or a
/// custom plan `cfg_bn:16,M,32,M` / `cfg:16,M` (M = max-pool).
#[derive(Debug, Clone, PartialEq)]
pub struct ArchSpec {
    pub text: String,
    pub cfg: Vec<VggCfgItem>,
    pub batch_norm: bool,
}

/// Max-pools a 32x32 input allows: each halves the feature map, and a sixth leaves 0x0.
pub const MAX_POOLS: usize = 5;

/// Error for an `--arch` value that is not understood, or whose plan does not fit the
/// 32x32 input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchSpecError {
    /// The value as given.
    pub text: String,
    /// Max-pools of a plan that has more than [`MAX_POOLS`]; None when the value is not
    /// understood at all.
    pub pools: Option<usize>,
}

impl fmt::Display for ArchSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pools {
            Some(n) => write!(
                f,
                "{:?} has {n} max-pools: a 32x32 input allows at most {MAX_POOLS} (each halves \
                 the feature map; {n} leave it 0x0)",
                self.text
            ),
            None if self.text.starts_with("resnet") => write!(
                f,
                "{:?}: residual networks work with every command but `search` (and the \
                 commands that read a study: `fidelity`, `score`); search takes VGG plans \
                 (vgg11|vgg13|vgg16|vgg19 with optional _bn and @WIDTH, or cfg:16,M,32 / \
                 cfg_bn:16,M,32)",
                self.text
            ),
            None => write!(
                f,
                "unknown architecture {:?}: expected vgg11|vgg13|vgg16|vgg19 with optional _bn \
                 and @WIDTH (e.g. vgg19_bn@0.25), or cfg:16,M,32 / cfg_bn:16,M,32; \
                 or resnet20|32|44|56|110, resnet18|34 (optionally @WIDTH), or FILE.onnx",
                self.text
            ),
        }
    }
}

impl std::error::Error for ArchSpecError {}

impl ArchSpec {
    pub fn parse(text: &str) -> Result<Self, ArchSpecError> {
        let err = || ArchSpecError {
            text: text.to_string(),
            pools: None,
        };
        let text = text.trim();
        if let Some((kind, plan)) = text.split_once(':') {
            let batch_norm = match kind {
                "cfg" => false,
                "cfg_bn" => true,
                _ => return Err(err()),
            };
            let cfg = plan
                .split(',')
                .map(|t| match t.trim() {
                    "M" | "m" => Ok(VggCfgItem::Pool),
                    n => n
                        .parse::<usize>()
                        .ok()
                        .filter(|&c| c > 0)
                        .map(VggCfgItem::Conv)
                        .ok_or_else(err),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if !cfg.iter().any(|c| matches!(c, VggCfgItem::Conv(_))) {
                return Err(err());
            }
            let pools = cfg.iter().filter(|c| **c == VggCfgItem::Pool).count();
            if pools > MAX_POOLS {
                return Err(ArchSpecError {
                    pools: Some(pools),
                    ..err()
                });
            }
            return Ok(Self {
                text: text.to_string(),
                cfg,
                batch_norm,
            });
        }
        let (base, width) = match text.split_once('@') {
            Some((b, w)) => (
                b,
                w.parse::<f64>()
                    .ok()
                    .filter(|w| *w > 0.0 && *w <= 16.0)
                    .ok_or_else(err)?,
            ),
            None => (text, 1.0),
        };
        let (depth, batch_norm) = match base.strip_suffix("_bn") {
            Some(d) => (d, true),
            None => (base, false),
        };
        let depth: usize = depth
            .strip_prefix("vgg")
            .and_then(|d| d.parse().ok())
            .ok_or_else(err)?;
        let cfg = vgg_cfg(depth)
            .ok_or_else(err)?
            .into_iter()
            .map(|c| match c {
                VggCfgItem::Conv(n) => {
                    VggCfgItem::Conv(((n as f64 * width).round() as usize).max(1))
                }
                VggCfgItem::Pool => VggCfgItem::Pool,
            })
            .collect();
        Ok(Self {
            text: text.to_string(),
            cfg,
            batch_norm,
        })
    }

    /// Builds the architecture for 3x32x32 inputs and `num_classes` outputs.
    pub fn build(&self, num_classes: usize) -> Arch {
        self.build_sized(num_classes, 32)
    }

    /// The smallest input side whose maps every max-pool can halve (2^pools).
    pub fn min_side(&self) -> usize {
        1 << self.cfg.iter().filter(|c| **c == VggCfgItem::Pool).count()
    }

    /// Builds the architecture for 3 x `side` x `side` inputs (at least [`min_side`];
    /// a pool floors odd sizes, as PyTorch's does) and `num_classes` outputs.
    ///
    /// [`min_side`]: ArchSpec::min_side
    pub fn build_sized(&self, num_classes: usize, side: usize) -> Arch {
        assert!(
            side >= self.min_side(),
            "input side {side} below {}",
            self.min_side()
        );
        let mut units = Vec::new();
        let mut index = 0;
        let mut channels = 3;
        let mut size = side;
        for item in &self.cfg {
            match *item {
                VggCfgItem::Pool => {
                    units.push(Unit::MaxPool {
                        name: format!("features.{index}"),
                    });
                    index += 1;
                    size /= 2;
                }
                VggCfgItem::Conv(out) => {
                    let conv = ConvSpec {
                        name: format!("features.{index}"),
                        in_channels: channels,
                        out_channels: out,
                        kernel: 3,
                        stride: 1,
                        padding: 1,
                        bias: true,
                    };
                    let bn = self.batch_norm.then(|| format!("features.{}", index + 1));
                    index += if self.batch_norm { 3 } else { 2 };
                    units.push(Unit::Conv(ConvUnit {
                        body: ConvBody::Plain(conv),
                        bn,
                    }));
                    channels = out;
                }
            }
        }
        units.push(Unit::Linear(LinearSpec {
            name: "classifier".to_string(),
            in_features: channels * size * size,
            out_features: num_classes,
        }));
        Arch {
            model: self.text.clone(),
            input: [3, side, side],
            units,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(ArchSpec::parse("vgg16_bn").unwrap().cfg.len(), 18);
        let narrow = ArchSpec::parse("vgg19_bn@0.125").unwrap();
        assert_eq!(narrow.cfg[0], VggCfgItem::Conv(8));
        let custom = ArchSpec::parse("cfg_bn:4,M,8").unwrap();
        assert_eq!(
            custom.cfg,
            vec![VggCfgItem::Conv(4), VggCfgItem::Pool, VggCfgItem::Conv(8)]
        );
        for bad in [
            "vgg20",
            "resnet18",
            "vgg19_bn@0",
            "cfg:",
            "cfg:4,x",
            "cfgx:4",
            "vgg19@abc",
        ] {
            assert!(ArchSpec::parse(bad).is_err(), "{bad} should be rejected");
        }
        // Five pools leave 1x1 maps; a sixth would leave 0x0.
        assert!(ArchSpec::parse("cfg_bn:8,M,8,M,8,M,8,M,8,M").is_ok());
        let e = ArchSpec::parse("cfg_bn:8,M,8,M,8,M,8,M,8,M,8,M")
            .unwrap_err()
            .to_string();
        assert!(e.contains("6 max-pools") && e.contains("at most 5"), "{e}");
    }
}
