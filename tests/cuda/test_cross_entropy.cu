// The chunked lm_head + cross entropy against kernels/cpu/cross_entropy.hpp (bf16 logits, as the
// Bf16Mixed store): loss sum, dh and the tied-head dW, with several chunks (the last partial), a
// vocabulary that is not a multiple of 8 (padded logits rows), ignored (-100) rows that must get
// zero loss and zero gradient, the loss-only mode, and the gather/scatter of labelled rows.
// Tolerances: loss 1e-4 (fp32 sums of the same bf16 logits), dh and dW 1e-2 (bf16 dlogits).
#include "cuda_test.cuh"
#include "peft/kernels/cuda/cross_entropy.cuh"

namespace peft::cuda_test {

static void run_case(TestContext& t, cuda::DeviceArena& arena, cuda::Gemm& gemm, int n, int hidden, int vocab,
                     int chunk_rows) {
  const std::string tag = " [n=" + std::to_string(n) + " V=" + std::to_string(vocab) + " chunk=" +
                          std::to_string(chunk_rows) + "]";
  const Floats h = t.normal(n * hidden), w = t.normal(static_cast<std::size_t>(vocab) * hidden, 0.2f);
  std::vector<std::int32_t> targets(n);
  for (auto& x : targets) x = t.uniform_int(0, vocab - 1);
  for (int i = 3; i < n; i += 7) targets[i] = -100;  // ignored positions

  // The CPU oracle takes labelled rows only.
  Floats h_lab;
  std::vector<std::int32_t> t_lab, lab_rows;
  for (int i = 0; i < n; ++i)
    if (targets[i] >= 0) {
      h_lab.insert(h_lab.end(), h.begin() + i * hidden, h.begin() + (i + 1) * hidden);
      t_lab.push_back(targets[i]);
      lab_rows.push_back(i);
    }
  const int nl = static_cast<int>(t_lab.size());
  const float grad_scale = 1.0f / static_cast<float>(nl);
  const CrossEntropyRef ref = ref_cross_entropy(h_lab, w, t_lab, nl, hidden, vocab, grad_scale);
  Floats dh_ref(n * hidden, 0.0f);
  for (int j = 0; j < nl; ++j)
    std::copy(ref.dh.begin() + j * hidden, ref.dh.begin() + (j + 1) * hidden, dh_ref.begin() + lab_rows[j] * hidden);

  auto *dh_in = upload_bf16(arena, h), *dw_in = upload_bf16(arena, w);
  auto* dt = upload(arena, targets);
  cuda::LogitsChunk chunk{nullptr, chunk_rows, cuda::LogitsChunk::ld_for(vocab)};
  chunk.data = arena.alloc<cuda::bf16>(static_cast<std::size_t>(chunk.rows) * chunk.ld, "logits chunk");
  auto* row_loss = alloc_poisoned<float>(arena, n);
  auto* dh = alloc_poisoned<cuda::bf16>(arena, n * hidden);
  const Floats dw0 = t.normal_f32(static_cast<std::size_t>(vocab) * hidden, 0.01f);
  auto* dw = upload_f32(arena, dw0);
  auto* loss_sum = arena.alloc<double>(1, "loss sum");
  cuda::lm_head_cross_entropy(gemm, row_loss, dh, dw, dh_in, dw_in, dt, n, hidden, vocab, grad_scale, chunk, 0);
  cuda::ce_loss_sum(loss_sum, row_loss, n, 0);
  double gpu_loss = 0.0;
  PEFT_CUDA_CHECK(cudaMemcpy(&gpu_loss, loss_sum, 8, cudaMemcpyDeviceToHost));
  t.close("loss sum" + tag, {static_cast<float>(gpu_loss)}, {static_cast<float>(ref.loss_sum)}, 1e-4);
  const Floats rl = download_f32(row_loss, n);
  bool ignored_zero = true;
  for (int i = 0; i < n; ++i) ignored_zero = ignored_zero && (targets[i] >= 0 || rl[i] == 0.0f);
  t.expect(ignored_zero, "ignored rows: loss 0" + tag);
  t.close("dh = dlogits W (ignored rows zero)" + tag, download_bf16(dh, n * hidden), dh_ref, 1e-2);
  Floats dw_ref = ref.dw;
  for (std::size_t i = 0; i < dw_ref.size(); ++i) dw_ref[i] += dw0[i];
  t.close("dW += dlogits^T h (fp32)" + tag, download_f32(dw, dw_ref.size()), dw_ref, 1e-2);

  // loss only (evaluation): same loss, nothing else written
  poison(row_loss, n);
  cuda::lm_head_cross_entropy(gemm, row_loss, nullptr, nullptr, dh_in, dw_in, dt, n, hidden, vocab, 0.0f, chunk, 0);
  cuda::ce_loss_sum(loss_sum, row_loss, n, 0);
  PEFT_CUDA_CHECK(cudaMemcpy(&gpu_loss, loss_sum, 8, cudaMemcpyDeviceToHost));
  t.close("loss only (grad_scale = 0)" + tag, {static_cast<float>(gpu_loss)}, {static_cast<float>(ref.loss_sum)}, 1e-4);

  // gather the labelled rows, and scatter them back
  auto* rows = upload(arena, lab_rows);
  auto* packed = alloc_poisoned<cuda::bf16>(arena, nl * hidden);
  cuda::gather_rows(packed, dh_in, rows, nl, hidden, 0);
  t.close("gather_rows (exact)" + tag, download_bf16(packed, nl * hidden), h_lab, 0.0);
  auto* back = alloc_poisoned<cuda::bf16>(arena, n * hidden);
  PEFT_CUDA_CHECK(cudaMemset(back, 0, n * hidden * 2));
  cuda::scatter_rows(back, packed, rows, nl, hidden, 0);
  Floats scattered(n * hidden, 0.0f);
  for (int j = 0; j < nl; ++j)
    std::copy(h_lab.begin() + j * hidden, h_lab.begin() + (j + 1) * hidden, scattered.begin() + lab_rows[j] * hidden);
  t.close("scatter_rows (exact)" + tag, download_bf16(back, n * hidden), scattered, 0.0);
}

int test_main(int argc, char** argv) {
  return run_test(argc, argv, "cross_entropy (chunked lm_head)", [](TestContext& t) {
    cuda::DeviceArena arena(t.small ? (std::size_t{64} << 20) : (std::size_t{3} << 30));
    cuda::Gemm gemm(arena);
    if (t.small) {
      run_case(t, arena, gemm, 9, 64, 203, 4);
    } else {
      run_case(t, arena, gemm, 100, 256, 5003, 32);
      run_case(t, arena, gemm, 70, 896, 32768, 64);
      // 7B-shaped timing: 2048 labelled rows over the 152k vocabulary in 512-row chunks
      const int n = 2048, hidden = 3584, vocab = 152064;
      const std::size_t m0 = arena.mark();
      auto* h = arena.alloc<cuda::bf16>(static_cast<std::size_t>(n) * hidden, "h");
      auto* w = arena.alloc<cuda::bf16>(static_cast<std::size_t>(vocab) * hidden, "w");
      fill_random_bf16(h, static_cast<std::size_t>(n) * hidden, 3u, 1.0f);
      fill_random_bf16(w, static_cast<std::size_t>(vocab) * hidden, 4u, 0.02f);
      std::vector<std::int32_t> targets(n);
      for (auto& x : targets) x = t.uniform_int(0, vocab - 1);
      auto* dt = upload(arena, targets);
      cuda::LogitsChunk chunk{nullptr, 512, cuda::LogitsChunk::ld_for(vocab)};
      chunk.data = arena.alloc<cuda::bf16>(static_cast<std::size_t>(chunk.rows) * chunk.ld, "logits chunk");
      auto* row_loss = arena.alloc<float>(n, "row loss");
      auto* dh = arena.alloc<cuda::bf16>(static_cast<std::size_t>(n) * hidden, "dh");
      const float ms = median_ms([&] {
        cuda::lm_head_cross_entropy(gemm, row_loss, dh, nullptr, h, w, dt, n, hidden, vocab, 1.0f / n, chunk, 0);
      });
      std::printf("  timing: lm_head+CE fwd+dh, 2048 x 3584 x 152064, 512-row chunks: %.3f ms (%.0f TFLOP/s on the 2 GEMMs)\n",
                  ms, 4.0 * n * hidden * vocab / (ms * 1e-3) / 1e12);
      arena.release(m0);
    }
    std::printf("  arena high-water: %zu bytes\n", arena.high_water());
  });
}

}  // namespace peft::cuda_test

int main(int argc, char** argv) { return peft::cuda_test::test_main(argc, argv); }
