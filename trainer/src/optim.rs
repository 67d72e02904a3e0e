//! AdamW, the learning-rate schedule, gradient clipping and accumulation.
//!
//! Variables are always visited in name order (a `BTreeMap`), never in the hash order of a
//! candle `VarMap` (`shared/DESIGN.md`).
//!
//! * **AdamW** follows PyTorch 1.13 `torch.optim.adamw._single_tensor_adamw` step by step:
//!   `p ← p·(1 − lr·wd)`; `m ← β₁m + (1−β₁)g`; `v ← β₂v + (1−β₂)g²`;
//!   `p ← p − (lr / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε)`, with β₁ = 0.9, β₂ = 0.999, ε = 1e-8.
//! * **Schedule**: `transformers`' `get_cosine_schedule_with_warmup` with a floor: for the
//!   0-based step `s` of `total`, `lr·s/warmup` while `s < warmup` (so a warm-up starts at 0,
//!   as in `transformers`), then `lr·(m + (1−m)·½(1 + cos(π·p)))` with
//!   `p = (s − warmup) / max(1, total − warmup)` and `m = min_lr_ratio`.
//! * **Clipping**: the global norm is `√Σ g²` over every gradient, summed on the host in `f64`
//!   in name order (so it cannot depend on a thread count); when it exceeds `max_norm`, every
//!   gradient is multiplied by `max_norm / (norm + 1e-6)` (`torch.nn.utils.clip_grad_norm_`).
//!   The reported norm is the one before clipping.
//! * **Accumulation**: gradients of the micro-batches of one step are summed; the loss of each
//!   micro-batch is its summed token loss divided by the loss-token count of the whole step, so
//!   `grad_accum = k` with `batch_size = n` computes the same mean as one batch of `k·n`.

use std::collections::BTreeMap;

use candle_core::{Tensor, Var};

use crate::error::TrainerError;

/// β₁.
pub const BETA1: f64 = 0.9;
/// β₂.
pub const BETA2: f64 = 0.999;
/// ε.
pub const EPS: f64 = 1e-8;

struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    step: u32,
}

/// AdamW over named variables; see the module doc.
pub struct AdamW {
    slots: Vec<Slot>,
    weight_decay: f64,
}

impl std::fmt::Debug for AdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdamW")
            .field(
                "params",
                &self.slots.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .field("weight_decay", &self.weight_decay)
            .finish()
    }
}

impl AdamW {
    /// An optimizer for `params` (visited in name order) with zeroed moments.
    pub fn new(params: &BTreeMap<String, Var>, weight_decay: f64) -> Result<AdamW, TrainerError> {
        let mut slots = Vec::with_capacity(params.len());
        for (name, var) in params {
            slots.push(Slot {
                name: name.clone(),
                var: var.clone(),
                m: var.as_tensor().zeros_like()?,
                v: var.as_tensor().zeros_like()?,
                step: 0,
            });
        }
        Ok(AdamW {
            slots,
            weight_decay,
        })
    }

    /// One update with learning rate `lr`. A variable without a gradient is skipped, as
    /// PyTorch skips parameters whose `.grad` is `None`.
    pub fn step(&mut self, grads: &BTreeMap<String, Tensor>, lr: f64) -> Result<(), TrainerError> {
        for slot in &mut self.slots {
            let Some(g) = grads.get(&slot.name) else {
                continue;
            };
            slot.step += 1;
            let t = slot.step as i32;
            let p = slot.var.as_detached_tensor();
            let p = if self.weight_decay != 0.0 {
                p.affine(1.0 - lr * self.weight_decay, 0.0)?
            } else {
                p
            };
            slot.m = (slot.m.affine(BETA1, 0.0)? + g.affine(1.0 - BETA1, 0.0)?)?;
            slot.v = (slot.v.affine(BETA2, 0.0)? + g.sqr()?.affine(1.0 - BETA2, 0.0)?)?;
            let bc1 = 1.0 - BETA1.powi(t);
            let bc2_sqrt = (1.0 - BETA2.powi(t)).sqrt();
            let denom = slot.v.sqrt()?.affine(1.0 / bc2_sqrt, EPS)?;
            let update = (&slot.m / denom)?.affine(lr / bc1, 0.0)?;
            slot.var.set(&(p - update)?)?;
        }
        Ok(())
    }
}

