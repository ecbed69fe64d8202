// gemv_stream_probe: how close a chain of one-row products (the 7B decode step's weight stream, no
// norm, LoRA or epilogue) gets to HBM bandwidth, by how the weights are streamed (issue 16, item 6).
// A question to the hardware, not a test, asked before changing kernels/cuda/gemv.cuh.
//
//   source tools/gpu/gpu_build.sh   # then, with nvcc=/usr/local/cuda/bin/nvcc:
//   build_cuda_bench bench/gemv_stream_probe.cu build-probe/gemv_stream_probe && build-probe/gemv_stream_probe
//
// Variants, each launched with programmatic dependent launch as the decode step launches its kernels:
//   stream  a plain streaming read of the same bytes (the reference: what the chain could reach);
//   v0      gemv.cuh's scheme: a warp per row, 4 16-byte loads a lane in registers, 4 blocks of
//           8 warps an SM (64 registers), x in shared memory;
//   v1      a ring per warp in shared memory fed by cp.async (S stages of P loads a lane; the first
//           S - 1 requested before the PDL wait, since the weights are not the previous kernel's
//           output), rows strided over warps, or with "bal" the (row, 2 KB chunk) space split evenly
//           over warps (rows shared by two warps combined with atomics: timing only);
//   mixed   per projection the best v1 of a first run;
//   persist the whole chain in one persistent kernel, a grid barrier between projections.
// Prints, per variant, the chain's time (28 layers of q/k/v, o, gate/up, down + the lm_head: 14.14 GB,
// every layer its own weights) and each projection's time in a chain of 28, with the bandwidth
// against the streaming read's, and the largest difference from v0's outputs.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "peft/kernels/cuda/cuda_check.cuh"  // PEFT_CUDA_CHECK
#include "peft/kernels/cuda/grid_sync.cuh"   // load_acquire
#include "peft/kernels/cuda/pdl.cuh"         // launch_pdl, pdl_wait, pdl_release: as the decode step launches
#include "peft/kernels/cuda/rms_norm.cuh"    // detail::warp_sum

using bf16 = __nv_bfloat16;
using peft::cuda::launch_pdl;
using peft::cuda::load_acquire;
using peft::cuda::pdl_release;
using peft::cuda::pdl_wait;
using peft::cuda::detail::warp_sum;
__device__ __forceinline__ float dot8(uint4 w, uint4 x) {
  const __nv_bfloat162* a = reinterpret_cast<const __nv_bfloat162*>(&w);
  const __nv_bfloat162* b = reinterpret_cast<const __nv_bfloat162*>(&x);
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 p = __bfloat1622float2(a[i]), q = __bfloat1622float2(b[i]);
    s += p.x * q.x + p.y * q.y;
  }
  return s;
}
__device__ __forceinline__ uint4 ldcs(const void* p) {
  return __ldcs(reinterpret_cast<const uint4*>(p));
}

__device__ __forceinline__ void stage_x(uint4* xs, const bf16* x, int in) {
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  for (int v = threadIdx.x; v < in / 8; v += blockDim.x) xs[v] = xv[v];
}

// ---- v0: today's scheme
__global__ void __launch_bounds__(256, 4)
    gemv_v0(const bf16* __restrict__ W, const bf16* __restrict__ x, float* y, int rows, int in) {
  extern __shared__ uint4 sm[];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int gw = blockIdx.x * 8 + warp, warps = gridDim.x * 8;
  if (gw < rows) {
    const bf16* w = W + (long long)gw * in;
    for (int at = lane * 8; at < in && at < 2048; at += 256) asm volatile("prefetch.global.L2 [%0];" ::"l"(w + at));
  }
  pdl_wait();
  pdl_release();
  stage_x(sm, x, in);
  __syncthreads();
  const int vpr = in / 8;
  for (int r = gw; r < rows; r += warps) {
    const uint4* w = reinterpret_cast<const uint4*>(W + (long long)r * in);
    float acc = 0.f;
    int v = lane;
    for (; v + 96 < vpr; v += 128) {
      uint4 a = ldcs(w + v), b = ldcs(w + v + 32), c = ldcs(w + v + 64), d = ldcs(w + v + 96);
      acc += dot8(a, sm[v]) + dot8(b, sm[v + 32]) + dot8(c, sm[v + 64]) + dot8(d, sm[v + 96]);
    }
    for (; v < vpr; v += 32) acc += dot8(ldcs(w + v), sm[v]);
    acc = warp_sum(acc);
    if (lane == 0) y[r] = acc;
  }
}

