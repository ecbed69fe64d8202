// cuDNN's fused attention (kernels/cuda/attention_cudnn.cuh) held to the CPU reference and to our
// kernels: out, the log-sum-exp it keeps for the backward, dq, dk, dv, for one sample off the tile
// edges (520 tokens, GQA 2:1, d 128), two packed samples of one length (its [B, H, S, D] view of
// our rows and the [heads, tokens] statistics, GQA 7:1, d 64), packed samples of different lengths
// (ragged offsets and padding mask; lengths 1 and 37 among them), with nothing written past the
// last token, and the 7B shape (28/4 heads, d 128: 2048 tokens; 1500 + 548) against
// attention_forward_own / attention_backward_own. The two implementations' statistics agree
// (ragged batches keep them as [tokens, heads], compared transposed) and, for samples of one length
// on cuDNN's tiles, are interchangeable (our backward from cuDNN's forward must equal cuDNN's
// backward); what cuDNN is not asked for (samples all shorter than the threshold) runs our kernels through the same entry
// points; a graph-captured forward + backward replays to the eager results. Tolerances: 1e-2
// relative L2 on bf16 outputs as test_attention.cu, 1e-4 on the fp32 statistics, 1e-3 between
// replay and eager (cuDNN's dQ accumulates with atomics). Then times both at the 7B and 0.5B
// shapes, and prints what each graph build took. Built only where CMake found cuDNN and
// cudnn_frontend (tests/cuda/CMakeLists.txt).
#include <algorithm>

#include "cuda_test.cuh"
#include "peft/kernels/cuda/attention.cuh"
#include "peft/kernels/cuda/graph_capture.cuh"

