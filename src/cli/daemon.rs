//! `rankprune serve`, `rankprune submit` and `rankprune stop`: the daemon and the studies
//! handed to it.

use clap::Args;
use rankprune::Result;
use rankprune::search::daemon::{request_stop, run_serve, submit};
use std::path::PathBuf;

#[derive(Args)]
pub struct ServeArgs {
    /// Trial store: a SQLite file or a postgres:// URL
    #[arg(long)]
    pub db: PathBuf,
    /// Seconds of the daemon's lease and its studies' controller leases: a standby daemon
    /// takes over within about this long after the active one dies
    #[arg(long, default_value_t = rankprune::search::lease::DEFAULT_LEASE_S)]
    pub lease: f64,
    /// Print one JSON array of the studies that ended, at exit
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct SubmitArgs {
    /// Budget file (TOML); its folder must be reachable from the daemon and the workers
    pub budget: PathBuf,
    /// Trial store of the daemon (replaces the budget's study.db)
    #[arg(long)]
    pub db: PathBuf,
    /// Print one JSON object instead of a line
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct StopArgs {
    /// The study's name
    pub study: String,
    /// Trial store: a SQLite file or a postgres:// URL
    #[arg(long)]
    pub db: PathBuf,
}

pub fn run_serve_cmd(args: ServeArgs) -> Result<()> {
    if !(args.lease.is_finite() && args.lease >= 0.3) {
        return Err(rankprune::Error::BadInput(format!(
            "--lease {}: must be at least 0.3 seconds",
            args.lease
        )));
    }
    let outcomes = run_serve(&args.db, args.lease)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&outcomes).expect("outcomes serialize")
        );
    } else {
        for o in &outcomes {
            println!(
                "study {}: stopped ({:?}) after {:.0} s; best trial {}",
                o.study,
                o.stopped,
                o.seconds,
                o.best.as_ref().map_or("-".into(), |t| t.number.to_string())
            );
        }
    }
    Ok(())
}

pub fn run_submit(args: SubmitArgs) -> Result<()> {
    let s = submit(&args.budget, &args.db)?;
    if args.json {
        println!("{}", serde_json::to_string(&s).expect("serializes"));
    } else {
        println!(
            "study {} (id {}) {} to {}",
            s.study,
            s.id,
            if s.resumed {
                "resubmitted"
            } else {
                "submitted"
            },
            s.db.display()
        );
    }
    Ok(())
}

pub fn run_stop(args: StopArgs) -> Result<()> {
    let state = request_stop(&args.db, &args.study)?;
    println!(
        "study {}: stop requested (now {}; running trials finish, then its final stage)",
        args.study,
        state.as_str()
    );
    Ok(())
}
