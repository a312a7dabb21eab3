//! ResNet-18 / ResNet-50 with torchvision parameter names, exposing the last feature map.
//!
//! Names follow torchvision exactly (`conv1`, `bn1`, `layer{1..4}.{j}.{conv1,bn1,conv2,bn2,conv3,bn3,
//! downsample.0,downsample.1}`), so a backbone exports to `torchvision.models.resnet50()` by copy
//! (docs/method.md 9.4). The stride sits on the 3x3 conv (torchvision / "pytorch" style). No
//! avgpool, no fc.
//!
//! Two stems:
//! - [`Stem::ImageNet`]: 7x7/2 conv + 3x3/2 max-pool: total stride 32 (224 px -> 7x7 grid).
//! - [`Stem::Small`]: 3x3/1 conv, no max-pool: total stride **8**, so 32-96 px inputs still give a
//!   4x4-12x12 grid for the region swap (the CIFAR-style stem of the MoCo demo).
//!
//! `width` scales every stage (64 = torchvision); tiny CPU tests use 16.

use tch::Tensor;

use crate::bn::{BatchNorm2d, BnMode};
use crate::config::{Arch, InitScheme, ModelConfig, Stem};
use crate::init;
use crate::params::ParamStore;

/// What backbone to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResNetSpec {
    /// Depth.
    pub arch: Arch,
    /// Stem.
    pub stem: Stem,
    /// Base width (64 = torchvision).
    pub width: i64,
    /// Initialisation.
    pub init: InitScheme,
    /// Zero the last BN scale of every residual block (`zero_init_residual=True`, SimSiam).
    pub zero_init_residual: bool,
}

impl ResNetSpec {
    /// The backbone of a config's `[model]` section.
    pub fn of(model: &ModelConfig) -> Self {
        Self {
            arch: model.arch,
            stem: model.stem,
            width: model.width,
            init: model.init,
            zero_init_residual: model.zero_init_residual,
        }
    }

    /// Channels of the output feature map.
    ///
    /// # Panics
    /// For a transformer `arch` (a ResNetSpec is built for ResNets only).
    pub fn feature_dim(&self) -> i64 {
        8 * self.width * self.arch.expansion().expect("a ResNet arch")
    }

    /// Total stride `R` of the output feature map.
    pub fn stride(&self) -> i64 {
        self.stem.stride()
    }
}

#[derive(Debug)]
struct Conv {
    weight: Tensor,
    stride: i64,
    padding: i64,
}

impl Conv {
    #[allow(clippy::too_many_arguments)]
    fn new(
        s: &mut ParamStore,
        name: &str,
        init: InitScheme,
        cin: i64,
        cout: i64,
        k: i64,
        stride: i64,
    ) -> Self {
        let weight =
            s.add_param(format!("{name}.weight"), init::conv_weight(init, &[cout, cin, k, k]));
        Self { weight, stride, padding: k / 2 }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(&self.weight, None::<Tensor>, [self.stride], [self.padding], [1], 1)
    }
}

#[derive(Debug)]
struct Block {
    convs: Vec<(Conv, BatchNorm2d)>,
    downsample: Option<(Conv, BatchNorm2d)>,
}

impl Block {
    fn forward(&self, x: &Tensor, mode: BnMode) -> Tensor {
        let mut y = x.shallow_clone();
        let last = self.convs.len() - 1;
        for (i, (conv, bn)) in self.convs.iter().enumerate() {
            y = bn.forward(&conv.forward(&y), mode);
            if i < last {
                y = y.relu_();
            }
        }
        let identity = match &self.downsample {
            Some((conv, bn)) => bn.forward(&conv.forward(x), mode),
            None => x.shallow_clone(),
        };
        (y + identity).relu_()
    }
}

/// A ResNet backbone up to and including `layer4`.
#[derive(Debug)]
pub struct ResNet {
    spec: ResNetSpec,
    conv1: Conv,
    bn1: BatchNorm2d,
    blocks: Vec<Block>,
}

