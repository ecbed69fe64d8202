// RoPE against kernels/cpu/rope.hpp on packed positions (two samples, each restarting at 0),
// q-shaped and k-shaped tensors, head_dim 128 and 64, forward and inverse (the backward).
// Tolerance 1e-2 (bf16 output; fp32 angles on both sides).
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
  for (bool inverse : {false, true}) {
    auto* dx = upload_bf16(arena, x);
    cuda::rope_apply(dx, table, heads, head_dim, 0, inverse);
    t.close(std::string(inverse ? "inverse (backward)" : "forward") + tag, download_bf16(dx, x.size()),
            ref_rope(x, pos, heads, head_dim, theta, inverse), 1e-2);
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
    }
  });
}

}  // namespace peft::cuda_test

int main(int argc, char** argv) { return peft::cuda_test::test_main(argc, argv); }