/// The learning rate of 0-based step `step` of `total` (see the module doc).
pub fn lr_at(step: usize, total: usize, warmup: usize, peak: f64, min_lr_ratio: f64) -> f64 {
    if step < warmup {
        return peak * step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos());
    peak * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine)
}

/// The global gradient norm before clipping; clips `grads` in place when `max_norm > 0`.
pub fn clip_grad_norm(
    grads: &mut BTreeMap<String, Tensor>,
    max_norm: f64,
) -> Result<f64, TrainerError> {
    let mut sum = 0f64;
    for g in grads.values() {
        for v in g.flatten_all()?.to_vec1::<f32>()? {
            sum += f64::from(v) * f64::from(v);
        }
    }
    let norm = sum.sqrt();
    if max_norm > 0.0 && norm.is_finite() {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for g in grads.values_mut() {
                *g = g.affine(coef, 0.0)?;
            }
        }
    }
    Ok(norm)
}

/// Adds `g` to the accumulated gradient of `name`.
pub fn accumulate(
    acc: &mut BTreeMap<String, Tensor>,
    name: &str,
    g: &Tensor,
) -> Result<(), TrainerError> {
    let sum = match acc.remove(name) {
        Some(prev) => (prev + g)?,
        None => g.clone(),
    };
    acc.insert(name.to_string(), sum);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// PyTorch 1.13: `p = torch.tensor([1.0, -2.0], requires_grad=True);
    /// opt = torch.optim.AdamW([p], lr=0.1, weight_decay=0.01)`; gradient `[0.5, -0.25]`
    /// twice. Bias correction makes the first step `p − lr·sign(g)` (up to ε) after decay.
    #[test]
    fn adamw_first_step_moves_by_lr() {
        let var = Var::from_slice(&[1.0f32, -2.0], 2, &Device::Cpu).expect("var");
        let params = BTreeMap::from([("p".to_string(), var.clone())]);
        let mut opt = AdamW::new(&params, 0.01).expect("opt");
        let g = Tensor::from_slice(&[0.5f32, -0.25], 2, &Device::Cpu).expect("g");
        let grads = BTreeMap::from([("p".to_string(), g)]);
        opt.step(&grads, 0.1).expect("step");
        let p = var.as_tensor().to_vec1::<f32>().expect("p");
        // 1·(1 − 0.001) − 0.1 = 0.899; −2·0.999 + 0.1 = −1.898.
        assert!((p[0] - 0.899).abs() < 1e-6, "{p:?}");
        assert!((p[1] + 1.898).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn schedule_shape() {
        assert_eq!(lr_at(0, 10, 2, 1.0, 0.0), 0.0);
        assert_eq!(lr_at(1, 10, 2, 1.0, 0.0), 0.5);
        assert_eq!(lr_at(2, 10, 2, 1.0, 0.0), 1.0);
        assert!((lr_at(6, 10, 2, 1.0, 0.0) - 0.5).abs() < 1e-12);
        assert!((lr_at(10, 10, 2, 1.0, 0.1) - 0.1).abs() < 1e-12);
        assert_eq!(lr_at(0, 10, 0, 2e-4, 0.0), 2e-4);
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let g = Tensor::from_slice(&[3.0f32, 4.0], 2, &Device::Cpu).expect("g");
        let mut grads = BTreeMap::from([("p".to_string(), g)]);
        let norm = clip_grad_norm(&mut grads, 1.0).expect("clip");
        assert_eq!(norm, 5.0);
        let v = grads["p"].to_vec1::<f32>().expect("v");
        assert!(
            (v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6,
            "{v:?}"
        );
    }
}
