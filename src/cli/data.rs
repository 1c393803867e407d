//! `rankprune data stats`: what a data folder holds, as the model will see it.

use super::train::DataArgs;
use clap::Args;
use rankprune::data::folder::{self, cache::Header};
use rankprune::data::{DatasetKind, Split};
use rankprune::{Error, Result};
use std::collections::BTreeMap;

#[derive(Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Side of the square images the model takes (folder images are cropped to it)
    #[arg(long, default_value_t = 32)]
    pub input_size: usize,
    /// Print one JSON object instead of a table
    #[arg(long)]
    pub json: bool,
}

/// One split's counts and statistics.
#[derive(serde::Serialize)]
struct SplitStats {
    images: usize,
    per_class: BTreeMap<String, usize>,
    /// Original image sizes (`WxH`) and how many files have each.
    sizes: BTreeMap<String, usize>,
    mean: [f64; 3],
    std: [f64; 3],
}

fn of_header(h: &Header) -> SplitStats {
    let mut per_class: BTreeMap<String, usize> = h.classes.iter().map(|c| (c.clone(), 0)).collect();
    for &l in &h.labels {
        *per_class
            .get_mut(&h.classes[l as usize])
            .expect("a known class") += 1;
    }
    SplitStats {
        images: h.labels.len(),
        per_class,
        sizes: h.sizes.clone(),
        mean: h.mean,
        std: h.std,
    }
}

fn of_set(set: &rankprune::data::ImageSet) -> SplitStats {
    let mut per_class = BTreeMap::new();
    for &l in &set.labels {
        *per_class.entry(l.to_string()).or_insert(0) += 1;
    }
    let (mean, std) = folder::channel_stats(&set.pixels, set.side);
    SplitStats {
        images: set.len(),
        per_class,
        sizes: BTreeMap::from([(format!("{0}x{0}", set.side), set.len())]),
        mean,
        std,
    }
}

pub fn run_stats(args: StatsArgs) -> Result<()> {
    super::at_least_one("--input-size", args.input_size)?;
    let source = args
        .data
        .folder
        .source(args.data.dataset, &args.data.data, args.input_size)?;
    let mut splits = BTreeMap::new();
    for split in [Split::Train, Split::Test] {
        let stats = if source.kind == DatasetKind::Folder {
            let (h, _) = folder::prepared(&source.dir, split, &source.folder, usize::MAX, false)
                .map_err(|e| Error::BadInput(e.to_string()))?;
            of_header(&h)
        } else {
            of_set(
                &source
                    .load(split, 256)
                    .map_err(|e| Error::BadInput(e.to_string()))?,
            )
        };
        splits.insert(
            if split == Split::Train {
                "train"
            } else {
                "test"
            },
            stats,
        );
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&splits).expect("stats serialize")
        );
        return Ok(());
    }
    for (name, s) in &splits {
        println!("{name}: {} images, {} classes", s.images, s.per_class.len());
        let fmt3 = |v: [f64; 3]| format!("{:.4}, {:.4}, {:.4}", v[0], v[1], v[2]);
        println!("  mean (R, G, B) {}   std {}", fmt3(s.mean), fmt3(s.std));
        let sizes: Vec<String> = s.sizes.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        println!("  sizes: {}", sizes.join(", "));
        let width = s
            .per_class
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(5)
            .max(5);
        println!("  {:<width$}  images", "class");
        for (class, n) in &s.per_class {
            println!("  {class:<width$}  {n}");
        }
    }
    Ok(())
}