// One ring slot's sum (chunk c of a row: P pieces a lane, each lane reading what it copied), and a
// finished row (or a warp's part of one) stored: whole rows stored, parts added (timing only).
template <int P>
__device__ __forceinline__ float ring_unit(const uint4* src, const uint4* xs, int c, int vpr, int lane) {
  float acc = 0.f;
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int v = c * P * 32 + p * 32 + lane;
    if (v < vpr) acc += dot8(src[p * 32 + lane], xs[v]);
  }
  return acc;
}
__device__ __forceinline__ void ring_row_done(float acc, float* y, int r, bool whole, int lane) {
  acc = warp_sum(acc);
  if (lane == 0) {
    if (whole)
      y[r] = acc;
    else
      atomicAdd(y + r, acc);
  }
}

// ---- v1: cp.async ring per warp
__device__ __forceinline__ void cp16(void* s, const void* g, uint64_t pol) {
  unsigned sa = static_cast<unsigned>(__cvta_generic_to_shared(s));
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;" ::"r"(sa), "l"(g), "l"(pol) : "memory");
}
__device__ __forceinline__ void cp_commit() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

template <int W_, int S, int P, int MINB, bool BAL>
__global__ void __launch_bounds__(32 * W_, MINB)
    gemv_v1(const bf16* __restrict__ Wt, const bf16* __restrict__ x, float* y, int rows, int in) {
  extern __shared__ uint4 sm[];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int gw = blockIdx.x * W_ + warp, warps = gridDim.x * W_;
  const int vpr = in / 8, cpr = (vpr + P * 32 - 1) / (P * 32);
  uint4* xs = sm;
  uint4* ring = sm + ((vpr + 7) / 8) * 8 + warp * S * P * 32;
  uint64_t pol;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
  long long k0, k1;  // this warp's chunks, in the flattened (row, chunk) space or row-strided
  const long long T = (long long)rows * cpr;
  int nr = 0;
  if (BAL) {
    k0 = T * gw / warps;
    k1 = T * (gw + 1) / warps;
  } else {
    nr = gw < rows ? (rows - 1 - gw) / warps + 1 : 0;
    k0 = 0;
    k1 = (long long)nr * cpr;
  }
  auto row_of = [&](long long k) -> int { return BAL ? (int)(k / cpr) : gw + (int)(k / cpr) * warps; };
  auto issue = [&](long long k) {
    if (k < k1) {
      const int r = row_of(k), c = (int)(k % cpr);
      const uint4* w = reinterpret_cast<const uint4*>(Wt + (long long)r * in);
      uint4* dst = ring + (int)((k - k0) % S) * P * 32;
#pragma unroll
      for (int p = 0; p < P; ++p) {
        const int v = c * P * 32 + p * 32 + lane;
        if (v < vpr) cp16(dst + p * 32 + lane, w + v, pol);
      }
    }
    cp_commit();
  };
#pragma unroll
  for (int s = 0; s < S - 1; ++s) issue(k0 + s);
  pdl_wait();
  pdl_release();
  stage_x(xs, x, in);
  __syncthreads();
  float acc = 0.f;
  for (long long k = k0; k < k1; ++k) {
    issue(k + S - 1);
    cp_wait<S - 1>();
    const int c = (int)(k % cpr);
    acc += ring_unit<P>(ring + (int)((k - k0) % S) * P * 32, xs, c, vpr, lane);
    if (c == cpr - 1 || k == k1 - 1) {
      ring_row_done(acc, y, row_of(k), !BAL || (c == cpr - 1 && k - c >= k0), lane);
      acc = 0.f;
    }
  }
  cp_wait<0>();
}

