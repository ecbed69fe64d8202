// Finite-difference checks of the CPU kernels' backwards (kernels/cpu/): for a random upstream
// gradient dy and L = sum(dy .* y), each backward applied to dy must equal dL/dinput. Sizes are
// tiny and seeds fixed. Tolerances (see support/gradcheck.hpp for the criterion): the kernels are
// float, the objective double; a fourth-order difference with h = 1e-2 on O(1) inputs leaves
// at most 5e-5 of the gradient's scale as noise (measured), so tol = 1e-3 of that scale: twenty
// times the noise and far below the O(1) error of a wrong formula.
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include "peft/kernels/cpu/attention.hpp"
#include "peft/kernels/cpu/cross_entropy.hpp"
#include "peft/kernels/cpu/rms_norm.hpp"
#include "peft/kernels/cpu/rope.hpp"
#include "peft/kernels/cpu/swiglu.hpp"
#include "support/gradcheck.hpp"

using namespace peft;
using test::check_gradient;
using test::random_matrix;
using test::weighted_sum;
using test::kCuSeqlens;
using test::kPositions;

namespace {

constexpr double kTol = 1e-3;


}  // namespace

TEST_CASE("the gradient check rejects a slightly wrong gradient", "[gradcheck]") {
  // The check must be able to fail: the exact gradient of L = sum(w .* x^2) passes, the same
  // gradient off by 1% of its scale on one entry does not.
  Rng rng(1);
  Matrix x = random_matrix(3, 4, rng), w = random_matrix(3, 4, rng);
  auto loss = [&] { return weighted_sum(w, x.cwiseProduct(x)); };
  const Matrix exact = 2.0f * w.cwiseProduct(x);
  CHECK(test::compare_gradient(x, exact, loss, {}).passes(kTol));
  Matrix wrong = exact;
  wrong(1, 2) += 0.01f * exact.cwiseAbs().maxCoeff();
  CHECK_FALSE(test::compare_gradient(x, wrong, loss, {}).passes(kTol));
}

TEST_CASE("rms_normalize backward matches finite differences", "[gradcheck][kernels]") {
  Rng rng(11);
  const float eps = 1e-6f;
  Matrix x = random_matrix(5, 12, rng);
  const Matrix dy = random_matrix(5, 12, rng);
  Matrix xhat;
  Eigen::VectorXf rstd;
  cpu::rms_normalize(x, eps, xhat, rstd);
  // rms_normalize_backward ADDS into dx (residual stream): start from a non-zero dx and check the
  // increment, which also checks that it adds rather than overwrites.
  const Matrix dx0 = random_matrix(5, 12, rng);
  Matrix dx = dx0;
  cpu::rms_normalize_backward(dy, xhat, rstd, dx);
  auto loss = [&] {
    Matrix xh;
    Eigen::VectorXf rs;
    cpu::rms_normalize(x, eps, xh, rs);
    return weighted_sum(dy, xh);
  };
  check_gradient("rms_normalize dx", x, dx - dx0, loss, {.step = 1e-2, .tol = kTol});
}

TEST_CASE("apply_rope inverse is the transpose of the rotation", "[gradcheck][kernels]") {
  // y = R x, L = sum(dy .* y), dL/dx = R^T dy = apply_rope(dy, inverse = true). head_dim 8 so
  // two frequencies per pair-half; theta 100 so the angles at positions 1..3 are not small.
  const int heads = 2, head_dim = 8;
  const auto table = cpu::rope_table(kPositions, head_dim, 100.0);
  Rng rng(12);
  Matrix x = random_matrix(7, heads * head_dim, rng);
  const Matrix dy = random_matrix(7, heads * head_dim, rng);
  Matrix dx = dy;
  cpu::apply_rope(dx, heads, head_dim, table, /*inverse=*/true);
  auto loss = [&] {
    Matrix y = x;
    cpu::apply_rope(y, heads, head_dim, table);
    return weighted_sum(dy, y);
  };
  check_gradient("rope dx", x, dx, loss, {.step = 1e-2, .tol = kTol});

  // And inverse undoes forward (a rotation): the round trip is the identity up to float rounding.
  Matrix round_trip = x;
  cpu::apply_rope(round_trip, heads, head_dim, table);
  cpu::apply_rope(round_trip, heads, head_dim, table, true);
  CHECK((round_trip - x).cwiseAbs().maxCoeff() < 1e-5f);
}

