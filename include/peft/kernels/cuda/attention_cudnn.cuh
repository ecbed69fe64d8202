// Causal GQA attention through cuDNN's fused flash attention (its graph API, written with NVIDIA's
// header-only cudnn_frontend), used by attention.cuh where it serves the shape: on Hopper it runs
// wgmma/TMA kernels that our mma.sync kernels (attention_mma.cuh) do not reach (issue 14, item 2).
// It is optional: built only where CMake found cudnn_frontend.h and cuDNN 9 (PEFT_WITH_CUDNN), and
// at run time it declines, and our kernels run, when cuDNN is absent or refuses the shape.
//
// What it serves: batches whose longest sample has at least `cudnn_attention_min_seq()` tokens.
// Samples of one length on cuDNN's 128-row tiles are its [B, H, S, D] with strides over our packed
// [tokens, heads * D] rows; every other batch is ragged (cudnn_attention_ragged): cuDNN's offsets
// and padding mask, each sample's start and length computed on the device from cu_seqlens, so the
// step stays capturable. Short samples stay on our kernels: attention is a small share of their
// step, and a cuDNN graph is built per shape (the 9.14 library has no dynamic shapes for attention:
// ~0.5-1 s for each of the first graphs of a process, 42-80 ms for later ones, measured on the
// H200), at most PEFT_CUDNN_ATTENTION_MAX_GRAPHS of them.
//
// Statistics: cuDNN keeps ours for the backward, the natural-log log-sum-exp of the scaled scores,
// fp32. Unragged they are laid out as ours, [heads, tokens], so a forward by one implementation and a
// backward by the other agree (the test mixes them). Ragged they are cuDNN's [tokens, heads]: its
// backward, told the token count, then sizes its workspace by tokens (by samples x longest
// otherwise, which did not fit our scratch), and such a shape's forward runs on cuDNN only when its
// backward will too.
//
// Workspace: the backward's is the caller's attention scratch (the arena's), and a plan that wants
// more declines; the forward's (none at the shapes measured) a buffer of this runner's. A shape
// never built is not built while a CUDA graph is being captured (building synchronises); it runs
// our kernels in that replay instead.
//
// PEFT_ATTENTION=own turns it off (A/B, or to rule it out); =cudnn makes a refusal an error.
#pragma once
#ifdef PEFT_WITH_CUDNN
#include <cudnn_frontend.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "peft/kernels/cuda/attention_varlen.cuh"
#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/device_kernels.cuh"

namespace peft::cuda {

enum class AttentionImpl { automatic, own, cudnn };

// PEFT_ATTENTION: own | cudnn | auto (default).
inline AttentionImpl attention_impl_requested() {
  static const AttentionImpl impl = [] {
    const char* e = std::getenv("PEFT_ATTENTION");
    const std::string v = e ? e : "auto";
    if (v == "own") return AttentionImpl::own;
    if (v == "cudnn") return AttentionImpl::cudnn;
    if (v != "auto" && !v.empty())
      throw Error("PEFT_ATTENTION='" + v + "': expected own, cudnn or auto");
    return AttentionImpl::automatic;
  }();
  return impl;
}

// Samples shorter than this run our kernels (PEFT_CUDNN_ATTENTION_MIN_SEQ).
inline int cudnn_attention_min_seq() {
  static const int n = env_tuning_knob("PEFT_CUDNN_ATTENTION_MIN_SEQ", 512);
  return n;
}

// At most this many graphs are built in a process (PEFT_CUDNN_ATTENTION_MAX_GRAPHS); shapes after
// that run our kernels, so a dataset of many distinct long lengths cannot spend its time building.
inline int cudnn_attention_max_graphs() {
  static const int n = env_tuning_knob("PEFT_CUDNN_ATTENTION_MAX_GRAPHS", 64);
  return n;
}

namespace detail {

namespace fe = cudnn_frontend;

enum CudnnAttentionUid : std::int64_t {
  kUidQ = 1, kUidK, kUidV, kUidO, kUidStats, kUidDO, kUidDQ, kUidDK, kUidDV,
  kUidSeqLen, kUidOffsetQ, kUidOffsetKv, kUidOffsetStats  // samples of different lengths
};

// For samples of different lengths: each sample's length and where it starts in q / out, in k / v
// and in lse (elements), from cu_seqlens. One thread a sample.
__global__ void cudnn_ragged_offsets_kernel(const std::int32_t* __restrict__ cu, int samples, std::int64_t q_row,
                                            std::int64_t kv_row, std::int64_t stats_row, std::int64_t* __restrict__ off,
                                            std::int32_t* __restrict__ seqlen) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i > samples) return;
  off[i] = cu[i] * q_row;
  off[samples + 1 + i] = cu[i] * kv_row;
  off[2 * (samples + 1) + i] = cu[i] * stats_row;
  if (i < samples) seqlen[i] = cu[i + 1] - cu[i];
}

