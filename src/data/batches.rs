//! Batches prepared on a background thread, so that decoding and augmentation overlap
//! with the model's work.

use super::ImageSet;
use super::augment::{augment, normalize};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

/// One batch: normalised images `[len, 3, side, side]` flattened, and labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<i64>,
    /// Height and width of each image.
    pub side: usize,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// How to walk a data set once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochPlan {
    pub batch_size: usize,
    /// Shuffle and augment with this seed (training); `None` = in order, no augmentation.
    pub seed: Option<u64>,
    /// Stop after this many images (a subset for proxy runs); `None` = all.
    pub limit: Option<usize>,
}

/// Builds the batches of one pass over `set` in order `plan` says, synchronously.
pub fn batch_at(set: &ImageSet, order: &[usize], rng: Option<&mut StdRng>) -> Batch {
    let bytes = set.image_bytes();
    let mut images = vec![0.0f32; order.len() * bytes];
    let mut rng = rng;
    for (slot, &i) in order.iter().enumerate() {
        let out = &mut images[slot * bytes..(slot + 1) * bytes];
        match rng.as_deref_mut() {
            Some(r) => augment(set.image(i), &set.norm, r, out),
            None => normalize(set.image(i), &set.norm, out),
        }
    }
    Batch {
        images,
        labels: order.iter().map(|&i| i64::from(set.labels[i])).collect(),
        side: set.side,
    }
}

/// The image order of one epoch.
pub fn epoch_order(len: usize, plan: &EpochPlan) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if let Some(seed) = plan.seed {
        order.shuffle(&mut StdRng::seed_from_u64(seed));
    }
    order.truncate(plan.limit.unwrap_or(len).min(len));
    order
}

/// Streams the batches of one epoch from a background thread (a few batches ahead).
pub fn stream(set: Arc<ImageSet>, plan: EpochPlan) -> Receiver<Batch> {
    let (tx, rx) = sync_channel(4);
    std::thread::spawn(move || {
        let order = epoch_order(set.len(), &plan);
        // A separate stream for augmentation, so the order does not depend on it.
        let mut rng = plan
            .seed
            .map(|s| StdRng::seed_from_u64(s ^ 0x9e37_79b9_7f4a_7c15));
        for chunk in order.chunks(plan.batch_size.max(1)) {
            if tx.send(batch_at(&set, chunk, rng.as_mut())).is_err() {
                return; // the consumer stopped early
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::IMAGE_BYTES;

    fn tiny_set(n: usize) -> ImageSet {
        ImageSet {
            pixels: (0..n)
                .flat_map(|i| std::iter::repeat_n(i as u8, IMAGE_BYTES))
                .collect(),
            labels: (0..n as u32).collect(),
            ..ImageSet::default()
        }
    }

    #[test]
    fn stream_covers_the_set_in_batches_and_is_seeded() {
        let set = Arc::new(tiny_set(10));
        let plan = EpochPlan {
            batch_size: 4,
            seed: Some(1),
            limit: None,
        };
        let a: Vec<Batch> = stream(set.clone(), plan).iter().collect();
        let b: Vec<Batch> = stream(set.clone(), plan).iter().collect();
        assert_eq!(a, b);
        assert_eq!(a.iter().map(Batch::len).collect::<Vec<_>>(), vec![4, 4, 2]);
        let mut labels: Vec<i64> = a.iter().flat_map(|x| x.labels.clone()).collect();
        labels.sort_unstable();
        assert_eq!(labels, (0..10).collect::<Vec<_>>());
        let eval = EpochPlan {
            batch_size: 3,
            seed: None,
            limit: Some(5),
        };
        let e: Vec<Batch> = stream(set, eval).iter().collect();
        assert_eq!(
            e.iter().flat_map(|x| x.labels.clone()).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        assert_eq!(e[0].images.len(), 3 * IMAGE_BYTES);
    }
}