// ---- v2: the whole chain in one persistent kernel: a grid barrier between jobs, each warp's ring
// running across them (the next job's first chunks are in flight while the barrier waits).
struct PJob {
  const bf16* w;
  const bf16* x;
  int rows, in;
};
template <int W_, int S, int P, int MINB>
__global__ void __launch_bounds__(32 * W_, MINB)
    gemv_persist(const PJob* __restrict__ jobs, int njobs, float* y, unsigned* bar, int xmax) {
  extern __shared__ uint4 sm[];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int gw = blockIdx.x * W_ + warp, warps = gridDim.x * W_;
  uint4* xs = sm;
  uint4* ring = sm + ((xmax / 8 + 7) / 8) * 8 + warp * S * P * 32;
  uint64_t pol;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
  struct Cur {
    int job;
    long long k, k1;
    int cpr, vpr, in;
    const bf16* w;
  };
  auto set_job = [&](Cur& c, int j) {
    for (;; ++j) {
      c.job = j;
      if (j >= njobs) return;
      const PJob J = jobs[j];
      c.in = J.in;
      c.vpr = J.in / 8;
      c.cpr = (c.vpr + P * 32 - 1) / (P * 32);
      c.w = J.w;
      const long long T = (long long)J.rows * c.cpr;
      c.k = T * gw / warps;
      c.k1 = T * (gw + 1) / warps;
      if (c.k < c.k1) return;
    }
  };
  Cur is;
  set_job(is, 0);
  unsigned seq = 0;
  auto issue = [&]() {
    if (is.job < njobs) {
      const int r = (int)(is.k / is.cpr), c = (int)(is.k % is.cpr);
      const uint4* w = reinterpret_cast<const uint4*>(is.w + (long long)r * is.in);
      uint4* dst = ring + (int)(seq % S) * P * 32;
#pragma unroll
      for (int p = 0; p < P; ++p) {
        const int v = c * P * 32 + p * 32 + lane;
        if (v < is.vpr) cp16(dst + p * 32 + lane, w + v, pol);
      }
      if (++is.k == is.k1) set_job(is, is.job + 1);
    }
    cp_commit();
    ++seq;
  };
#pragma unroll
  for (int s = 0; s < S - 1; ++s) issue();
  pdl_wait();
  pdl_release();
  unsigned cseq = 0;
  for (int j = 0; j < njobs; ++j) {
    if (j > 0) {  // grid barrier: job j's input is job j-1's output
      __syncthreads();
      if (threadIdx.x == 0) {
        __threadfence();
        atomicAdd(bar, 1u);
        const unsigned target = (unsigned)j * gridDim.x;
        while (load_acquire(bar) < target) {
        }
      }
      __syncthreads();
    }
    const PJob J = jobs[j];
    {
      const uint4* xv = reinterpret_cast<const uint4*>(J.x);
      for (int v = threadIdx.x; v < J.in / 8; v += blockDim.x) xs[v] = xv[v];
    }
    __syncthreads();
    const int vpr = J.in / 8, cpr = (vpr + P * 32 - 1) / (P * 32);
    const long long T = (long long)J.rows * cpr, k0 = T * gw / warps, k1 = T * (gw + 1) / warps;
    float acc = 0.f;
    for (long long k = k0; k < k1; ++k) {
      issue();
      cp_wait<S - 1>();
      const int c = (int)(k % cpr);
      acc += ring_unit<P>(ring + (int)(cseq % S) * P * 32, xs, c, vpr, lane);
      ++cseq;
      if (c == cpr - 1 || k == k1 - 1) {
        ring_row_done(acc, y, (int)(k / cpr), c == cpr - 1 && k - c >= k0, lane);
        acc = 0.f;
      }
    }
  }
  cp_wait<0>();
}

// ---- pure streaming read, the reference
__global__ void __launch_bounds__(256) stream_read(const uint4* __restrict__ p, long long n, float* out) {
  pdl_wait();
  pdl_release();
  long long i = blockIdx.x * 256ll + threadIdx.x, st = (long long)gridDim.x * 256;
  unsigned s = 0;
  for (; i + 3 * st < n; i += 4 * st) {
    uint4 a = ldcs(p + i), b = ldcs(p + i + st), c = ldcs(p + i + 2 * st), d = ldcs(p + i + 3 * st);
    s ^= a.x ^ b.y ^ c.z ^ d.w;
  }
  for (; i < n; i += st) {
    uint4 a = ldcs(p + i);
    s ^= a.x;
  }
  if (s == 0x12345678u) out[0] = 1.f;
}

__global__ void fill(bf16* p, long long n, unsigned seed) {
  for (long long i = blockIdx.x * 256ll + threadIdx.x; i < n; i += (long long)gridDim.x * 256) {
    unsigned h = (unsigned)i * 2654435761u ^ seed;
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    h ^= h >> 15;
    p[i] = __float2bfloat16(((h & 0xffff) / 65536.f - 0.5f) * 0.1f);
  }
}