// The strides of a [tokens, heads * D] row-major buffer viewed as [B, heads, S, D].
inline std::vector<std::int64_t> packed_strides(std::int64_t s, std::int64_t heads, std::int64_t d) {
  return {s * heads * d, d, heads * d, 1};
}

class CudnnAttention {
 public:
  struct Shape {
    int batch, seq, heads, kv_heads, head_dim;
    bool backward;
    bool ragged;  // samples of different lengths: seq is the longest, tokens their sum
    int tokens;
    auto operator<=>(const Shape&) const = default;
  };

  static CudnnAttention& for_current_device() {
    static std::map<int, std::unique_ptr<CudnnAttention>> runners;
    int device = 0;
    PEFT_CUDA_CHECK(cudaGetDevice(&device));
    auto& r = runners[device];
    if (!r) r.reset(new CudnnAttention());
    return *r;
  }

  // Runs the pass and returns true, or returns false (nothing launched) when cuDNN declines.
  bool forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const Shape& s,
               std::size_t backward_scratch_bytes, const std::int32_t* cu_seqlens, cudaStream_t stream) {
    Plan* p = plan(s, stream);
    if (!p || !ragged_ready(s, stream) || (s.ragged && !pair_served(s, backward_scratch_bytes, stream))) return false;
    if (p->workspace > static_cast<std::int64_t>(fwd_workspace_bytes_)) {
      if (capturing(stream)) return false;
      if (fwd_workspace_) retired_.push_back(fwd_workspace_);
      PEFT_CUDA_CHECK(cudaMalloc(&fwd_workspace_, static_cast<std::size_t>(p->workspace)));
      fwd_workspace_bytes_ = static_cast<std::size_t>(p->workspace);
    }
    std::unordered_map<std::int64_t, void*> pack{{kUidQ, const_cast<bf16*>(q)}, {kUidK, const_cast<bf16*>(k)},
                                                 {kUidV, const_cast<bf16*>(v)}, {kUidO, out}, {kUidStats, lse}};
    add_ragged(s, pack, cu_seqlens, stream);
    execute(*p, pack, fwd_workspace_, stream, "forward");
    return true;
  }

  bool backward(bf16* dq, bf16* dk, bf16* dv, void* scratch, std::size_t scratch_bytes, const bf16* dout,
                const bf16* out, const bf16* q, const bf16* k, const bf16* v, const float* lse, const Shape& s,
                const std::int32_t* cu_seqlens, cudaStream_t stream) {
    if (s.ragged) {  // served exactly when its forward was: the statistics are in cuDNN's layout
      Shape f = s;
      f.backward = false;
      if (auto it = paired_.find(f); it == paired_.end() || !it->second) return false;
    }
    Plan* p = plan(s, stream);
    if (!p || p->workspace > static_cast<std::int64_t>(scratch_bytes)) return decline(s, p, scratch_bytes);
    if (!ragged_ready(s, stream)) return false;
    std::unordered_map<std::int64_t, void*> pack{
        {kUidQ, const_cast<bf16*>(q)},     {kUidK, const_cast<bf16*>(k)},    {kUidV, const_cast<bf16*>(v)},
        {kUidO, const_cast<bf16*>(out)},   {kUidStats, const_cast<float*>(lse)}, {kUidDO, const_cast<bf16*>(dout)},
        {kUidDQ, dq},                      {kUidDK, dk},                     {kUidDV, dv}};
    add_ragged(s, pack, cu_seqlens, stream);
    execute(*p, pack, scratch, stream, "backward");
    return true;
  }

  // How long each graph build took, in order (the test reports them), and how many passes cuDNN ran
  // (the model tests check it served).
  const std::vector<double>& build_ms() const { return build_ms_; }
  long long passes_run() const { return passes_; }

 private:
  struct Plan {
    std::shared_ptr<fe::graph::Graph> graph;
    std::int64_t workspace = 0;
  };

  CudnnAttention() = default;

  // A ragged forward runs on cuDNN only if its backward can too (built, and its workspace fits the
  // scratch the backward will be given): decided once per shape, so forward and backward agree.
  bool pair_served(const Shape& s, std::size_t backward_scratch_bytes, cudaStream_t stream) {
    if (auto it = paired_.find(s); it != paired_.end()) return it->second;
    if (capturing(stream)) return false;
    Shape b = s;
    b.backward = true;
    Plan* p = plan(b, stream);
    const bool ok = p && p->workspace <= static_cast<std::int64_t>(backward_scratch_bytes);
    if (p && !ok) decline(b, p, backward_scratch_bytes);
    paired_[s] = ok;
    return ok;
  }

  // The runner's buffer for the ragged arrays holds `samples`; grown only outside a capture.
  bool ragged_ready(const Shape& s, cudaStream_t stream) {
    if (!s.ragged || s.batch <= ragged_capacity_) return true;
    if (capturing(stream)) return false;
    if (ragged_) retired_.push_back(ragged_);
    const int cap = std::max(64, 2 * s.batch);
    PEFT_CUDA_CHECK(cudaMalloc(&ragged_, 3 * (cap + 1) * sizeof(std::int64_t) + cap * sizeof(std::int32_t)));
    ragged_capacity_ = cap;
    return true;
  }
  void add_ragged(const Shape& s, std::unordered_map<std::int64_t, void*>& pack, const std::int32_t* cu,
                  cudaStream_t stream) {
    if (!s.ragged) return;
    auto* off = static_cast<std::int64_t*>(ragged_);
    auto* seqlen = reinterpret_cast<std::int32_t*>(off + 3 * (s.batch + 1));
    cudnn_ragged_offsets_kernel<<<(s.batch + 1 + 127) / 128, 128, 0, stream>>>(
        cu, s.batch, static_cast<std::int64_t>(s.heads) * s.head_dim, static_cast<std::int64_t>(s.kv_heads) * s.head_dim,
        s.heads, off, seqlen);
    PEFT_CUDA_CHECK_LAUNCH("cudnn_ragged_offsets_kernel");
    pack[kUidOffsetQ] = off;
    pack[kUidOffsetKv] = off + (s.batch + 1);
    pack[kUidOffsetStats] = off + 2 * (s.batch + 1);
    pack[kUidSeqLen] = seqlen;
  }

  static bool capturing(cudaStream_t stream) {
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    PEFT_CUDA_CHECK(cudaStreamIsCapturing(stream, &st));
    return st != cudaStreamCaptureStatusNone;
  }

  // nullptr when cuDNN cannot serve the shape (said once per shape on stderr).
  Plan* plan(const Shape& s, cudaStream_t stream) {
    if (auto it = plans_.find(s); it != plans_.end()) return it->second.graph ? &it->second : nullptr;
    if (capturing(stream)) return nullptr;  // building synchronises; the next eager step builds it
    if (built_ >= cudnn_attention_max_graphs()) return nullptr;  // bounded build time (see the top)
    if (!handle_ready()) return nullptr;
    const auto t0 = std::chrono::steady_clock::now();
    Plan p;
    const std::string why = build(s, p);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    build_ms_.push_back(ms);
    if (!why.empty()) {
      p.graph.reset();
      refuse(s, "cuDNN refused the graph: " + why);
    } else {
      ++built_;
    }
    return plans_.emplace(s, std::move(p)).first->second.graph ? &plans_.at(s) : nullptr;
  }

  // An empty string, or why cuDNN would not build the graph.
  std::string build(const Shape& s, Plan& p) {
    try {
      p.graph = s.backward ? backward_graph(s) : forward_graph(s);
      auto st = p.graph->build(handle_, {fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK});
      if (!st.is_good()) return st.get_message();
      if (auto ws = p.graph->get_workspace_size(p.workspace); !ws.is_good()) return ws.get_message();
      return {};
    } catch (const std::exception& e) {
      return e.what();
    }
  }

  bool handle_ready() {
    if (handle_) return true;
    if (handle_failed_) return false;
    const cudnnStatus_t st = cudnnCreate(&handle_);
    if (st != CUDNN_STATUS_SUCCESS) {
      handle_ = nullptr;
      handle_failed_ = true;
      std::fprintf(stderr, "[cuda] cuDNN unavailable (%s): attention runs peft's own kernels\n",
                   cudnnGetErrorString(st));
      if (attention_impl_requested() == AttentionImpl::cudnn)
        throw Error(std::string("PEFT_ATTENTION=cudnn but cuDNN could not start: ") + cudnnGetErrorString(st));
    }
    return handle_ != nullptr;
  }

  static std::string describe(const Shape& s) {
    return std::string(s.backward ? "backward" : "forward") + (s.ragged ? " ragged" : "") + " batch " +
           std::to_string(s.batch) + " x seq " + std::to_string(s.seq) + " (" + std::to_string(s.tokens) +
           " tokens), heads " + std::to_string(s.heads) + "/" + std::to_string(s.kv_heads) +
           ", head_dim " + std::to_string(s.head_dim);
  }

  static void refuse(const Shape& s, const std::string& why) {
    if (attention_impl_requested() == AttentionImpl::cudnn)
      throw Error("PEFT_ATTENTION=cudnn: attention " + describe(s) + ": " + why);
    std::fprintf(stderr, "[cuda] attention %s: %s; peft's own kernels serve it\n", describe(s).c_str(), why.c_str());
  }

  bool decline(const Shape& s, const Plan* p, std::size_t scratch_bytes) {
    if (p && warned_workspace_.insert(s).second)
      refuse(s, "cuDNN wants " + std::to_string(p->workspace) + " bytes of workspace, the scratch has " +
                    std::to_string(scratch_bytes));
    return false;
  }

  void execute(const Plan& p, std::unordered_map<std::int64_t, void*>& pack, void* workspace, cudaStream_t stream,
               const char* pass) {
    if (cudnnSetStream(handle_, stream) != CUDNN_STATUS_SUCCESS) throw Error("cudnnSetStream failed");
    auto st = p.graph->execute(handle_, pack, workspace);
    if (!st.is_good()) throw Error(std::string("cuDNN attention ") + pass + " failed: " + st.get_message());
    ++passes_;
  }

  static std::shared_ptr<fe::graph::Graph> new_graph() {
    auto g = std::make_shared<fe::graph::Graph>();
    g->set_io_data_type(fe::DataType_t::BFLOAT16)
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    return g;
  }

  // The graph's int tensors for samples of different lengths (nullptr when all are one length).
  struct Ragged {
    std::shared_ptr<fe::graph::Tensor_attributes> seqlen, off_q, off_kv, off_stats;
  };
  static Ragged ragged_tensors(fe::graph::Graph& g, const Shape& s) {
    if (!s.ragged) return {};
    auto int_tensor = [&](const char* name, std::int64_t uid, std::int64_t n, fe::DataType_t type) {
      return g.tensor(
          fe::graph::Tensor_attributes().set_name(name).set_uid(uid).set_dim({n, 1, 1, 1}).set_stride({1, 1, 1, 1}).set_data_type(type));
    };
    return {int_tensor("seq_len", kUidSeqLen, s.batch, fe::DataType_t::INT32),
            int_tensor("offset_q", kUidOffsetQ, s.batch + 1, fe::DataType_t::INT64),
            int_tensor("offset_kv", kUidOffsetKv, s.batch + 1, fe::DataType_t::INT64),
            int_tensor("offset_stats", kUidOffsetStats, s.batch + 1, fe::DataType_t::INT64)};
  }

  // Q, K, V (and for the backward O, dO) as graph inputs over our packed rows.
  static auto tensor(fe::graph::Graph& g, const char* name, std::int64_t uid, const Shape& s, int heads,
                     const std::shared_ptr<fe::graph::Tensor_attributes>& offset) {
    auto t = g.tensor(fe::graph::Tensor_attributes()
                          .set_name(name)
                          .set_uid(uid)
                          .set_dim({s.batch, heads, s.seq, s.head_dim})
                          .set_stride(packed_strides(s.seq, heads, s.head_dim)));
    if (offset) t->set_ragged_offset(offset);
    return t;
  }
  static void as_output(const std::shared_ptr<fe::graph::Tensor_attributes>& t, std::int64_t uid, const Shape& s,
                        int heads, const std::shared_ptr<fe::graph::Tensor_attributes>& offset) {
    t->set_output(true).set_uid(uid).set_dim({s.batch, heads, s.seq, s.head_dim}).set_stride(
        packed_strides(s.seq, heads, s.head_dim));
    if (offset) t->set_ragged_offset(offset);
  }
  // Samples of one length: lse [heads, tokens] as ours (sample b's row of head h at h * tokens +
  // b * seq). Ragged: [tokens, heads], cuDNN's packed layout, which its backward sizes its workspace
  // by (max_total_seq_len below); only cuDNN's own backward reads it (see `paired_`).
  static void stats_layout(fe::graph::Tensor_attributes& t, const Shape& s, const Ragged& r) {
    t.set_data_type(fe::DataType_t::FLOAT).set_dim({s.batch, s.heads, s.seq, 1});
    if (r.off_stats) {
      t.set_stride({static_cast<std::int64_t>(s.seq) * s.heads, 1, s.heads, 1}).set_ragged_offset(r.off_stats);
    } else {
      t.set_stride({s.seq, s.tokens, 1, 1});
    }
  }
  template <class Attributes>
  static void causal(Attributes& opts, const Shape& s, const Ragged& r) {
    opts.set_attn_scale(1.0f / std::sqrt(static_cast<float>(s.head_dim)))
        .set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT)
        .set_diagonal_band_right_bound(0);
    if (r.seqlen) opts.set_padding_mask(true).set_seq_len_q(r.seqlen).set_seq_len_kv(r.seqlen);
  }

  static std::shared_ptr<fe::graph::Graph> forward_graph(const Shape& s) {
    auto g = new_graph();
    const Ragged r = ragged_tensors(*g, s);
    auto q = tensor(*g, "Q", kUidQ, s, s.heads, r.off_q), k = tensor(*g, "K", kUidK, s, s.kv_heads, r.off_kv),
         v = tensor(*g, "V", kUidV, s, s.kv_heads, r.off_kv);
    auto opts = fe::graph::SDPA_attributes().set_name("peft_attention_forward").set_generate_stats(true);
    causal(opts, s, r);
    auto [o, stats] = g->sdpa(q, k, v, opts);
    as_output(o, kUidO, s, s.heads, r.off_q);
    stats->set_output(true).set_uid(kUidStats);
    stats_layout(*stats, s, r);
    return g;
  }

  static std::shared_ptr<fe::graph::Graph> backward_graph(const Shape& s) {
    auto g = new_graph();
    const Ragged r = ragged_tensors(*g, s);
    auto q = tensor(*g, "Q", kUidQ, s, s.heads, r.off_q), k = tensor(*g, "K", kUidK, s, s.kv_heads, r.off_kv),
         v = tensor(*g, "V", kUidV, s, s.kv_heads, r.off_kv), o = tensor(*g, "O", kUidO, s, s.heads, r.off_q),
         dout = tensor(*g, "dO", kUidDO, s, s.heads, r.off_q);
    fe::graph::Tensor_attributes stats_attr;
    stats_attr.set_name("Stats").set_uid(kUidStats);
    stats_layout(stats_attr, s, r);
    auto stats = g->tensor(stats_attr);
    auto opts = fe::graph::SDPA_backward_attributes().set_name("peft_attention_backward");
    causal(opts, s, r);
    if (s.ragged) opts.set_max_total_seq_len_q(s.tokens).set_max_total_seq_len_kv(s.tokens);  // workspace by tokens
    auto [dq, dk, dv] = g->sdpa_backward(q, k, v, o, dout, stats, opts);
    as_output(dq, kUidDQ, s, s.heads, r.off_q);
    as_output(dk, kUidDK, s, s.kv_heads, r.off_kv);
    as_output(dv, kUidDV, s, s.kv_heads, r.off_kv);
    return g;
  }

  cudnnHandle_t handle_ = nullptr;
  bool handle_failed_ = false;
  std::map<Shape, Plan> plans_;
  std::set<Shape> warned_workspace_;
  std::map<Shape, bool> paired_;  // ragged forward shapes: whether cuDNN serves the pair
  void* fwd_workspace_ = nullptr;
  std::size_t fwd_workspace_bytes_ = 0;
  std::vector<double> build_ms_;
  int built_ = 0;
  long long passes_ = 0;
  void* ragged_ = nullptr;  // offsets and lengths of samples of different lengths
  int ragged_capacity_ = 0;
  // Buffers outgrown, never freed: a CUDA graph captured with one still launches with its address.
  std::vector<void*> retired_;
};

}  // namespace detail

