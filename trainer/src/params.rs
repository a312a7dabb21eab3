//! An ordered store of named tensors: the trainable parameters and the buffers (BN running stats)
//! of one network, under torchvision / OpenSelfSup names.
//!
//! tch's `VarStore` keeps its variables in a hash map; the trainer needs a fixed order (the EMA pairs
//! query and key tensors by position, the optimizer keeps one buffer per parameter, checkpoints list
//! tensors in a stable order) and explicit control of initialisation, so it keeps its own.

use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// One named tensor.
#[derive(Debug)]
pub struct Named {
    /// Full dotted name (`layer1.0.conv1.weight`).
    pub name: String,
    /// The tensor (a leaf; `requires_grad` when trainable and the store is not frozen).
    pub tensor: Tensor,
    /// Whether it is a parameter (updated by SGD / EMA) rather than a buffer.
    pub trainable: bool,
}

/// The named tensors of one network, in creation order.
#[derive(Debug, Default)]
pub struct ParamStore {
    entries: Vec<Named>,
    index: HashMap<String, usize>,
    frozen: bool,
}

impl ParamStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a trainable parameter; returns a shallow handle to it.
    ///
    /// # Panics
    /// If the name exists already (a model-construction bug).
    pub fn add_param(&mut self, name: String, value: Tensor) -> Tensor {
        let value = value.set_requires_grad(!self.frozen);
        self.push(name, value, true)
    }

    /// Adds a buffer (no gradient, not averaged by the EMA, saved in checkpoints).
    ///
    /// # Panics
    /// If the name exists already.
    pub fn add_buffer(&mut self, name: String, value: Tensor) -> Tensor {
        self.push(name, value.set_requires_grad(false), false)
    }

    fn push(&mut self, name: String, tensor: Tensor, trainable: bool) -> Tensor {
        assert!(!self.index.contains_key(&name), "duplicate tensor name {name}");
        let handle = tensor.shallow_clone();
        self.index.insert(name.clone(), self.entries.len());
        self.entries.push(Named { name, tensor, trainable });
        handle
    }

    /// All entries, in creation order.
    pub fn entries(&self) -> &[Named] {
        &self.entries
    }

    /// The trainable parameters, in creation order.
    pub fn params(&self) -> impl Iterator<Item = &Named> {
        self.entries.iter().filter(|e| e.trainable)
    }

    /// The buffers, in creation order.
    pub fn buffers(&self) -> impl Iterator<Item = &Named> {
        self.entries.iter().filter(|e| !e.trainable)
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.index.get(name).map(|&i| &self.entries[i].tensor)
    }

    /// Number of trainable scalars.
    pub fn num_trainable(&self) -> i64 {
        self.params().map(|e| e.tensor.numel() as i64).sum()
    }

    /// Stops gradients for every parameter (the momentum encoder).
    pub fn freeze(&mut self) {
        self.frozen = true;
        for e in &mut self.entries {
            e.tensor = e.tensor.set_requires_grad(false);
        }
    }

    /// Copies every tensor of `src` (same names, shapes) into this store, in place.
    ///
    /// # Errors
    /// A name or shape missing or different in `src`.
    pub fn copy_from(&self, src: &ParamStore) -> Result<()> {
        tch::no_grad(|| {
            for e in &self.entries {
                let s = src.get(&e.name).ok_or_else(|| {
                    Error::Input(format!("copy_from: `{}` missing in source", e.name))
                })?;
                e.tensor.shallow_clone().f_copy_(s)?;
            }
            Ok(())
        })
    }

    /// Converts every 4-d tensor (conv weights) to channels_last, keeping identities (`set_data`),
    /// so handles held by modules see the new layout.
    ///
    /// # Errors
    /// A libtorch failure.
    pub fn to_channels_last(&self) -> Result<()> {
        for e in self.entries.iter().filter(|e| e.tensor.dim() == 4) {
            let cl = crate::shim::to_channels_last(&e.tensor.detach())?;
            let mut t = e.tensor.shallow_clone();
            t.set_data(&cl);
        }
        Ok(())
    }

    /// Moves every tensor to `device` in place (identities kept).
    pub fn to_device(&self, device: Device) {
        for e in &self.entries {
            let moved = e.tensor.detach().to_device(device);
            let mut t = e.tensor.shallow_clone();
            t.set_data(&moved);
        }
    }

    /// The tensors as contiguous CPU copies with `prefix` prepended to each name, for a safetensors
    /// file.
    pub fn export(&self, prefix: &str) -> Vec<(String, Tensor)> {
        self.entries
            .iter()
            .map(|e| {
                (
                    format!("{prefix}{}", e.name),
                    e.tensor.detach().to_device(Device::Cpu).contiguous(),
                )
            })
            .collect()
    }

    /// Loads tensors named `prefix + name` from `tensors` (all of them must be present).
    ///
    /// # Errors
    /// A missing name, or a shape or kind mismatch.
    pub fn load(&self, tensors: &HashMap<String, Tensor>, prefix: &str) -> Result<()> {
        tch::no_grad(|| {
            for e in &self.entries {
                let key = format!("{prefix}{}", e.name);
                let src = tensors
                    .get(&key)
                    .ok_or_else(|| Error::Input(format!("tensor `{key}` missing")))?;
                if src.size() != e.tensor.size() || src.kind() != e.tensor.kind() {
                    return Err(Error::Input(format!(
                        "tensor `{key}`: stored {:?} {:?}, model {:?} {:?}",
                        src.size(),
                        src.kind(),
                        e.tensor.size(),
                        e.tensor.kind()
                    )));
                }
                e.tensor.shallow_clone().f_copy_(src)?;
            }
            Ok(())
        })
    }
}

/// Creates an uninitialised float tensor of `shape` on the CPU, to be filled by an init function.
pub(crate) fn empty(shape: &[i64]) -> Tensor {
    Tensor::empty(shape, (Kind::Float, Device::Cpu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_names_and_freeze() {
        let mut s = ParamStore::new();
        let _ = s.add_param("a.weight".into(), Tensor::ones([2], (Kind::Float, Device::Cpu)));
        let _ =
            s.add_buffer("a.running_mean".into(), Tensor::zeros([2], (Kind::Float, Device::Cpu)));
        let _ = s.add_param("b.weight".into(), Tensor::ones([3], (Kind::Float, Device::Cpu)));
        let names: Vec<_> = s.params().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a.weight", "b.weight"]);
        assert!(s.get("a.weight").unwrap().requires_grad());
        assert_eq!(s.num_trainable(), 5);
        s.freeze();
        assert!(!s.get("a.weight").unwrap().requires_grad());
    }
}
