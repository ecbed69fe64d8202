// The CPU backend's functions behind plain std::vector<float> signatures (row-major), so the CUDA
// tests compare against the real oracle without nvcc compiling Eigen: cpu_reference.cpp is built
// by the host compiler and linked into every test. Inputs are the bf16 values the GPU sees (as
// floats); each function applies the same bf16 storage rounding as the Bf16Mixed layers.
#pragma once
#include <cstdint>
#include <vector>

namespace peft::cuda_test {

using Floats = std::vector<float>;

// y[M,N] = x[M,K] w[N,K]^T (+ bias[N]); fp32 result, no rounding.
Floats ref_matmul_xwt(const Floats& x, const Floats& w, const Floats* bias, int m, int n, int k);
// c[M,N] = a[M,K] b[K,N].
Floats ref_matmul(const Floats& a, const Floats& b, int m, int n, int k);

struct RmsNormRef {
  Floats y, rstd;
};
RmsNormRef ref_rms_norm_forward(const Floats& x, const Floats& w, int rows, int cols, float eps);
// dx = dx_in + d(norm)/dx (dy); dw = sum over rows of dy * xhat.
void ref_rms_norm_backward(const Floats& dy, const Floats& x, const Floats& w, int rows, int cols, float eps,
                           Floats& dx, Floats& dw);

Floats ref_rope(const Floats& x, const std::vector<std::int32_t>& positions, int heads, int head_dim, double theta,
                bool inverse);

Floats ref_swiglu_forward(const Floats& gate, const Floats& up);
void ref_swiglu_backward(const Floats& dact, const Floats& gate, const Floats& up, Floats& dgate, Floats& dup);

struct CrossEntropyRef {
  double loss_sum = 0.0;
  Floats dh, dw;
};
// h [n, hidden], w [vocab, hidden], targets all valid (the CPU oracle takes labelled rows only).
CrossEntropyRef ref_cross_entropy(const Floats& h, const Floats& w, const std::vector<std::int32_t>& targets, int n,
                                  int hidden, int vocab, float grad_scale);

struct AttentionRef {
  Floats out, dq, dk, dv;
};
AttentionRef ref_attention(const Floats& q, const Floats& k, const Floats& v, const Floats& dout, int heads,
                           int kv_heads, int head_dim, const std::vector<std::int64_t>& cu_seqlens);

struct AdamWRef {
  std::vector<Floats> params;
};
// `steps` AdamW steps of peft::AdamW, with gradients grads[step][tensor] scaled by clip[step].
AdamWRef ref_adamw(std::vector<Floats> params, const std::vector<std::vector<Floats>>& grads,
                   const std::vector<float>& clip, double lr, double beta1, double beta2, double eps,
                   double weight_decay);

// `steps` SGD steps of peft::Sgd (torch.optim.SGD), gradients scaled by clip[step] as ref_adamw's.
struct SgdRef {
  std::vector<Floats> params, momentum_buffer;
};
SgdRef ref_sgd(std::vector<Floats> params, const std::vector<std::vector<Floats>>& grads, const std::vector<float>& clip,
               const std::vector<double>& lrs, double momentum, double weight_decay);

// peft::global_grad_norm over the given gradients.
double ref_global_norm(const std::vector<Floats>& grads);

}  // namespace peft::cuda_test