// Whether cuDNN sees the batch as ragged (offsets, padding mask, [tokens, heads] statistics).
// Samples of one length off cuDNN's 128-row tiles are ragged too: for them the 9.14 library's
// frontend would add a padding mask of its own that a CUDA graph does not capture (the replayed
// backward was wrong), where ours is computed by a kernel on the stream.
inline bool cudnn_attention_ragged(VarlenBatch b) {
  return static_cast<long long>(b.num_seqs) * b.max_seqlen != b.tokens || b.max_seqlen % 128 != 0;
}

namespace detail {

// The shape cuDNN is asked for, or nothing when the batch is not one it serves (see the top).
inline bool cudnn_attention_shape(AttentionDims d, VarlenBatch b, bool backward, CudnnAttention::Shape& s) {
  if (attention_impl_requested() == AttentionImpl::own) return false;
  if (b.num_seqs <= 0 || b.max_seqlen <= 0) return false;
  if (b.max_seqlen < cudnn_attention_min_seq() && attention_impl_requested() != AttentionImpl::cudnn) return false;
  s = {b.num_seqs, b.max_seqlen, d.heads, d.kv_heads, d.head_dim, backward, cudnn_attention_ragged(b), b.tokens};
  return true;
}

}  // namespace detail

// true: cuDNN computed out and lse; false: nothing was launched, run our kernels.
inline bool cudnn_attention_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                                    AttentionDims d, VarlenBatch b, cudaStream_t stream) {
  detail::CudnnAttention::Shape s{};
  if (!detail::cudnn_attention_shape(d, b, false, s)) return false;
  return detail::CudnnAttention::for_current_device().forward(
      out, lse, q, k, v, s, attention_backward_scratch_floats(b.tokens, d) * sizeof(float), b.cu_seqlens, stream);
}

// true: cuDNN wrote dq, dk, dv (using `scratch` as its workspace); false: run our kernels.
inline bool cudnn_attention_backward(bf16* dq, bf16* dk, bf16* dv, float* scratch, const bf16* dout, const bf16* out,
                                     const bf16* q, const bf16* k, const bf16* v, const float* lse, AttentionDims d,
                                     VarlenBatch b, cudaStream_t stream) {
  detail::CudnnAttention::Shape s{};
  if (!detail::cudnn_attention_shape(d, b, true, s)) return false;
  return detail::CudnnAttention::for_current_device().backward(
      dq, dk, dv, scratch, attention_backward_scratch_floats(b.tokens, d) * sizeof(float), dout, out, q, k, v, lse, s,
      b.cu_seqlens, stream);
}

inline constexpr bool cudnn_attention_built = true;

}  // namespace peft::cuda

#else

namespace peft::cuda {
inline constexpr bool cudnn_attention_built = false;
}  // namespace peft::cuda

#endif  // PEFT_WITH_CUDNN