namespace peft::cuda_test {

namespace {

struct Buffers {
  cuda::bf16 *q, *k, *v, *dout, *out, *dq, *dk, *dv;
  float *lse, *scratch;
  std::size_t nq, nk, nlse;
};

Buffers make_buffers(cuda::DeviceArena& arena, int tokens, cuda::AttentionDims d) {
  Buffers b{};
  b.nq = static_cast<std::size_t>(tokens) * d.heads * d.head_dim;
  b.nk = static_cast<std::size_t>(tokens) * d.kv_heads * d.head_dim;
  b.nlse = static_cast<std::size_t>(tokens) * d.heads;
  b.out = alloc_poisoned<cuda::bf16>(arena, b.nq);
  b.dq = alloc_poisoned<cuda::bf16>(arena, b.nq);
  b.dk = alloc_poisoned<cuda::bf16>(arena, b.nk);
  b.dv = alloc_poisoned<cuda::bf16>(arena, b.nk);
  b.lse = alloc_poisoned<float>(arena, b.nlse);
  b.scratch = alloc_poisoned<float>(arena, cuda::attention_backward_scratch_floats(tokens, d));
  return b;
}

cuda::VarlenBatch batch_of(cuda::DeviceArena& arena, const std::vector<int>& lengths) {
  std::vector<std::int32_t> cu{0};
  for (int l : lengths) cu.push_back(cu.back() + l);
  return {upload(arena, cu), static_cast<int>(lengths.size()), *std::max_element(lengths.begin(), lengths.end()),
          cu.back()};
}
cuda::VarlenBatch uniform_batch(cuda::DeviceArena& arena, int samples, int seq) {
  return batch_of(arena, std::vector<int>(samples, seq));
}

std::string tag(const std::vector<int>& lengths, cuda::AttentionDims d) {
  std::string s = " [len";
  for (int l : lengths) s += " " + std::to_string(l);
  return s + " h=" + std::to_string(d.heads) + "/" + std::to_string(d.kv_heads) + " d=" + std::to_string(d.head_dim) +
         "]";
}
std::string tag(int samples, int seq, cuda::AttentionDims d) { return tag(std::vector<int>(samples, seq), d); }

// Rows of this many tokens past each output stay poisoned: cuDNN writes nothing past `tokens`.
constexpr int kGuardTokens = 64;

// cuDNN's statistics in our [heads, tokens] layout (ragged batches keep them as [tokens, heads]).
Floats lse_as_ours(const float* lse, const cuda::VarlenBatch& b, int heads) {
  Floats v = download_f32(lse, static_cast<std::size_t>(b.tokens) * heads);
  if (!cuda::cudnn_attention_ragged(b)) return v;
  Floats o(v.size());
  for (int t = 0; t < b.tokens; ++t)
    for (int h = 0; h < heads; ++h) o[static_cast<std::size_t>(h) * b.tokens + t] = v[static_cast<std::size_t>(t) * heads + h];
  return o;
}

bool guard_intact(const cuda::bf16* p, std::size_t n, std::size_t guard) {
  std::vector<std::uint16_t> h(guard);
  PEFT_CUDA_CHECK(cudaDeviceSynchronize());
  PEFT_CUDA_CHECK(cudaMemcpy(h.data(), p + n, guard * 2, cudaMemcpyDeviceToHost));
  return std::all_of(h.begin(), h.end(), [](std::uint16_t x) { return x == 0xFFFF; });
}

// cuDNN against the CPU reference (samples of one length or of several).
void against_reference(TestContext& t, cuda::DeviceArena& arena, const std::vector<int>& lengths,
                       cuda::AttentionDims d) {
  const std::size_t m0 = arena.mark();
  std::vector<std::int64_t> cu{0};
  for (int l : lengths) cu.push_back(cu.back() + l);
  const int tokens = static_cast<int>(cu.back());
  const std::size_t nq = static_cast<std::size_t>(tokens) * d.heads * d.head_dim,
                    nk = static_cast<std::size_t>(tokens) * d.kv_heads * d.head_dim;
  const Floats q = t.normal(nq), k = t.normal(nk), v = t.normal(nk), dout = t.normal(nq);
  const AttentionRef ref = ref_attention(q, k, v, dout, d.heads, d.kv_heads, d.head_dim, cu);
  Buffers b = make_buffers(arena, tokens + kGuardTokens, d);
  b.q = upload_bf16(arena, q), b.k = upload_bf16(arena, k), b.v = upload_bf16(arena, v), b.dout = upload_bf16(arena, dout);
  const cuda::VarlenBatch batch = batch_of(arena, lengths);
  const std::string s = tag(lengths, d);
  t.expect(cuda::cudnn_attention_forward(b.out, b.lse, b.q, b.k, b.v, d, batch, 0), "cuDNN serves forward" + s);
  t.close("cudnn forward out" + s, download_bf16(b.out, nq), ref.out, 1e-2);
  const bool served =
      cuda::cudnn_attention_backward(b.dq, b.dk, b.dv, b.scratch, b.dout, b.out, b.q, b.k, b.v, b.lse, d, batch, 0);
  t.expect(served, "cuDNN serves backward" + s);
  t.close("cudnn backward dq" + s, download_bf16(b.dq, nq), ref.dq, 1e-2);
  t.close("cudnn backward dk" + s, download_bf16(b.dk, nk), ref.dk, 1e-2);
  t.close("cudnn backward dv" + s, download_bf16(b.dv, nk), ref.dv, 1e-2);
  const std::size_t gq = static_cast<std::size_t>(kGuardTokens) * d.heads * d.head_dim,
                    gk = static_cast<std::size_t>(kGuardTokens) * d.kv_heads * d.head_dim;
  t.expect(guard_intact(b.out, nq, gq) && guard_intact(b.dq, nq, gq) && guard_intact(b.dk, nk, gk) &&
               guard_intact(b.dv, nk, gk),
           "nothing written past the last token" + s);
  // The statistics against our kernel's on the same inputs.
  auto* own_lse = alloc_poisoned<float>(arena, b.nlse);
  auto* own_out = alloc_poisoned<cuda::bf16>(arena, nq);
  cuda::attention_forward_own(own_out, own_lse, b.q, b.k, b.v, d, batch, 0);
  const std::size_t nlse = static_cast<std::size_t>(tokens) * d.heads;
  t.close("cudnn lse = ours" + s, lse_as_ours(b.lse, batch, d.heads), download_f32(own_lse, nlse), 1e-4);
  arena.release(m0);
}

// cuDNN against our kernels at a model's shape, and each implementation's backward from the other's
// forward.
void against_own(TestContext& t, cuda::DeviceArena& arena, const std::vector<int>& lengths, cuda::AttentionDims d) {
  const std::size_t m0 = arena.mark();
  const cuda::VarlenBatch batch = batch_of(arena, lengths);
  const int tokens = batch.tokens;
  Buffers c = make_buffers(arena, tokens, d), o = make_buffers(arena, tokens, d);
  auto* q = arena.alloc<cuda::bf16>(c.nq, "q");
  auto* k = arena.alloc<cuda::bf16>(c.nk, "k");
  auto* v = arena.alloc<cuda::bf16>(c.nk, "v");
  auto* dout = arena.alloc<cuda::bf16>(c.nq, "dout");
  fill_random_bf16(q, c.nq, 11u, 1.0f);
  fill_random_bf16(k, c.nk, 12u, 1.0f);
  fill_random_bf16(v, c.nk, 13u, 1.0f);
  fill_random_bf16(dout, c.nq, 14u, 1.0f);
  const std::string s = tag(lengths, d);
  t.expect(cuda::cudnn_attention_forward(c.out, c.lse, q, k, v, d, batch, 0), "cuDNN serves forward" + s);
  t.expect(cuda::cudnn_attention_backward(c.dq, c.dk, c.dv, c.scratch, dout, c.out, q, k, v, c.lse, d, batch, 0),
           "cuDNN serves backward" + s);
  cuda::attention_forward_own(o.out, o.lse, q, k, v, d, batch, 0);
  t.close("cudnn out = ours" + s, download_bf16(c.out, c.nq), download_bf16(o.out, c.nq), 1e-2);
  const std::size_t nlse = static_cast<std::size_t>(tokens) * d.heads;
  t.close("cudnn lse = ours" + s, lse_as_ours(c.lse, batch, d.heads), download_f32(o.lse, nlse), 1e-4);
  cuda::attention_backward_own(o.dq, o.dk, o.dv, o.scratch, dout, o.out, q, k, v, o.lse, d, batch, 0);
  t.close("cudnn dq = ours" + s, download_bf16(c.dq, c.nq), download_bf16(o.dq, c.nq), 1e-2);
  t.close("cudnn dk = ours" + s, download_bf16(c.dk, c.nk), download_bf16(o.dk, c.nk), 1e-2);
  t.close("cudnn dv = ours" + s, download_bf16(c.dv, c.nk), download_bf16(o.dv, c.nk), 1e-2);
  // Our backward from cuDNN's forward (out, lse) equals cuDNN's backward (statistics in our layout:
  // samples of one length on cuDNN's tiles).
  if (!cuda::cudnn_attention_ragged(batch)) {
    cuda::attention_backward_own(o.dq, o.dk, o.dv, o.scratch, dout, c.out, q, k, v, c.lse, d, batch, 0);
    t.close("ours from cuDNN's forward: dq" + s, download_bf16(o.dq, c.nq), download_bf16(c.dq, c.nq), 1e-2);
    t.close("ours from cuDNN's forward: dk" + s, download_bf16(o.dk, c.nk), download_bf16(c.dk, c.nk), 1e-2);
  }
  // Captured into a CUDA graph (as the model's steps are) and replayed: the same results.
  cudaStream_t stream = nullptr;
  PEFT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  poison(o.out, c.nq), poison(o.lse, nlse), poison(o.dq, c.nq), poison(o.dk, c.nk);
  bool served = true;
  cudaGraphExec_t exec = cuda::capture_graph(stream, [&] {
    served = cuda::cudnn_attention_forward(o.out, o.lse, q, k, v, d, batch, stream) &&
             cuda::cudnn_attention_backward(o.dq, o.dk, o.dv, o.scratch, dout, o.out, q, k, v, o.lse, d, batch, stream);
  });
  PEFT_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  PEFT_CUDA_CHECK(cudaStreamSynchronize(stream));
  t.expect(served, "cuDNN serves inside a graph capture" + s);
  t.close("graph replay out = eager" + s, download_bf16(o.out, c.nq), download_bf16(c.out, c.nq), 1e-6);
  t.close("graph replay dq = eager" + s, download_bf16(o.dq, c.nq), download_bf16(c.dq, c.nq), 1e-3);
  t.close("graph replay dk = eager" + s, download_bf16(o.dk, c.nk), download_bf16(c.dk, c.nk), 1e-3);
  PEFT_CUDA_CHECK(cudaGraphExecDestroy(exec));
  PEFT_CUDA_CHECK(cudaStreamDestroy(stream));
  arena.release(m0);
}

// Batches cuDNN is not asked for run our kernels through attention_forward / attention_backward.
void declines(TestContext& t, cuda::DeviceArena& arena) {
  const std::size_t m0 = arena.mark();
  const cuda::AttentionDims d{4, 2, 128};
  Buffers b = make_buffers(arena, 1024, d);
  b.q = arena.alloc<cuda::bf16>(b.nq, "q"), b.k = arena.alloc<cuda::bf16>(b.nk, "k"),
  b.v = arena.alloc<cuda::bf16>(b.nk, "v");
  fill_random_bf16(b.q, b.nq, 1u, 1.0f);
  fill_random_bf16(b.k, b.nk, 2u, 1.0f);
  fill_random_bf16(b.v, b.nk, 3u, 1.0f);
  const cuda::VarlenBatch short_batch = batch_of(arena, {256, 500, 268});
  t.expect(!cuda::cudnn_attention_forward(b.out, b.lse, b.q, b.k, b.v, d, short_batch, 0),
           "samples all under 512 tokens (PEFT_CUDNN_ATTENTION_MIN_SEQ): not cuDNN's");
  auto* own = alloc_poisoned<cuda::bf16>(arena, b.nq);
  cuda::attention_forward(b.out, b.lse, b.q, b.k, b.v, d, short_batch, 0);
  cuda::attention_forward_own(own, b.lse, b.q, b.k, b.v, d, short_batch, 0);
  t.close("declined batch: entry point = ours", download_bf16(b.out, b.nq), download_bf16(own, b.nq), 0.0);
  arena.release(m0);
}

void time_shape(cuda::DeviceArena& arena, const char* model, int seq, cuda::AttentionDims d) {
  const std::size_t m0 = arena.mark();
  Buffers b = make_buffers(arena, seq, d);
  b.q = arena.alloc<cuda::bf16>(b.nq, "q"), b.k = arena.alloc<cuda::bf16>(b.nk, "k"),
  b.v = arena.alloc<cuda::bf16>(b.nk, "v"), b.dout = arena.alloc<cuda::bf16>(b.nq, "dout");
  fill_random_bf16(b.q, b.nq, 5u, 1.0f);
  fill_random_bf16(b.k, b.nk, 6u, 1.0f);
  fill_random_bf16(b.v, b.nk, 7u, 1.0f);
  fill_random_bf16(b.dout, b.nq, 8u, 1.0f);
  const cuda::VarlenBatch batch = uniform_batch(arena, 1, seq);
  const double flop = 4.0 * d.heads * d.head_dim * (static_cast<double>(seq) * seq / 2);  // causal QK^T + PV
  for (bool own : {true, false}) {
    const float fwd = median_ms([&] {
      if (own) cuda::attention_forward_own(b.out, b.lse, b.q, b.k, b.v, d, batch, 0);
      else cuda::cudnn_attention_forward(b.out, b.lse, b.q, b.k, b.v, d, batch, 0);
    }, 2, 10);
    const float bwd = median_ms([&] {
      if (own) cuda::attention_backward_own(b.dq, b.dk, b.dv, b.scratch, b.dout, b.out, b.q, b.k, b.v, b.lse, d, batch, 0);
      else cuda::cudnn_attention_backward(b.dq, b.dk, b.dv, b.scratch, b.dout, b.out, b.q, b.k, b.v, b.lse, d, batch, 0);
    }, 2, 10);
    std::printf("  timing: %s %s attention one layer, seq %d: forward %.3f ms (%.1f TFLOP/s), backward %.3f ms "
                "(%.1f TFLOP/s, counting 2.5x the forward's FLOPs)\n",
                own ? "ours " : "cuDNN", model, seq, fwd, flop / (fwd * 1e-3) / 1e12, bwd, 2.5 * flop / (bwd * 1e-3) / 1e12);
  }
  arena.release(m0);
}

}  // namespace

int test_main(int argc, char** argv) {
  bool time_only = false;
  for (int i = 1; i < argc; ++i) time_only = time_only || std::string(argv[i]) == "--time";
  return run_test(argc, argv, "attention through cuDNN (attention_cudnn.cuh)", [time_only](TestContext& t) {
    cuda::DeviceArena arena(1u << 30);
    if (!time_only) {
      against_reference(t, arena, {520}, {4, 2, 128});
      against_reference(t, arena, {512, 512}, {14, 2, 64});
      against_reference(t, arena, {600, 37, 1, 513}, {4, 2, 128});  // ragged: offsets and padding mask
      against_reference(t, arena, {130, 700}, {14, 2, 64});
      against_own(t, arena, {2048}, {28, 4, 128});
      against_own(t, arena, {1500, 548}, {28, 4, 128});
      against_own(t, arena, {600, 600}, {28, 4, 128});  // one length off the 128-row tiles
      declines(t, arena);
    }
    time_shape(arena, "7B", 2048, {28, 4, 128});
    time_shape(arena, "7B", 4096, {28, 4, 128});
    time_shape(arena, "0.5B", 2048, {14, 2, 64});
    if (!time_only) {  // more lengths, to see what a new shape costs to build
      for (int seq : {600, 700, 1000, 1500}) against_own(t, arena, {seq}, {28, 4, 128});
    }
    auto& r = cuda::detail::CudnnAttention::for_current_device();
    std::printf("  cuDNN graph builds, ms:");
    for (double ms : r.build_ms()) std::printf(" %.0f", ms);
    std::printf("\n");
  });
}

}  // namespace peft::cuda_test

int main(int argc, char** argv) { return peft::cuda_test::test_main(argc, argv); }