TEST_CASE("attention backward matches finite differences (two packed samples / GQA)", "[gradcheck][kernels]") {
  const int heads = 4, head_dim = 4;
  for (const int kv_heads : {2, 1}) {
    SECTION("kv_heads " + std::to_string(kv_heads)) {
      const cpu::AttentionShape shape{heads, kv_heads, head_dim};
      Rng rng(13 + static_cast<std::uint64_t>(kv_heads));
      Matrix q = random_matrix(7, heads * head_dim, rng), k = random_matrix(7, kv_heads * head_dim, rng),
             v = random_matrix(7, kv_heads * head_dim, rng);
      const Matrix dout = random_matrix(7, heads * head_dim, rng);
      Matrix out, dq, dk, dv;
      std::vector<Matrix> probs;
      cpu::attention_forward(q, k, v, shape, kCuSeqlens, out, probs);
      cpu::attention_backward(dout, q, k, v, shape, kCuSeqlens, probs, dq, dk, dv);
      auto loss = [&] {
        Matrix o;
        std::vector<Matrix> p;
        cpu::attention_forward(q, k, v, shape, kCuSeqlens, o, p);
        return weighted_sum(dout, o);
      };
      check_gradient("attention dq", q, dq, loss, {.step = 1e-2, .tol = kTol});
      check_gradient("attention dk", k, dk, loss, {.step = 1e-2, .tol = kTol});
      check_gradient("attention dv", v, dv, loss, {.step = 1e-2, .tol = kTol});

      // The finite differences cannot see a leak that forward and backward share, so check the
      // isolation directly: the second sample attended alone gives the same rows.
      const std::vector<std::int64_t> alone = {0, 3};
      Matrix out2;
      cpu::attention_forward(q.bottomRows(3), k.bottomRows(3), v.bottomRows(3), shape, alone, out2, probs);
      CHECK((out.bottomRows(3) - out2).cwiseAbs().maxCoeff() < 1e-6f);
    }
  }
}

TEST_CASE("swiglu backward matches finite differences", "[gradcheck][kernels]") {
  Rng rng(14);
  Matrix gate = random_matrix(5, 10, rng, 2.0f), up = random_matrix(5, 10, rng);  // gate spans silu's bend
  const Matrix dact = random_matrix(5, 10, rng);
  Matrix act, dgate, dup;
  cpu::swiglu_forward(gate, up, act);
  cpu::swiglu_backward(dact, gate, up, dgate, dup);
  auto loss = [&] {
    Matrix a;
    cpu::swiglu_forward(gate, up, a);
    return weighted_sum(dact, a);
  };
  check_gradient("swiglu dgate", gate, dgate, loss, {.step = 1e-2, .tol = kTol});
  check_gradient("swiglu dup", up, dup, loss, {.step = 1e-2, .tol = kTol});
}

TEST_CASE("cross_entropy gradients match finite differences", "[gradcheck][kernels]") {
  // L = grad_scale * sum CE; dh overwritten, dw accumulated. chunk = 2 rows so the 5 rows take
  // three chunks, the last one short.
  const float grad_scale = 0.37f;
  const std::vector<std::int32_t> targets = {3, 0, 10, 7, 3};
  Rng rng(15);
  Matrix h = random_matrix(5, 8, rng), w = random_matrix(11, 8, rng, 0.5f);
  auto identity = [](Matrix&) {};
  const Matrix dw0 = random_matrix(11, 8, rng);
  Matrix dh, dw = dw0;
  const auto r = cpu::cross_entropy(h, w, targets, grad_scale, &dh, &dw, identity, 2);
  CHECK(r.tokens == 5);

  // The loss itself against a plain double-precision log-softmax (float logits: 1e-5 relative).
  double want = 0.0;
  for (Eigen::Index i = 0; i < h.rows(); ++i) {
    const Eigen::VectorXd logits = (w.cast<double>() * h.row(i).cast<double>().transpose());
    const double mx = logits.maxCoeff();
    want += std::log((logits.array() - mx).exp().sum()) + mx - logits[targets[static_cast<std::size_t>(i)]];
  }
  CHECK(std::abs(r.loss_sum - want) <= 1e-5 * std::abs(want));

  auto loss = [&] {
    return grad_scale * cpu::cross_entropy(h, w, targets, 0.0f, nullptr, nullptr, identity, 2).loss_sum;
  };
  check_gradient("cross_entropy dh", h, dh, loss, {.step = 1e-2, .tol = kTol});
  check_gradient("cross_entropy dw", w, dw - dw0, loss, {.step = 1e-2, .tol = kTol});
}
