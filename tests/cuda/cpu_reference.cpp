// Host-compiled bridge to the CPU oracle (see cpu_reference.hpp).
#include "cpu_reference.hpp"

#include <span>

#include "peft/kernels/cpu/attention.hpp"
#include "peft/kernels/cpu/cross_entropy.hpp"
#include "peft/kernels/cpu/rms_norm.hpp"
#include "peft/kernels/cpu/rope.hpp"
#include "peft/kernels/cpu/swiglu.hpp"
#include "peft/core/parameter.hpp"
#include "peft/optim/adamw.hpp"
#include "peft/optim/sgd.hpp"
#include "peft/policies/precision.hpp"
#include "peft/train/grad_norm.hpp"

namespace peft::cuda_test {
namespace {

Matrix to_matrix(const Floats& v, int rows, int cols) { return ConstMatrixMap(v.data(), rows, cols); }
Floats to_floats(const Matrix& m) { return Floats(m.data(), m.data() + m.size()); }

}  // namespace

Floats ref_matmul_xwt(const Floats& x, const Floats& w, const Floats* bias, int m, int n, int k) {
  Matrix y = to_matrix(x, m, k) * to_matrix(w, n, k).transpose();
  if (bias) y.rowwise() += to_matrix(*bias, 1, n).row(0);
  return to_floats(y);
}

Floats ref_matmul(const Floats& a, const Floats& b, int m, int n, int k) {
  return to_floats(to_matrix(a, m, k) * to_matrix(b, k, n));
}

RmsNormRef ref_rms_norm_forward(const Floats& x, const Floats& w, int rows, int cols, float eps) {
  Matrix xhat;
  Eigen::VectorXf rstd;
  cpu::rms_normalize(to_matrix(x, rows, cols), eps, xhat, rstd);
  Bf16Mixed::store(xhat);
  Matrix y = xhat.array().rowwise() * to_matrix(w, 1, cols).row(0).array();
  Bf16Mixed::store(y);
  return {to_floats(y), Floats(rstd.data(), rstd.data() + rstd.size())};
}

void ref_rms_norm_backward(const Floats& dy, const Floats& x, const Floats& w, int rows, int cols, float eps, Floats& dx,
                           Floats& dw) {
  Matrix xhat;
  Eigen::VectorXf rstd;
  cpu::rms_normalize(to_matrix(x, rows, cols), eps, xhat, rstd);
  Bf16Mixed::store(xhat);
  const Matrix dym = to_matrix(dy, rows, cols);
  const Matrix dxhat = dym.array().rowwise() * to_matrix(w, 1, cols).row(0).array();
  Matrix dxm = to_matrix(dx, rows, cols);
  cpu::rms_normalize_backward(dxhat, xhat, rstd, dxm);
  dx = to_floats(dxm);
  const Matrix dwm = dym.cwiseProduct(xhat).colwise().sum();
  dw = to_floats(dwm);
}

Floats ref_rope(const Floats& x, const std::vector<std::int32_t>& positions, int heads, int head_dim, double theta,
                bool inverse) {
  const auto table = cpu::rope_table(positions, head_dim, theta);
  Matrix m = to_matrix(x, static_cast<int>(positions.size()), heads * head_dim);
  cpu::apply_rope(m, heads, head_dim, table, inverse);
  Bf16Mixed::store(m);
  return to_floats(m);
}

Floats ref_swiglu_forward(const Floats& gate, const Floats& up) {
  const int n = static_cast<int>(gate.size());
  Matrix act;
  cpu::swiglu_forward(to_matrix(gate, 1, n), to_matrix(up, 1, n), act);
  Bf16Mixed::store(act);
  return to_floats(act);
}

void ref_swiglu_backward(const Floats& dact, const Floats& gate, const Floats& up, Floats& dgate, Floats& dup) {
  const int n = static_cast<int>(gate.size());
  Matrix dg, du;
  cpu::swiglu_backward(to_matrix(dact, 1, n), to_matrix(gate, 1, n), to_matrix(up, 1, n), dg, du);
  dgate = to_floats(dg);
  dup = to_floats(du);
}

CrossEntropyRef ref_cross_entropy(const Floats& h, const Floats& w, const std::vector<std::int32_t>& targets, int n,
                                  int hidden, int vocab, float grad_scale) {
  const Matrix hm = to_matrix(h, n, hidden), wm = to_matrix(w, vocab, hidden);
  Matrix dh, dw = Matrix::Zero(vocab, hidden);
  const auto r = cpu::cross_entropy(hm, wm, targets, grad_scale, &dh, &dw, [](Matrix& m) { Bf16Mixed::store(m); });
  return {r.loss_sum, to_floats(dh), to_floats(dw)};
}

AttentionRef ref_attention(const Floats& q, const Floats& k, const Floats& v, const Floats& dout, int heads,
                           int kv_heads, int head_dim, const std::vector<std::int64_t>& cu_seqlens) {
  const int tokens = static_cast<int>(cu_seqlens.back());
  const cpu::AttentionShape s{heads, kv_heads, head_dim};
  const Matrix qm = to_matrix(q, tokens, heads * head_dim), km = to_matrix(k, tokens, kv_heads * head_dim),
               vm = to_matrix(v, tokens, kv_heads * head_dim);
  Matrix out, dq, dk, dv;
  std::vector<Matrix> probs;
  cpu::attention_forward(qm, km, vm, s, cu_seqlens, out, probs);
  cpu::attention_backward(to_matrix(dout, tokens, heads * head_dim), qm, km, vm, s, cu_seqlens, probs, dq, dk, dv);
  return {to_floats(out), to_floats(dq), to_floats(dk), to_floats(dv)};
}

AdamWRef ref_adamw(std::vector<Floats> params, const std::vector<std::vector<Floats>>& grads,
                   const std::vector<float>& clip, double lr, double beta1, double beta2, double eps,
                   double weight_decay) {
  std::vector<Matrix> values, g(params.size());
  for (const auto& p : params) values.push_back(to_matrix(p, 1, static_cast<int>(p.size())));
  ParameterList list;
  for (std::size_t i = 0; i < params.size(); ++i) list.push_back({"p" + std::to_string(i), &values[i], &g[i]});
  AdamW opt({beta1, beta2, eps, weight_decay});
  opt.init(list);
  for (std::size_t step = 0; step < grads.size(); ++step) {
    for (std::size_t i = 0; i < params.size(); ++i) {
      g[i] = to_matrix(grads[step][i], 1, static_cast<int>(params[i].size()));
      g[i] *= clip[step];
    }
    opt.step(list, lr);
  }
  AdamWRef r;
  for (const auto& v : values) r.params.push_back(to_floats(v));
  return r;
}

SgdRef ref_sgd(std::vector<Floats> params, const std::vector<std::vector<Floats>>& grads, const std::vector<float>& clip,
               const std::vector<double>& lrs, double momentum, double weight_decay) {
  std::vector<Matrix> values, g(params.size());
  for (const auto& p : params) values.push_back(to_matrix(p, 1, static_cast<int>(p.size())));
  ParameterList list;
  for (std::size_t i = 0; i < params.size(); ++i) list.push_back({"p" + std::to_string(i), &values[i], &g[i]});
  Sgd opt({momentum, weight_decay});
  opt.init(list);
  for (std::size_t step = 0; step < grads.size(); ++step) {
    for (std::size_t i = 0; i < params.size(); ++i) {
      g[i] = to_matrix(grads[step][i], 1, static_cast<int>(params[i].size()));
      g[i] *= clip[step];
    }
    opt.step(list, lrs[step]);
  }
  SgdRef r;
  for (const auto& v : values) r.params.push_back(to_floats(v));
  for (const auto& b : opt.momentum_buffer) r.momentum_buffer.push_back(to_floats(b));
  return r;
}

double ref_global_norm(const std::vector<Floats>& grads) {
  std::vector<Matrix> g, values;
  for (const auto& x : grads) g.push_back(to_matrix(x, 1, static_cast<int>(x.size())));
  values.resize(g.size());
  ParameterList list;
  for (std::size_t i = 0; i < g.size(); ++i) list.push_back({"g" + std::to_string(i), &values[i], &g[i]});
  return global_grad_norm(list);
}

}  // namespace peft::cuda_test