struct Job {
  const bf16* w;
  int rows, in;
};
static int g_sms = 132;
template <class K>
static void launch(K kern, int grid, int block, size_t smem, cudaStream_t st, const bf16* w, const bf16* x, float* y,
                   int rows, int in) {
  launch_pdl("probe kernel", kern, dim3(grid), dim3(block), smem, st, w, x, y, rows, in);
}
struct Variant {
  std::string name;
  std::function<void(const Job&, const bf16*, float*, cudaStream_t)> run;
  std::function<void(const std::vector<Job>&, float*, cudaStream_t)> run_chain;
};
static const bf16 *g_x1, *g_x2;
// Blocks an SM a kernel of W warps and `smem` bytes runs (at most `most`). The shared-memory limit
// is raised on a kernel's first call, which comes before any capture (a graph capture refuses it).
template <class K>
static int ring_blocks(K kern, int warps, size_t smem, int most) {
  static std::set<const void*> raised;
  if (raised.insert(reinterpret_cast<const void*>(kern)).second)
    PEFT_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024));
  int n = 0;
  PEFT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kern, 32 * warps, smem));
  n = std::min(n, most);
  if (n < 1) throw peft::Error("a block of " + std::to_string(smem) + " bytes does not fit");
  return n;
}

template <int W_, int S, int P, int MINB>
static Variant persist(const char* name) {
  Variant v;
  v.name = name;
  v.run_chain = [](const std::vector<Job>& js, float* y, cudaStream_t st) {
    static unsigned* bar = nullptr;
    static std::map<std::pair<const Job*, size_t>, std::pair<PJob*, int>> made;
    cudaStreamCaptureStatus cs;
    PEFT_CUDA_CHECK(cudaStreamIsCapturing(st, &cs));
    auto key = std::make_pair(js.data(), js.size());
    auto it = made.find(key);
    if (it == made.end()) {
      if (cs != cudaStreamCaptureStatusNone) throw peft::Error("persist: prepare before capture");
      if (!bar) PEFT_CUDA_CHECK(cudaMalloc(&bar, 4));
      std::vector<PJob> h;
      int xmax = 0;
      for (auto& j : js) {
        h.push_back({j.w, j.in == 3584 ? g_x1 : g_x2, j.rows, j.in});
        xmax = std::max(xmax, j.in);
      }
      PJob* d;
      PEFT_CUDA_CHECK(cudaMalloc(&d, h.size() * sizeof(PJob)));
      PEFT_CUDA_CHECK(cudaMemcpy(d, h.data(), h.size() * sizeof(PJob), cudaMemcpyHostToDevice));
      it = made.emplace(key, std::make_pair(d, xmax)).first;
    }
    PJob* d = it->second.first;
    const int xmax = it->second.second;
    auto k = gemv_persist<W_, S, P, MINB>;
    const size_t smem = (size_t)((xmax / 8 + 7) / 8) * 8 * 16 + (size_t)W_ * S * P * 512;
    const int n = ring_blocks(k, W_, smem, MINB);
    PEFT_CUDA_CHECK(cudaMemsetAsync(bar, 0, 4, st));
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = n * g_sms;
    cfg.blockDim = 32 * W_;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    PEFT_CUDA_CHECK(cudaLaunchKernelEx(&cfg, k, (const PJob*)d, (int)js.size(), y, bar, xmax));
  };
  return v;
}

template <int W_, int S, int P, int MINB, bool BAL>
static Variant v1(const char* name) {
  return {name, [](const Job& j, const bf16* x, float* y, cudaStream_t st) {
            auto k = gemv_v1<W_, S, P, MINB, BAL>;
            const int vpr = j.in / 8;
            const size_t smem = (size_t)((vpr + 7) / 8) * 8 * 16 + (size_t)W_ * S * P * 512;
            const int n = ring_blocks(k, W_, smem, MINB);
            launch(k, n * g_sms, 32 * W_, smem, st, j.w, x, y, j.rows, j.in);
          }};
}

