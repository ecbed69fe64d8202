// Embedding lookup (exact: a bf16 row copy, so the error must be 0), the NaN row for an
// out-of-range id, host validation naming the position, and the full-fine-tuning backward
// (fp32 atomics; repeated tokens add up) against a host scatter-add, tolerance 1e-6.
#include "cuda_test.cuh"
#include "peft/kernels/cuda/embedding.cuh"

namespace peft::cuda_test {

int test_main(int argc, char** argv) {
  return run_test(argc, argv, "embedding", [](TestContext& t) {
    cuda::DeviceArena arena(256u << 20);
    const int vocab = t.small ? 50 : 5003, hidden = t.small ? 64 : 896, tokens = t.small ? 9 : 257;
    const Floats w = t.normal(static_cast<std::size_t>(vocab) * hidden);
    std::vector<std::int32_t> ids(tokens);
    for (auto& id : ids) id = t.uniform_int(0, vocab - 1);
    ids[tokens - 1] = ids[0];  // a repeated token
    auto* dw_ = upload_bf16(arena, w);
    auto* dids = upload(arena, ids);
    auto* x = alloc_poisoned<cuda::bf16>(arena, tokens * hidden);
    cuda::embedding_forward(x, dids, dw_, tokens, vocab, hidden, 0);
    Floats ref(tokens * hidden);
    for (int i = 0; i < tokens; ++i)
      for (int c = 0; c < hidden; ++c) ref[i * hidden + c] = w[static_cast<std::size_t>(ids[i]) * hidden + c];
    t.close("forward lookup (exact)", download_bf16(x, tokens * hidden), ref, 0.0);

    const Floats dx = t.normal(tokens * hidden);
    const Floats dw0 = t.normal_f32(static_cast<std::size_t>(vocab) * hidden);
    auto* ddx = upload_bf16(arena, dx);
    auto* grad = upload_f32(arena, dw0);
    cuda::embedding_backward(grad, dids, ddx, tokens, vocab, hidden, 0);
    Floats dw_ref = dw0;
    for (int i = 0; i < tokens; ++i)
      for (int c = 0; c < hidden; ++c) dw_ref[static_cast<std::size_t>(ids[i]) * hidden + c] += dx[i * hidden + c];
    t.close("backward dW += scatter(dx) (fp32)", download_f32(grad, dw_ref.size()), dw_ref, 1e-6);

    std::vector<std::int32_t> bad = ids;
    bad[1] = vocab;
    std::string msg;
    try {
      cuda::validate_token_ids(bad, vocab);
    } catch (const Error& e) {
      msg = e.what();
    }
    t.expect(msg.find("at position 1") != std::string::npos, "validation names the bad position");
    auto* dbad = upload(arena, bad);
    cuda::embedding_forward(x, dbad, dw_, tokens, vocab, hidden, 0);
    const Floats xb = download_bf16(x, tokens * hidden);
    t.expect(std::isnan(xb[hidden]) && std::isfinite(xb[0]), "out-of-range id yields a NaN row, nothing read outside W");
  });
}

}  // namespace peft::cuda_test

int main(int argc, char** argv) { return peft::cuda_test::test_main(argc, argv); }
