// Flash-style causal GQA attention over packed variable-length samples against
// kernels/cpu/attention.hpp: our mma.sync kernels (attention_forward_own / _backward_own; cuDNN has
// test_attention_cudnn.cu),
// the previous WMMA kernels and the plain-FMA reference (attention_simt.cuh). out, dq, dk, dv
// for sample lengths on and off the 64- and 128-row tile edges, packed samples of different
// lengths (including 1), groups of 1, 2 and 7 query heads per kv head, head_dim 128 and 64.
// Inputs are bf16 values; tolerance 1e-2 (bf16 outputs; P and dS are bf16 operands of the second
// products, and D = rowsum(dO * O) uses the bf16 O). Then times new against old at the 7B shape
// (28/4 heads, d 128, one sample of 2048 and 4096 tokens) and the 0.5B shape (14/2, d 64, 2048);
// `--time` runs only the timing.
#include "cuda_test.cuh"
#include "peft/kernels/cuda/attention.cuh"
#include "reference/attention_simt.cuh"
#include "reference/attention_wmma.cuh"

namespace peft::cuda_test {

static void run_case(TestContext& t, cuda::DeviceArena& arena, std::vector<int> lengths, int heads, int kv_heads,
                     int head_dim) {
  std::vector<std::int64_t> cu{0};
  std::vector<std::int32_t> cu32{0};
  int max_len = 0;
  for (int l : lengths) {
    cu.push_back(cu.back() + l);
    cu32.push_back(cu32.back() + l);
    max_len = std::max(max_len, l);
  }
  const int tokens = static_cast<int>(cu.back());
  std::string tag = " [h=" + std::to_string(heads) + "/" + std::to_string(kv_heads) + " d=" + std::to_string(head_dim) +
                    " len";
  for (int l : lengths) tag += " " + std::to_string(l);
  tag += "]";
  const std::size_t nq = static_cast<std::size_t>(tokens) * heads * head_dim,
                    nk = static_cast<std::size_t>(tokens) * kv_heads * head_dim;
  const Floats q = t.normal(nq), k = t.normal(nk), v = t.normal(nk), dout = t.normal(nq);
  const AttentionRef ref = ref_attention(q, k, v, dout, heads, kv_heads, head_dim, cu);

  auto *dq_in = upload_bf16(arena, q), *dk_in = upload_bf16(arena, k), *dv_in = upload_bf16(arena, v),
       *ddout = upload_bf16(arena, dout);
  auto* dcu = upload(arena, cu32);
  const cuda::AttentionDims dims{heads, kv_heads, head_dim};
  const cuda::VarlenBatch batch{dcu, static_cast<int>(lengths.size()), max_len, tokens};
  for (int impl : {0, 1, 2}) {
    const std::string name = impl == 0 ? "mma " : impl == 1 ? "wmma " : "simt ";
    auto* out = alloc_poisoned<cuda::bf16>(arena, nq);
    auto* lse = alloc_poisoned<float>(arena, static_cast<std::size_t>(heads) * tokens);
    if (impl == 0) cuda::attention_forward_own(out, lse, dq_in, dk_in, dv_in, dims, batch, 0);
    else if (impl == 1) cuda::attention_forward_wmma(out, lse, dq_in, dk_in, dv_in, dims, batch, 0);
    else cuda::attention_forward_simt(out, lse, dq_in, dk_in, dv_in, dims, batch, 0);
    t.close(name + "forward out" + tag, download_bf16(out, nq), ref.out, 1e-2);

    auto* dq = alloc_poisoned<cuda::bf16>(arena, nq);
    auto* dk = alloc_poisoned<cuda::bf16>(arena, nk);
    auto* dv = alloc_poisoned<cuda::bf16>(arena, nk);
    auto* scratch = alloc_poisoned<float>(arena, cuda::attention_backward_scratch_floats(tokens, dims));
    if (impl == 0) cuda::attention_backward_own(dq, dk, dv, scratch, ddout, out, dq_in, dk_in, dv_in, lse, dims, batch, 0);
    else if (impl == 1)
      cuda::attention_backward_wmma(dq, dk, dv, scratch, ddout, out, dq_in, dk_in, dv_in, lse, dims, batch, 0);
    else cuda::attention_backward_simt(dq, dk, dv, scratch, ddout, out, dq_in, dk_in, dv_in, lse, dims, batch, 0);
    t.close(name + "backward dq" + tag, download_bf16(dq, nq), ref.dq, 1e-2);
    t.close(name + "backward dk" + tag, download_bf16(dk, nk), ref.dk, 1e-2);
    t.close(name + "backward dv" + tag, download_bf16(dv, nk), ref.dv, 1e-2);
  }
}

static void time_shape(TestContext& t, cuda::DeviceArena& arena, const char* model, int seq, int heads, int kv_heads,
                       int d) {
  const int tokens = seq;
  const std::size_t nq = static_cast<std::size_t>(tokens) * heads * d, nk = static_cast<std::size_t>(tokens) * kv_heads * d;
  const std::size_t m0 = arena.mark();
  auto *q = arena.alloc<cuda::bf16>(nq, "q"), *out = arena.alloc<cuda::bf16>(nq, "out"),
       *dout = arena.alloc<cuda::bf16>(nq, "dout"), *dq = arena.alloc<cuda::bf16>(nq, "dq");
  auto *k = arena.alloc<cuda::bf16>(nk, "k"), *v = arena.alloc<cuda::bf16>(nk, "v"), *dk = arena.alloc<cuda::bf16>(nk, "dk"),
       *dv = arena.alloc<cuda::bf16>(nk, "dv");
  auto* lse = arena.alloc<float>(static_cast<std::size_t>(heads) * tokens, "lse");
  auto* scratch = arena.alloc<float>(cuda::attention_backward_scratch_floats(tokens, {heads, kv_heads, d}), "scratch");
  fill_random_bf16(q, nq, 5u, 1.0f);
  fill_random_bf16(k, nk, 6u, 1.0f);
  fill_random_bf16(v, nk, 7u, 1.0f);
  fill_random_bf16(dout, nq, 8u, 1.0f);
  std::vector<std::int32_t> cu{0, tokens};
  auto* dcu = upload(arena, cu);
  const cuda::AttentionDims dims{heads, kv_heads, d};
  const cuda::VarlenBatch batch{dcu, 1, seq, tokens};
  const double flop = 4.0 * heads * d * (static_cast<double>(seq) * seq / 2);  // causal QK^T + PV
  for (bool old : {true, false}) {
    const float fwd = median_ms([&] {
      if (old) cuda::attention_forward_wmma(out, lse, q, k, v, dims, batch, 0);
      else cuda::attention_forward_own(out, lse, q, k, v, dims, batch, 0);
    }, 2, 10);
    const float bwd = median_ms([&] {
      if (old) cuda::attention_backward_wmma(dq, dk, dv, scratch, dout, out, q, k, v, lse, dims, batch, 0);
      else cuda::attention_backward_own(dq, dk, dv, scratch, dout, out, q, k, v, lse, dims, batch, 0);
    }, 2, 10);
    std::printf("  timing: %s %s attention one layer, seq %d: forward %.3f ms (%.1f TFLOP/s), backward %.3f ms "
                "(%.1f TFLOP/s, counting 2.5x the forward's FLOPs)\n",
                old ? "wmma (old)" : "mma  (new)", model, seq, fwd, flop / (fwd * 1e-3) / 1e12, bwd,
                2.5 * flop / (bwd * 1e-3) / 1e12);
  }
  arena.release(m0);
  (void)t;
}

int test_main(int argc, char** argv) {
  bool time_only = false;  // TestContext ignores flags it does not know
  for (int i = 1; i < argc; ++i) time_only = time_only || std::string(argv[i]) == "--time";
  return run_test(argc, argv, "attention (flash-style, varlen, GQA)", [time_only](TestContext& t) {
    cuda::DeviceArena arena(1u << 30);
    if (time_only) {
      time_shape(t, arena, "7B", 2048, 28, 4, 128);
      time_shape(t, arena, "7B", 4096, 28, 4, 128);
      time_shape(t, arena, "0.5B", 2048, 14, 2, 64);
    } else if (t.small) {
      run_case(t, arena, {1, 5, 70}, 2, 1, 64);
      run_case(t, arena, {3, 66, 150}, 2, 1, 128);
    } else {
      run_case(t, arena, {1, 37, 64, 130}, 4, 2, 128);
      run_case(t, arena, {65, 3, 200}, 14, 2, 64);
      run_case(t, arena, {129}, 28, 4, 128);
      run_case(t, arena, {300, 1, 128, 257}, 4, 4, 128);  // group 1, several 128-row query tiles
      run_case(t, arena, {1, 191, 64, 129}, 3, 3, 64);
      run_case(t, arena, {517, 2}, 28, 4, 128);
      run_case(t, arena, {383, 1, 256}, 7, 1, 64);
      time_shape(t, arena, "7B", 2048, 28, 4, 128);
      time_shape(t, arena, "7B", 4096, 28, 4, 128);
      time_shape(t, arena, "0.5B", 2048, 14, 2, 64);
    }
  });
}

}  // namespace peft::cuda_test

int main(int argc, char** argv) { return peft::cuda_test::test_main(argc, argv); }
