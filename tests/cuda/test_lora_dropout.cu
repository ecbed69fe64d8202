// The fused LoRA dropout kernels (kernels/cuda/lora_dropout.cuh) against a plain reference built
// from dropout_forward, the kernel they replace: its output on an all-ones input is the mask
// itself (0 or 1/(1-p)), its output on x the dropped input; the host then computes in double
//   xa = drop(x) A^T,  dA0 + dxa^T drop(x),  dx0 + ((dxa A) * mask) / (1 - p).
// A kernel whose mask differed from dropout_forward's in any element would miss by far more than
// the tolerances (1e-2 for bf16 outputs: one rounding; 1e-5 for the fp32 dA, accumulated in fp32 in
// another order). Shapes cover ragged token counts, widths that are not a tile multiple, and
// padded ranks 8..64 (the kernels' range); at every rank the tensor-core kernels (8 G, G = 1..8
// rank groups) and the FMA ones. Not small: the 7B q_proj and down_proj shapes timed against the
// kernels they replace.
#include "cuda_test.cuh"
#include "peft/kernels/cuda/elementwise.cuh"
#include "peft/kernels/cuda/gemm.cuh"
#include "peft/kernels/cuda/lora_dropout.cuh"

namespace peft::cuda_test {
namespace {

void check_shape(TestContext& t, cuda::DeviceArena& arena, int T, int in, int rp, float p, std::uint64_t seed_value) {
  const std::string label = "T=" + std::to_string(T) + " in=" + std::to_string(in) + " rp=" + std::to_string(rp) +
                            " p=" + std::to_string(p).substr(0, 4);
  const std::size_t n = static_cast<std::size_t>(T) * in;
  const Floats x = t.normal(n), a = t.normal(static_cast<std::size_t>(rp) * in, 0.05f), dxa = t.normal(static_cast<std::size_t>(T) * rp),
               dx0 = t.normal(n, 0.1f), da0 = t.normal_f32(static_cast<std::size_t>(rp) * in, 0.1f);
  const Floats ones(n, 1.0f);
  auto* seed = upload(arena, std::vector<std::uint64_t>{seed_value});
  auto *dx_in = upload_bf16(arena, x), *d_a = upload_bf16(arena, a), *d_dxa = upload_bf16(arena, dxa),
       *d_ones = upload_bf16(arena, ones);
  auto* d_drop = alloc_poisoned<bf16>(arena, n);
  cuda::dropout_forward(d_drop, d_ones, static_cast<long long>(n), seed, p, 0);
  const Floats mask = download_bf16(d_drop, n);
  cuda::dropout_forward(d_drop, dx_in, static_cast<long long>(n), seed, p, 0);
  const Floats xd = download_bf16(d_drop, n);  // dropout_forward's dropped input, bf16

  Floats xa_ref(static_cast<std::size_t>(T) * rp), da_ref(da0), dx_ref(n);
  const double keep = 1.0 / (1.0 - static_cast<double>(p));
  std::size_t kept = 0;
  for (int tk = 0; tk < T; ++tk) {
    for (int r = 0; r < rp; ++r) {
      double s = 0;
      for (int i = 0; i < in; ++i) s += static_cast<double>(xd[tk * in + i]) * a[r * in + i];
      xa_ref[tk * rp + r] = static_cast<float>(s);
    }
    for (int i = 0; i < in; ++i) {
      const std::size_t e = static_cast<std::size_t>(tk) * in + i;
      double g = 0;
      for (int r = 0; r < rp; ++r) g += static_cast<double>(dxa[tk * rp + r]) * a[r * in + i];
      kept += mask[e] != 0.0f;
      dx_ref[e] = static_cast<float>(dx0[e] + (mask[e] != 0.0f ? keep * g : 0.0));
    }
  }
  for (int r = 0; r < rp; ++r)
    for (int i = 0; i < in; ++i) {
      double s = da0[r * in + i];
      for (int tk = 0; tk < T; ++tk) s += static_cast<double>(dxa[tk * rp + r]) * xd[tk * in + i];
      da_ref[r * in + i] = static_cast<float>(s);
    }
  // The draw itself: a mask that kept everything (or nothing) would make the checks below weak.
  const double kept_frac = static_cast<double>(kept) / static_cast<double>(n);
  const double spread = 4.0 * std::sqrt(static_cast<double>(p) * (1.0 - p) / static_cast<double>(n)) + 0.01;
  t.expect(std::abs(kept_frac - (1.0 - p)) < spread, label + ": mask keeps ~1-p (" + std::to_string(kept_frac) + ")");

  // The forward; at rank 8 also with the tensor-core kernel off (the FMA kernel every rank has).
  const bool mma = cuda::lora_down_mma();
  const bool tc_rank = rp % 8 == 0 && rp <= 64;  // the tensor-core kernels' ranks
  for (const bool on : {mma, false}) {
    if (!tc_rank && !on) continue;
    cuda::lora_down_mma() = on;
    auto* xa = alloc_poisoned<bf16>(arena, static_cast<std::size_t>(T) * rp);
    cuda::lora_down_dropout(xa, dx_in, d_a, rp, T, in, seed, p, 0);
    t.close(label + (tc_rank ? (on ? " (tensor cores)" : " (FMA)") : "") + ": xa = drop(x) A^T",
            download_bf16(xa, static_cast<std::size_t>(T) * rp), xa_ref, 1e-2);
    if (tc_rank && on) {  // with scratch: the row split over blocks, the partials added in order
      const std::size_t floats = n / 2;
      auto* scratch = alloc_poisoned<float>(arena, floats);
      const int splits = cuda::lora_down_splits(T, in, floats, rp);
      auto* xs = alloc_poisoned<bf16>(arena, static_cast<std::size_t>(T) * rp);
      cuda::lora_down_dropout(xs, dx_in, d_a, rp, T, in, seed, p, 0, scratch, floats);
      t.close(label + " (tensor cores, row in " + std::to_string(splits) + " splits): xa = drop(x) A^T",
              download_bf16(xs, static_cast<std::size_t>(T) * rp), xa_ref, 1e-2);
    }
  }
  cuda::lora_down_mma() = mma;

  // The backward at its default grid and at others (the split of the work changes, the sums must
  // not); at rank 8 on tensor cores and on the FMA kernel, each at its own grid knob.
  const bool back_mma = cuda::lora_back_mma();
  for (const bool on : {back_mma, false}) {
    if (!tc_rank && !on) continue;
    cuda::lora_back_mma() = on;
    const bool tensor_cores = tc_rank && on;
    int& knob = tensor_cores ? cuda::lora_back_mma_blocks_per_sm() : cuda::lora_back_blocks_per_sm();
    const int chosen = knob;
    for (const int per_sm : {chosen, 1, 4, 32}) {
      knob = per_sm;
      const std::string at = label + (tc_rank ? (tensor_cores ? " (tensor cores, " : " (FMA, ") : " (") +
                             (per_sm > 0 ? std::to_string(per_sm) : std::string("as many")) + " blocks an SM)";
      auto* dx = upload_bf16(arena, dx0);
      auto* da = upload_f32(arena, da0);
      cuda::lora_dropout_backward(dx, da, d_dxa, dx_in, d_a, rp, T, in, seed, p, 0);
      t.close(at + ": dA += dxa^T drop(x)", download_f32(da, static_cast<std::size_t>(rp) * in), da_ref, 1e-5);
      t.close(at + ": dx += (dxa A) mask/(1-p)", download_bf16(dx, n), dx_ref, 1e-2);
    }
    knob = chosen;
  }
  cuda::lora_back_mma() = back_mma;
}

// The mask's statistics, since it comes from a hash and not a generator: at p = 1/2 over 2^20
// elements, the drop rate, neighbours (next element, next row of a 1024-wide input) dropped
// together a quarter of the time, and the masks of related seeds (s+1, the high word's lowest bit,
// s+2^32+1) agreeing half of the time, each within 5 standard deviations (~1e-3 here). A hash
// that let the index's or the seed's low or high bits through would miss these by far more.
void mask_statistics(TestContext& t, cuda::DeviceArena& arena) {
  const std::size_t n = std::size_t{1} << 20, width = 1024;
  const float p = 0.5f;
  auto* ones = upload_bf16(arena, Floats(n, 1.0f));
  auto* d_mask = alloc_poisoned<bf16>(arena, n);
  auto* seed = upload(arena, std::vector<std::uint64_t>{0});
  auto mask_of = [&](std::uint64_t s) {
    PEFT_CUDA_CHECK(cudaMemcpy(seed, &s, sizeof s, cudaMemcpyHostToDevice));
    cuda::dropout_forward(d_mask, ones, static_cast<long long>(n), seed, p, 0);
    const Floats m = download_bf16(d_mask, n);
    std::vector<bool> dropped(n);
    for (std::size_t i = 0; i < n; ++i) dropped[i] = m[i] == 0.0f;
    return dropped;
  };
  const std::uint64_t base = 0x5eed5eed12345678ull;
  const std::vector<bool> m = mask_of(base);
  auto near = [&](const std::string& what, std::size_t hits, std::size_t trials, double expect) {
    const double f = static_cast<double>(hits) / static_cast<double>(trials);
    const double sd = std::sqrt(expect * (1.0 - expect) / static_cast<double>(trials));
    t.expect(std::abs(f - expect) < 5.0 * sd, "mask statistics: " + what + " " + std::to_string(f) + " (expected " +
                                                   std::to_string(expect) + ")");
  };
  std::size_t d = 0, next = 0, below = 0;
  for (std::size_t i = 0; i < n; ++i) {
    d += m[i];
    if (i + 1 < n) next += m[i] && m[i + 1];
    if (i + width < n) below += m[i] && m[i + width];
  }
  near("drop rate", d, n, 0.5);
  near("element and the next both dropped", next, n - 1, 0.25);
  near("element and the one a row below both dropped", below, n - width, 0.25);
  for (const std::uint64_t other : {base + 1, base ^ (std::uint64_t{1} << 32), base + (std::uint64_t{1} << 32) + 1}) {
    const std::vector<bool> o = mask_of(other);
    std::size_t same = 0;
    for (std::size_t i = 0; i < n; ++i) same += m[i] == o[i];
    near("agreement with a related seed", same, n, 0.5);
  }
}

__global__ void probability_compare_kernel(unsigned* mismatches, float p) {
  const unsigned k = blockIdx.x * blockDim.x + threadIdx.x;  // every 24-bit value
  const bool as_float = static_cast<float>(k) * (1.0f / 16777216.0f) < p;
  if (as_float != cuda::detail::below_probability(k, p)) atomicAdd(mismatches, 1u);
}

// The mask's integer threshold (below_probability) against the float comparison it replaced,
// (k / 2^24 < p), over all 2^24 values of k, at probabilities on and between multiples of 2^-24.
void mask_threshold(TestContext& t, cuda::DeviceArena& arena) {
  auto* count = upload(arena, std::vector<unsigned>{0});
  for (const float p : {0.0f, 1e-9f, 5.9604645e-8f, 0.05f, 0.1f, 1.0f / 3.0f, 0.5f, 0.7f, 0.99999994f, 1.0f}) {
    PEFT_CUDA_CHECK(cudaMemset(count, 0, sizeof(unsigned)));
    probability_compare_kernel<<<(1u << 24) / 256, 256>>>(count, p);
    PEFT_CUDA_CHECK(cudaGetLastError());
    unsigned h = 1;
    PEFT_CUDA_CHECK(cudaMemcpy(&h, count, sizeof h, cudaMemcpyDeviceToHost));
    t.expect(h == 0, "mask threshold at p = " + std::to_string(p) + ": the integer test == the float test for all "
                     "2^24 values (" + std::to_string(h) + " differ)");
  }
}

// One 7B projection's dropout passes at seq 2048: fused against dropout_forward + cuBLASLt
// (+ dropout_backward_add), the path they replace.
void time_shape(cuda::DeviceArena& arena, cuda::Gemm& gemm, const char* name, int T, int in, int rp) {
  const std::size_t n = static_cast<std::size_t>(T) * in;
  auto *x = arena.alloc<bf16>(n, "x"), *buf = arena.alloc<bf16>(n, "dropout buffer"), *dx = arena.alloc<bf16>(n, "dx");
  auto *a = arena.alloc<bf16>(static_cast<std::size_t>(rp) * in, "A"), *xa = arena.alloc<bf16>(static_cast<std::size_t>(T) * rp, "xa");
  auto* da = arena.alloc<float>(static_cast<std::size_t>(rp) * in, "dA");
  fill_random_bf16(x, n, 1u, 1.0f);
  fill_random_bf16(dx, n, 2u, 1.0f);
  fill_random_bf16(a, static_cast<std::size_t>(rp) * in, 3u, 0.05f);
  fill_random_bf16(xa, static_cast<std::size_t>(T) * rp, 4u, 1.0f);
  fill_random_f32(da, static_cast<std::size_t>(rp) * in, 5u, 0.1f);
  auto* seed = upload(arena, std::vector<std::uint64_t>{42});
  const float p = 0.05f;
  const long long ne = static_cast<long long>(n);
  const float f_sep = median_ms([&] {
    cuda::dropout_forward(buf, x, ne, seed, p, 0);
    cuda::matmul_forward(gemm, xa, buf, a, nullptr, T, rp, in, 0);
  });
  // The forward as the model runs it: the dropout buffer lends the row splits their scratch.
  const float f_fus = median_ms(
      [&] { cuda::lora_down_dropout(xa, x, a, rp, T, in, seed, p, 0, reinterpret_cast<float*>(buf), n / 2); });
  const float b_sep = median_ms([&] {
    cuda::dropout_forward(buf, x, ne, seed, p, 0);
    gemm.matmul(da, in, xa, rp, true, buf, in, false, rp, in, T, 1.0f, 1.0f, nullptr, 0);
    gemm.matmul(buf, in, xa, rp, false, a, in, false, T, in, rp, 1.0f, 0.0f, nullptr, 0);
    cuda::dropout_backward_add(dx, buf, ne, seed, p, 0);
  });
  const float b_fus = median_ms([&] { cuda::lora_dropout_backward(dx, da, xa, x, a, rp, T, in, seed, p, 0); });
  std::printf("  timing %s T=%d in=%d rp=%d: forward %.1f -> %.1f us, backward (dA, dx) %.1f -> %.1f us\n", name, T, in,
              rp, f_sep * 1e3, f_fus * 1e3, b_sep * 1e3, b_fus * 1e3);
  auto backward = [&] { cuda::lora_dropout_backward(dx, da, xa, x, a, rp, T, in, seed, p, 0); };
  if (rp == 8) {  // forward and backward on CUDA cores, for the tensor-core kernels' A/B
    const bool down = cuda::lora_down_mma(), back = cuda::lora_back_mma();
    cuda::lora_down_mma() = false;
    const float f = median_ms([&] { cuda::lora_down_dropout(xa, x, a, rp, T, in, seed, p, 0); });
    cuda::lora_down_mma() = true;
    const float f_tc = median_ms([&] { cuda::lora_down_dropout(xa, x, a, rp, T, in, seed, p, 0); });  // one split
    std::printf("  timing %s forward on tensor cores, the row in %d splits: %.1f us\n", name,
                cuda::lora_down_splits(T, in, n / 2), f_fus * 1e3);
    cuda::lora_down_mma() = down;
    std::printf("  timing %s forward on CUDA cores (FMA kernel): %.1f us (tensor cores, one split: %.1f)\n", name,
                f * 1e3, f_tc * 1e3);
    cuda::lora_back_mma() = false;
    const float b = median_ms(backward);
    cuda::lora_back_mma() = true;
    const float b_tc = median_ms(backward);
    std::printf("  timing %s backward on CUDA cores (FMA kernel): %.1f us (tensor cores: %.1f)\n", name, b * 1e3,
                b_tc * 1e3);
    // The tensor-core backward's grid, for tuning lora_back_mma_blocks_per_sm().
    const int chosen = cuda::lora_back_mma_blocks_per_sm();
    for (const int per_sm : {1, 2, 3, 8}) {
      cuda::lora_back_mma_blocks_per_sm() = per_sm;
      const float bg = median_ms(backward);
      std::printf("  timing %s tensor-core backward at %d blocks an SM: %.1f us (default, as many as fit: %.1f)\n",
                  name, per_sm, bg * 1e3, b_tc * 1e3);
    }
    cuda::lora_back_mma_blocks_per_sm() = chosen;
    cuda::lora_back_mma() = back;
    return;
  }
  // Above rank 8 the fused lines are the tensor-core kernels; the FMA ones for comparison.
  const bool down = cuda::lora_down_mma(), back = cuda::lora_back_mma();
  cuda::lora_down_mma() = cuda::lora_back_mma() = false;
  const float f_fma = median_ms([&] { cuda::lora_down_dropout(xa, x, a, rp, T, in, seed, p, 0); });
  const float b_fma = median_ms(backward);
  std::printf("  timing %s on CUDA cores (FMA kernels): forward %.1f us, backward %.1f us\n", name, f_fma * 1e3,
              b_fma * 1e3);
  // The FMA backward's grid, for tuning lora_back_blocks_per_sm().
  const int chosen = cuda::lora_back_blocks_per_sm();
  for (const int per_sm : {2, 4, 8}) {
    cuda::lora_back_blocks_per_sm() = per_sm;
    const float b = median_ms(backward);
    std::printf("  timing %s FMA backward at %d blocks an SM: %.1f us (default %d: %.1f)\n", name, per_sm, b * 1e3,
                chosen, b_fma * 1e3);
  }
  cuda::lora_back_blocks_per_sm() = chosen;
  cuda::lora_down_mma() = down;
  cuda::lora_back_mma() = back;
}

}  // namespace

int test_main(int argc, char** argv) {
  return run_test(argc, argv, "lora dropout (fused)", [](TestContext& t) {
    cuda::DeviceArena arena(std::size_t{3} << 30);
    check_shape(t, arena, 37, 328, 8, 0.05f, 0x1234);
    check_shape(t, arena, t.small ? 3 : 130, t.small ? 1032 : 3592, 8, 0.1f, 5);  // in % 16 == 8: a half step
    // Rank 8's tensor-core backward: p = 0 (nothing dropped), 16-token steps cut short (T % 16),
    // a last 64-column strip with one lane's columns (3592 % 64 == 8) or five (1000 % 64 == 40).
    check_shape(t, arena, 37, t.small ? 136 : 3592, 8, 0.0f, 0xabcd);
    check_shape(t, arena, t.small ? 16 : 100, 1000, 8, 0.05f, 0x51);
    // Enough 16-token steps (57 strips x 63) that a warp of the tensor-core backward takes several,
    // across strip boundaries, even at 1 block an SM.
    check_shape(t, arena, t.small ? 200 : 1000, t.small ? 1032 : 3592, 8, 0.05f, 0x77);
    // A short batch of down_proj's width: the forward's row in many splits (a last one shorter).
    check_shape(t, arena, 20, t.small ? 4104 : 18944, 8, 0.05f, 0x3d);
    check_shape(t, arena, t.small ? 5 : 300, t.small ? 72 : 1032, 24, 0.5f, 0x9e37);
    check_shape(t, arena, t.small ? 9 : 70, t.small ? 264 : 520, 64, 0.1f, 77);
    // Ranks 16..64 on tensor cores (and the FMA kernels): T % 16 != 0, in % 64 != 0 (a last strip
    // of one lane's or five lanes' columns), p = 0 and 0.05, an odd group count (40 = 5 groups);
    // short batches of wide rows for the forward's row splits [split, T, rp].
    for (const int rp : {16, 32, 40, 64}) {
      check_shape(t, arena, t.small ? 21 : 77, t.small ? 136 : 1000, rp, 0.05f, 0x600d + rp);
      check_shape(t, arena, t.small ? 9 : 37, t.small ? 264 : 3592, rp, 0.0f, 0xf00d + rp);
      check_shape(t, arena, 20, t.small ? 4104 : 18944, rp, 0.05f, 0x5eed + rp);
    }
    check_shape(t, arena, t.small ? 35 : 300, t.small ? 520 : 3592, 24, 0.05f, 0x24);
    // A zero seed and a one-token batch: nothing special-cased.
    check_shape(t, arena, 1, 64, 16, 0.3f, 0);
    mask_statistics(t, arena);
    mask_threshold(t, arena);
    bool threw = false;
    try {
      cuda::lora_down_dropout(nullptr, nullptr, nullptr, 72, 4, 64, nullptr, 0.1f, 0);
    } catch (const Error& e) {
      threw = std::string(e.what()).find("padded LoRA rank 72") != std::string::npos;
    }
    t.expect(threw && !cuda::lora_dropout_fusable(72) && cuda::lora_dropout_fusable(64),
             "rank 72: no fused kernel, refused by name");
    if (!t.small) {
      cuda::Gemm gemm(arena);
      time_shape(arena, gemm, "q_proj", 2048, 3584, 8);
      time_shape(arena, gemm, "down_proj", 2048, 18944, 8);
      for (const int rp : {16, 32, 40, 48, 64}) {  // tensor cores against dropout + cuBLASLt (the model's other path)
        time_shape(arena, gemm, ("q_proj r" + std::to_string(rp)).c_str(), 2048, 3584, rp);
        time_shape(arena, gemm, ("down_proj r" + std::to_string(rp)).c_str(), 2048, 18944, rp);
      }
      time_shape(arena, gemm, "q_proj", 64, 3584, 8);  // the recipe's short samples
      time_shape(arena, gemm, "down_proj", 64, 18944, 8);
    }
  });
}

}  // namespace peft::cuda_test

int main(int argc, char** argv) { return peft::cuda_test::test_main(argc, argv); }