impl ResNet {
    /// Registers a backbone in `store` under `prefix` (`""` for bare torchvision names, or `"0"`).
    ///
    /// # Panics
    /// For a transformer `spec.arch` (those are [`super::Swin`] and [`super::Vit`]).
    pub fn new(store: &mut ParamStore, prefix: &str, spec: ResNetSpec) -> Self {
        let p = |n: &str| if prefix.is_empty() { n.to_string() } else { format!("{prefix}.{n}") };
        let init = spec.init;
        let w = spec.width;
        let conv1 = match spec.stem {
            Stem::ImageNet => Conv::new(store, &p("conv1"), init, 3, w, 7, 2),
            Stem::Small => Conv::new(store, &p("conv1"), init, 3, w, 3, 1),
        };
        let bn1 = BatchNorm2d::new(store, &p("bn1"), w);
        let (depths, bottleneck) = match spec.arch {
            Arch::ResNet18 => ([2, 2, 2, 2], false),
            Arch::ResNet50 => ([3, 4, 6, 3], true),
            other => panic!("{} is not a ResNet", other.as_str()),
        };
        let expansion = if bottleneck { 4 } else { 1 };
        let mut cin = w;
        let mut blocks = Vec::new();
        for (stage, &depth) in depths.iter().enumerate() {
            let planes = w << stage;
            for j in 0..depth {
                let stride = if stage > 0 && j == 0 { 2 } else { 1 };
                let name = p(&format!("layer{}.{j}", stage + 1));
                let mut convs = Vec::new();
                let mut add =
                    |store: &mut ParamStore, i: usize, ci: i64, co: i64, k: i64, s: i64| {
                        let conv = Conv::new(store, &format!("{name}.conv{i}"), init, ci, co, k, s);
                        let bn = BatchNorm2d::new(store, &format!("{name}.bn{i}"), co);
                        convs.push((conv, bn));
                    };
                if bottleneck {
                    add(store, 1, cin, planes, 1, 1);
                    add(store, 2, planes, planes, 3, stride);
                    add(store, 3, planes, planes * 4, 1, 1);
                } else {
                    add(store, 1, cin, planes, 3, stride);
                    add(store, 2, planes, planes, 3, 1);
                }
                let cout = planes * expansion;
                let downsample = (stride != 1 || cin != cout).then(|| {
                    let conv = Conv::new(
                        store,
                        &format!("{name}.downsample.0"),
                        init,
                        cin,
                        cout,
                        1,
                        stride,
                    );
                    (conv, BatchNorm2d::new(store, &format!("{name}.downsample.1"), cout))
                });
                if spec.zero_init_residual {
                    let (_, last_bn) = convs.last().expect("a block has convs");
                    if let Some(gamma) = last_bn.weight() {
                        tch::no_grad(|| {
                            let _ = gamma.shallow_clone().zero_();
                        });
                    }
                }
                blocks.push(Block { convs, downsample });
                cin = cout;
            }
        }
        Self { spec, conv1, bn1, blocks }
    }

    /// The spec it was built from.
    pub fn spec(&self) -> &ResNetSpec {
        &self.spec
    }

    /// The last feature map.
    ///
    /// # Shapes
    /// `x: [B, 3, H, W]` -> `[B, feature_dim, H / R, W / R]`, R = [`ResNetSpec::stride`].
    pub fn forward(&self, x: &Tensor, mode: BnMode) -> Tensor {
        let mut y = self.bn1.forward(&self.conv1.forward(x), mode).relu_();
        if self.spec.stem == Stem::ImageNet {
            y = y.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        }
        for block in &self.blocks {
            y = block.forward(&y, mode);
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SplitBnImpl;
    use tch::{Device, Kind};

    fn spec(arch: Arch, stem: Stem, width: i64) -> ResNetSpec {
        ResNetSpec { arch, stem, width, init: InitScheme::Torchvision, zero_init_residual: false }
    }

    #[test]
    fn resnet50_has_torchvision_names_and_shapes() {
        let mut store = ParamStore::new();
        let _net = ResNet::new(&mut store, "", spec(Arch::ResNet50, Stem::ImageNet, 64));
        // torchvision resnet50: 25,557,032 parameters, of which fc has 2048*1000 + 1000.
        assert_eq!(store.num_trainable(), 25_557_032 - 2_049_000);
        assert_eq!(store.get("layer4.2.conv3.weight").unwrap().size(), [2048, 512, 1, 1]);
        assert_eq!(store.get("layer2.0.downsample.0.weight").unwrap().size(), [512, 256, 1, 1]);
        assert!(store.get("layer3.5.bn2.running_var").is_some());
        assert_eq!(store.entries().len(), 320 - 2); // state_dict keys minus fc.weight, fc.bias
    }

    #[test]
    fn resnet18_small_stem_grid() {
        tch::manual_seed(0);
        let mut store = ParamStore::new();
        let s = spec(Arch::ResNet18, Stem::Small, 8);
        let net = ResNet::new(&mut store, "0", s);
        assert_eq!(store.num_trainable(), {
            let mut full = ParamStore::new();
            let _ = ResNet::new(&mut full, "", spec(Arch::ResNet18, Stem::ImageNet, 8));
            full.num_trainable() - 8 * 3 * (49 - 9)
        });
        let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
        let y = net.forward(&x, BnMode::train(2, SplitBnImpl::Chunked));
        assert_eq!(y.size(), [4, s.feature_dim(), 4, 4]);
        assert_eq!(s.stride(), 8);
        assert!(store.get("0.layer1.0.conv1.weight").is_some());
    }

    /// SimSiam's `zero_init_residual`: the last BN scale of every block is 0, the others 1.
    #[test]
    fn zero_init_residual_zeroes_last_bn_of_each_block() {
        let mut store = ParamStore::new();
        let s = ResNetSpec { zero_init_residual: true, ..spec(Arch::ResNet50, Stem::Small, 4) };
        let _ = ResNet::new(&mut store, "", s);
        let sum = |n: &str| store.get(n).unwrap().sum(Kind::Float).double_value(&[]);
        assert_eq!(sum("layer1.0.bn3.weight"), 0.0);
        assert_eq!(sum("layer4.2.bn3.weight"), 0.0);
        assert_eq!(sum("layer1.0.bn2.weight"), 4.0);
        assert_eq!(sum("layer1.0.downsample.1.weight"), 16.0);
        assert_eq!(sum("bn1.weight"), 4.0);
        let mut store = ParamStore::new();
        let s = ResNetSpec { zero_init_residual: true, ..spec(Arch::ResNet18, Stem::Small, 4) };
        let _ = ResNet::new(&mut store, "", s);
        assert_eq!(
            store.get("layer2.1.bn2.weight").unwrap().abs().sum(Kind::Float).double_value(&[]),
            0.0
        );
        assert!(store.get("layer2.1.bn1.weight").unwrap().requires_grad());
    }
}
