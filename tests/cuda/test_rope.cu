// RoPE against kernels/cpu/rope.hpp on packed positions (two samples, each restarting at 0),
// q-shaped and k-shaped tensors, head_dim 128, 64 and 12 (the one-pair-per-thread kernel), forward
// and inverse (the backward); one tensor a launch, and q and k together in one launch.
// Tolerance 1e-2 (bf16 output; fp32 angles on both sides).
#include <algorithm>

#include "cuda_test.cuh"
#include "peft/kernels/cuda/rope.cuh"

namespace peft::cuda_test {

static void run_case(TestContext& t, cuda::DeviceArena& arena, int len_a, int len_b, int heads, int head_dim,
                     double theta) {
  const std::string tag = " [" + std::to_string(heads) + "x" + std::to_string(head_dim) + "]";
  std::vector<std::int32_t> pos;
  for (int i = 0; i < len_a; ++i) pos.push_back(i);
  for (int i = 0; i < len_b; ++i) pos.push_back(i);
  const int tokens = static_cast<int>(pos.size());
  const Floats x = t.normal(static_cast<std::size_t>(tokens) * heads * head_dim);
  cuda::RopeTable table;
  table.cos = alloc_poisoned<float>(arena, tokens * head_dim / 2);
  table.sin = alloc_poisoned<float>(arena, tokens * head_dim / 2);
  auto* dpos = upload(arena, pos);
  auto* inv = upload_f32(arena, cuda::rope_inv_freq(head_dim, theta));
  cuda::rope_build_table(table, dpos, inv, tokens, head_dim, 0);
  const int heads2 = std::max(1, heads / 7);  // a GQA k beside it
  const Floats x2 = t.normal(static_cast<std::size_t>(tokens) * heads2 * head_dim);
  for (bool inverse : {false, true}) {
    const std::string dir = inverse ? "inverse (backward)" : "forward";
    auto* dx = upload_bf16(arena, x);
    cuda::rope_apply(dx, table, heads, head_dim, 0, inverse);
    const Floats want = ref_rope(x, pos, heads, head_dim, theta, inverse);
    t.close(dir + tag, download_bf16(dx, x.size()), want, 1e-2);
    // the pair: each tensor as it would be alone (same kernel arithmetic, so bit for bit)
    auto* dq = upload_bf16(arena, x);
    auto* dk = upload_bf16(arena, x2);
    cuda::rope_apply(dq, table, heads, head_dim, 0, inverse, dk, heads2);
    auto* dk_alone = upload_bf16(arena, x2);
    cuda::rope_apply(dk_alone, table, heads2, head_dim, 0, inverse);
    t.close(dir + tag + " q of a q+k launch == alone", download_bf16(dq, x.size()), download_bf16(dx, x.size()), 0.0);
    t.close(dir + tag + " k of a q+k launch == alone", download_bf16(dk, x2.size()),
            download_bf16(dk_alone, x2.size()), 0.0);
    t.close(dir + tag + " k of a q+k launch vs reference", download_bf16(dk, x2.size()),
            ref_rope(x2, pos, heads2, head_dim, theta, inverse), 1e-2);
  }
}

int test_main(int argc, char** argv) {
  return run_test(argc, argv, "rope", [](TestContext& t) {
    cuda::DeviceArena arena(64u << 20);
    if (t.small) {
      run_case(t, arena, 3, 4, 2, 64, 1e6);
    } else {
      run_case(t, arena, 70, 1000, 28, 128, 1e6);  // q of the 7B, long positions
      run_case(t, arena, 70, 1000, 4, 128, 1e6);   // k of the 7B
      run_case(t, arena, 33, 17, 14, 64, 1e6);     // q of the 0.5B
      run_case(t, arena, 5, 9, 7, 12, 1e4);        // head_dim 12: the one-pair-per-thread kernel
    }
  });
}

}  // namespace peft::cuda_test

int main(int argc, char** argv) { return peft::cuda_test::test_main(argc, argv); }
