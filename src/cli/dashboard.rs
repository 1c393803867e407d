//! `rankprune dashboard` (the web view of a store) and `rankprune plot` (its
//! accuracy-vs-FLOPs chart as an SVG file, for reports).

use clap::Args;
use rankprune::dashboard::{self, charts::Mark};
use rankprune::outpath::{check_output, store_inputs, write_output};
use rankprune::{Error, Result};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Args)]
pub struct DashboardArgs {
    /// Trial store to show (a SQLite file or a postgres:// URL); opened read-only, a search
    /// may be writing it
    #[arg(long)]
    pub db: PathBuf,
    /// Address to listen on (port 0 picks a free port); other hosts can reach it only if
    /// this is not a loopback address
    #[arg(long, default_value = "127.0.0.1:8765")]
    pub listen: SocketAddr,
}

#[derive(Args)]
pub struct PlotArgs {
    #[command(flatten)]
    pub at: super::search::StudyAt,
    /// Extra labelled points: a JSON array of {"name", "flops", "acc"} (e.g. a pipeline's
    /// compressed models, by test accuracy)
    #[arg(long)]
    pub marks: Option<PathBuf>,
    /// Output SVG file
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run_dashboard(args: DashboardArgs) -> Result<()> {
    dashboard::serve(&args.db, args.listen, |addr| {
        println!(
            "dashboard of {} on http://{addr}/ (read-only; Ctrl-C stops it)",
            args.db.display()
        );
        let _ = std::io::stdout().flush();
    })
}

pub fn run_plot(args: PlotArgs) -> Result<()> {
    let mut inputs = store_inputs("--db", &args.at.db);
    inputs.extend(
        args.marks
            .iter()
            .map(|m| ("--marks".to_string(), m.clone())),
    );
    check_output(&args.out, "--out", &inputs)?;
    let (store, row) = args.at.open(true)?;
    let marks: Vec<Mark> = match &args.marks {
        None => Vec::new(),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| Error::BadInput(format!("{}: {e}", p.display())))?;
            serde_json::from_str(&text).map_err(|e| {
                Error::BadInput(format!(
                    "{}: line {}, column {}: {e} (expected [{{\"name\", \"flops\", \"acc\"}}, ...])",
                    p.display(),
                    e.line(),
                    e.column()
                ))
            })?
        }
    };
    let view = dashboard::view::study(&store, row)?;
    write_output(
        &args.out,
        dashboard::charts::scatter(&view, &marks).as_bytes(),
    )?;
    println!("wrote {}", args.out.display());
    Ok(())
}
