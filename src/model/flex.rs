//! Access to the flex CPU backend's tensors for our kernels: their f32 values, and new
//! tensors from computed values.

use burn::backend::Flex;
use burn::backend::tensor::FloatTensor;
use burn::tensor::{Shape, TensorData};
use std::borrow::Cow;

/// A tensor of the flex backend.
pub type Flat = FloatTensor<Flex>;

/// The tensor's f32 values in row-major order (copied only if it is a strided view).
pub fn values(t: &Flat) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(
            t.to_contiguous()
                .as_slice::<f32>()
                .expect("an f32 tensor")
                .to_vec(),
        ),
    }
}

/// A new contiguous tensor of `shape` holding `data`.
pub fn tensor(data: Vec<f32>, shape: impl Into<Shape>) -> Flat {
    Flat::from_data(TensorData::new(data, shape.into()))
}
