//! Averaging of a module's weights over the last epochs of training
//! ([`TrainConfig::weight_average_epochs`](crate::TrainConfig::weight_average_epochs)).
//!
//! The weights at the end of each of the last N epochs are summed per parameter and the trained
//! module gets their mean — stochastic weight averaging (Izmailov et al. 2018) at a constant
//! learning rate. Buffers that burn visits as parameters (BatchNorm's running mean and
//! variance) are averaged the same way. The sums are kept on the host in `f64`.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Tensor, TensorData};

/// Running sums of a module's float parameters over snapshots.
#[derive(Debug, Default)]
pub struct WeightAverage {
    sums: HashMap<ParamId, Vec<f64>>,
    snapshots: usize,
}

impl WeightAverage {
    /// An empty average.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of snapshots added.
    pub fn snapshots(&self) -> usize {
        self.snapshots
    }

    /// Adds the module's current weights.
    pub fn add<M: Module>(&mut self, module: &M) {
        let mut visitor = Accumulate {
            sums: &mut self.sums,
        };
        module.visit(&mut visitor);
        self.snapshots += 1;
    }

    /// The module with every float parameter replaced by its mean over the snapshots;
    /// unchanged when there is none. A parameter the snapshots did not see keeps its value.
    /// The module must be the one the snapshots were taken of (same parameters and shapes).
    pub fn apply<M: Module>(&self, module: M) -> M {
        if self.snapshots == 0 {
            return module;
        }
        let mut mapper = Replace {
            sums: &self.sums,
            n: self.snapshots as f64,
        };
        module.map(&mut mapper)
    }
}

struct Accumulate<'a> {
    sums: &'a mut HashMap<ParamId, Vec<f64>>,
}

impl ModuleVisitor for Accumulate<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let data = param.val().into_data();
        let sum = self
            .sums
            .entry(param.id)
            .or_insert_with(|| vec![0.0; data.num_elements()]);
        sum.iter_mut()
            .zip(data.iter::<f64>())
            .for_each(|(s, v)| *s += v);
    }
}

struct Replace<'a> {
    sums: &'a HashMap<ParamId, Vec<f64>>,
    n: f64,
}

impl ModuleMapper for Replace<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(sum) = self.sums.get(&param.id) else {
            return param;
        };
        let n = self.n;
        param.map(|t| {
            let shape = t.shape();
            // The sums were made from this parameter's own values.
            debug_assert_eq!(shape.num_elements(), sum.len());
            let device = t.device();
            let require_grad = t.is_require_grad();
            let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
            let out = Tensor::<D>::from_data(TensorData::new(mean, shape), &device);
            if require_grad {
                out.require_grad()
            } else {
                out
            }
        })
    }
}