int main() try {
  cudaDeviceProp prop;
  PEFT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  g_sms = prop.multiProcessorCount;
  printf("device %s, %d SMs, L2 %d MB\n", prop.name, g_sms, prop.l2CacheSize >> 20);
  const int H = 3584, I = 18944, QKV = 4608, V = 151936, L = 28;
  const long long per_layer = (long long)QKV * H + (long long)H * H + 2ll * I * H + (long long)H * I;
  bf16* wbuf;
  const long long total = per_layer * L + (long long)V * H;
  PEFT_CUDA_CHECK(cudaMalloc(&wbuf, total * 2));
  fill<<<4096, 256>>>(wbuf, total, 1u);
  bf16 *x1, *x2;
  PEFT_CUDA_CHECK(cudaMalloc(&x1, H * 2));
  PEFT_CUDA_CHECK(cudaMalloc(&x2, I * 2));
  fill<<<64, 256>>>(x1, H, 7u);
  fill<<<64, 256>>>(x2, I, 9u);
  float* y;
  PEFT_CUDA_CHECK(cudaMalloc(&y, (size_t)V * 4 * 2));
  g_x1 = x1;
  g_x2 = x2;
  PEFT_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<Job> qkv, o, gu, dn;
  Job head{wbuf + per_layer * L, V, H};
  for (int l = 0; l < L; ++l) {
    bf16* b = wbuf + per_layer * l;
    qkv.push_back({b, QKV, H});
    b += (long long)QKV * H;
    o.push_back({b, H, H});
    b += (long long)H * H;
    gu.push_back({b, 2 * I, H});
    b += 2ll * I * H;
    dn.push_back({b, H, I});
  }
  std::vector<Job> chain;
  for (int l = 0; l < L; ++l) {
    chain.push_back(qkv[l]);
    chain.push_back(o[l]);
    chain.push_back(gu[l]);
    chain.push_back(dn[l]);
  }
  chain.push_back(head);

  std::vector<Variant> vs;
  vs.push_back({"stream", [](const Job& j, const bf16*, float* y, cudaStream_t st) {
                  launch_pdl("stream_read", stream_read, dim3(g_sms * 8), dim3(256), 0, st,
                             reinterpret_cast<const uint4*>(j.w), (long long)j.rows * j.in / 8, y);
                }});
  vs.push_back({"v0", [](const Job& j, const bf16* x, float* y, cudaStream_t st) {
                  const size_t smem = (size_t)j.in * 2;
                  const int n = ring_blocks(gemv_v0, 8, smem, 4);
                  launch(gemv_v0, std::min(n * g_sms, (j.rows + 7) / 8), 256, smem, st, j.w, x, y, j.rows, j.in);
                }});
  vs.push_back(v1<8, 4, 4, 2, false>("v1 w8 s4 p4 b2"));
  vs.push_back(v1<8, 4, 4, 2, true>("v1 w8 s4 p4 b2 bal"));
  vs.push_back(v1<8, 6, 2, 2, true>("v1 w8 s6 p2 b2 bal"));
  vs.push_back(v1<8, 3, 4, 2, true>("v1 w8 s3 p4 b2 bal"));
  vs.push_back(v1<16, 4, 2, 1, true>("v1 w16 s4 p2 b1 bal"));
  vs.push_back(v1<4, 4, 4, 3, true>("v1 w4 s4 p4 b3 bal"));
  vs.push_back(v1<8, 8, 2, 2, true>("v1 w8 s8 p2 b2 bal"));
  vs.push_back(v1<8, 2, 8, 2, true>("v1 w8 s2 p8 b2 bal"));
  vs.push_back(v1<8, 4, 2, 4, true>("v1 w8 s4 p2 b4 bal"));
  vs.push_back(v1<8, 4, 4, 4, true>("v1 w8 s4 p4 b4 bal"));
  vs.push_back(v1<8, 4, 4, 4, false>("v1 w8 s4 p4 b4"));
  {
    Variant a = v1<8, 4, 4, 4, true>("x"), b = v1<8, 4, 2, 4, true>("x"), c = v1<16, 4, 2, 1, true>("x"),
            d = v1<8, 8, 2, 2, true>("x");
    vs.push_back({"mixed", [a, b, c, d](const Job& j, const bf16* x, float* y, cudaStream_t st) {
                    if (j.rows == 4608)
                      a.run(j, x, y, st);
                    else if (j.rows == 3584 && j.in == 3584)
                      b.run(j, x, y, st);
                    else if (j.in == 18944)
                      d.run(j, x, y, st);
                    else
                      c.run(j, x, y, st);
                  }});
  }
  vs.push_back(persist<8, 4, 4, 2>("persist w8 s4 p4 b2"));
  vs.push_back(persist<8, 6, 4, 1>("persist w8 s6 p4 b1"));
  vs.push_back(persist<16, 4, 4, 1>("persist w16 s4 p4 b1"));
  vs.push_back(persist<16, 6, 2, 1>("persist w16 s6 p2 b1"));
  vs.push_back(persist<8, 8, 2, 2>("persist w8 s8 p2 b2"));

  cudaStream_t st;
  PEFT_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  cudaEvent_t e0, e1;
  PEFT_CUDA_CHECK(cudaEventCreate(&e0));
  PEFT_CUDA_CHECK(cudaEventCreate(&e1));
  auto time_chain = [&](const Variant& v, const std::vector<Job>& js, int reps) -> double {
    cudaGraph_t g;
    cudaGraphExec_t ge;
    if (v.run_chain) {
      v.run_chain(js, y, st);
      PEFT_CUDA_CHECK(cudaStreamSynchronize(st));
    }
    PEFT_CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
    if (v.run_chain)
      v.run_chain(js, y, st);
    else
      for (const Job& j : js) v.run(j, j.in == H ? x1 : x2, y, st);
    PEFT_CUDA_CHECK(cudaStreamEndCapture(st, &g));
    PEFT_CUDA_CHECK(cudaGraphInstantiate(&ge, g, 0));
    for (int i = 0; i < 3; ++i) PEFT_CUDA_CHECK(cudaGraphLaunch(ge, st));
    PEFT_CUDA_CHECK(cudaEventRecord(e0, st));
    for (int i = 0; i < reps; ++i) PEFT_CUDA_CHECK(cudaGraphLaunch(ge, st));
    PEFT_CUDA_CHECK(cudaEventRecord(e1, st));
    PEFT_CUDA_CHECK(cudaEventSynchronize(e1));
    float ms;
    PEFT_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    PEFT_CUDA_CHECK(cudaGraphExecDestroy(ge));
    PEFT_CUDA_CHECK(cudaGraphDestroy(g));
    return ms / reps;
  };
  auto bytes = [&](const std::vector<Job>& js) {
    double b = 0;
    for (auto& j : js) b += 2.0 * j.rows * j.in;
    return b;
  };

  // correctness: each variant's outputs of one o, one down, one gate/up and the head against v0
  std::vector<float> ref, got;
  auto outputs = [&](const Variant& v, std::vector<float>& out) {
    out.clear();
    static std::vector<std::vector<Job>> singles;
    if (singles.empty())
      for (const Job& j : {o[0], dn[0], gu[0], qkv[0]}) singles.push_back({j});
    for (const auto& one : singles) {
      const Job& j = one[0];
      PEFT_CUDA_CHECK(cudaMemset(y, 0, (size_t)V * 4));
      if (v.run_chain)
        v.run_chain(one, y, st);
      else
        v.run(j, j.in == H ? x1 : x2, y, st);
      PEFT_CUDA_CHECK(cudaStreamSynchronize(st));
      std::vector<float> h(j.rows);
      PEFT_CUDA_CHECK(cudaMemcpy(h.data(), y, j.rows * 4, cudaMemcpyDeviceToHost));
      out.insert(out.end(), h.begin(), h.end());
    }
  };
  outputs(vs[1], ref);
  printf("%-22s %9s %7s | %8s %8s %8s %8s   (us a kernel, %% of stream bw)   %s\n", "variant", "chain ms", "%bw", "qkv",
         "o", "gate/up", "down", "max rel err vs v0");
  double bw_stream = 0;
  for (size_t i = 0; i < vs.size(); ++i) {
    const Variant& v = vs[i];
    double err = 0;
    if (i > 0) {
      outputs(v, got);
      double mx = 0;
      for (size_t k = 0; k < ref.size(); ++k) {
        mx = std::max(mx, (double)fabs(ref[k]));
        err = std::max(err, (double)fabs(got[k] - ref[k]));
      }
      err /= mx;
    }
    const double t = time_chain(v, chain, 50);
    const double gbs = bytes(chain) / t / 1e6;
    if (i == 0) bw_stream = gbs;
    double per[4];
    const std::vector<Job>* sets[4] = {&qkv, &o, &gu, &dn};
    for (int s = 0; s < 4; ++s) per[s] = time_chain(v, *sets[s], 50) * 1000.0 / L;
    printf("%-22s %9.3f %6.1f%% |", v.name.c_str(), t, 100.0 * gbs / bw_stream);
    for (int s = 0; s < 4; ++s)
      printf(" %5.1f/%2.0f%%", per[s],
             100.0 * (2.0 * (*sets[s])[0].rows * (*sets[s])[0].in / (per[s] * 1e-6) / 1e9) / bw_stream);
    printf("   %.2e\n", err);
  }
  printf("stream chain bandwidth %.0f GB/s; chain bytes %.2f GB; tokens/s at that = %.1f\n", bw_stream,
         bytes(chain) / 1e9, 1e3 / time_chain(vs[0], chain, 20));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "gemv_stream_probe: %s\n", e.what());
  return 1;
}
