//! `x · Wᵀ` for a weight that training never updates, with a backward pass that computes only
//! the input's gradient.
//!
//! candle's matmul backward always computes both operands' gradients. For a frozen weight that
//! is a second GEMM per projection (`xᵀ · dy`, as large as the input's gradient) plus a
//! weight-sized tensor allocated and summed into, every step, for a gradient nobody reads. With
//! LoRA on the top 8 blocks that is 56 such products per pair (the secure side's backward; the
//! vulnerable side is detached). [`frozen_matmul`]
//! gives the same forward values and the same input gradient without them.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

struct FrozenMatmul {
    /// (out, in), f32.
    w: Tensor,
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (out, inn) = self.w.dims2()?;
        let Some((a, b)) = l.contiguous_offsets() else { candle_core::bail!("frozen matmul: the input is not contiguous") };
        let x = &s.as_slice::<f32>()?[a..b];
        let dims = l.shape().dims();
        if dims.last() != Some(&inn) {
            candle_core::bail!("frozen matmul: input {:?} against a weight of {out} x {inn}", dims);
        }
        let m = x.len() / inn;
        let y = Tensor::from_slice(x, (m, inn), self.w.device())?.matmul(&self.w.t()?)?;
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("non-empty") = out;
        Ok((CpuStorage::F32(y.flatten_all()?.to_vec1::<f32>()?), Shape::from(shape)))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(dy.broadcast_matmul(&self.w)?))
    }
}

/// `x · wᵀ` over the last dimension of `x` (any leading shape), where `w` (out, in) is a dense
/// f32 weight that receives no gradient. CPU only.
pub fn frozen_matmul(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(FrozenMatmul { w: w.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn same_values_and_input_gradient_as_the_autograd_matmul() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (7, 5), &dev).unwrap();
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 5), &dev).unwrap()).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (2, 3, 7), &dev).unwrap();
        let ours = frozen_matmul(x.as_tensor(), &w).unwrap();
        let theirs = x.as_tensor().broadcast_matmul(&w.t().unwrap()).unwrap();
        assert_eq!(ours.dims(), &[2, 3, 7]);
        let diff = (&ours - &theirs).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "forward differs by {diff}");
        // A non-trivial upstream gradient (the probe), through both.
        let g_ours = (ours * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let g_theirs = (theirs * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let (a, b) = (g_ours.get(x.as_tensor()).unwrap(), g_theirs.get(x.as_tensor()).unwrap());
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "input gradient differs by {diff}");
        assert!(a.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() > 0.1);
        // The weight gets no gradient entry (the autograd matmul would give one to its transpose).
        assert!(g_ours.get(&w).is_none());
    }

    #[test]
    fn a_non_contiguous_input_is_made_contiguous() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (4, 6), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (6, 3), &dev).unwrap().t().unwrap();
        let diff = (frozen_matmul(&x, &w).unwrap() - x.matmul(&w.t().unwrap()).unwrap()).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5);
    }
}
