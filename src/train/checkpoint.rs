//! Training checkpoints: a directory with the last and best weights (safetensors), the
//! optimizer state and `state.json` (epoch, step, scheduler), written so that a crash at
//! any instant leaves the previous complete checkpoint readable: every file is written to
//! a temporary name and renamed, `state.json` last.

use super::metrics::EvalResult;
use super::plateau::{Plateau, PlateauConfig};
use crate::weights::Weights;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const LAST_FILE: &str = "last.safetensors";
pub const BEST_FILE: &str = "best.safetensors";
pub const OPTIM_FILE: &str = "optim.bpk";
pub const STATE_FILE: &str = "state.json";

/// Counters and scheduler state at an epoch end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps completed.
    pub step: usize,
    pub plateau: Plateau,
    pub best_val: Option<EvalResult>,
    /// Seed of the data order and augmentation; a resumed run keeps it.
    pub seed: u64,
}

impl TrainState {
    pub fn new(lr: f64, plateau: PlateauConfig, seed: u64) -> Self {
        Self {
            epoch: 0,
            step: 0,
            plateau: Plateau::new(lr, plateau),
            best_val: None,
            seed,
        }
    }
}

pub struct Checkpoint {
    pub weights: Weights,
    pub best_weights: Option<Weights>,
    pub state: TrainState,
}

fn fail(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Failure(format!("{}: {e}", path.display()))
}

impl Checkpoint {
    pub fn save(
        dir: &Path,
        weights: &Weights,
        best: Option<&Weights>,
        state: &TrainState,
        optim: &burn::optim::ModuleOptimizer,
    ) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
        weights
            .save_safetensors(&dir.join(LAST_FILE))
            .map_err(|e| Error::Failure(e.to_string()))?;
        if let Some(b) = best {
            b.save_safetensors(&dir.join(BEST_FILE))
                .map_err(|e| Error::Failure(e.to_string()))?;
        }
        let tmp = dir.join("optim.tmp.bpk");
        optim.save(&tmp).map_err(|e| fail(&tmp, format!("{e:?}")))?;
        std::fs::rename(&tmp, dir.join(OPTIM_FILE)).map_err(|e| fail(dir, e))?;
        let tmp = dir.join("state.json.tmp");
        let json = serde_json::to_string_pretty(state).expect("state serializes");
        std::fs::write(&tmp, json).map_err(|e| fail(&tmp, e))?;
        std::fs::rename(&tmp, dir.join(STATE_FILE)).map_err(|e| fail(dir, e))
    }

    /// The checkpoint in `dir`, its weights checked against `expected` (keys and shapes,
    /// as [`Weights::matched_to_shapes`]).
    pub fn load(dir: &Path, expected: Vec<(String, Vec<usize>)>) -> Result<Self> {
        let state_path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&state_path)
            .map_err(|e| Error::BadInput(format!("{}: cannot read: {e}", state_path.display())))?;
        let state: TrainState = serde_json::from_str(&text)
            .map_err(|e| Error::BadInput(format!("{}: {e}", state_path.display())))?;
        let load = |name: &str| -> Result<Weights> {
            let p = dir.join(name);
            Ok(Weights::load(&p)?.matched_to_shapes(expected.clone(), &p.display().to_string())?)
        };
        let best_weights = if dir.join(BEST_FILE).exists() {
            Some(load(BEST_FILE)?)
        } else {
            None
        };
        Ok(Self {
            weights: load(LAST_FILE)?,
            best_weights,
            state,
        })
    }
}
