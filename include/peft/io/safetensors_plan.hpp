// Planning a bulk load of named tensors into bf16 buffers: each requested tensor resolved to its
// shard, mapped bytes, dtype and shape and checked against what the caller expects, then split
// into chunks no larger than a staging buffer, before any byte moves.
//
// Why a plan apart from the copy: the device loader (io/cuda_weight_loader.cuh) moves 15 GB
// with several threads and a ring of pinned buffers; every way the input can be wrong (a missing
// tensor or shard, a wrong shape, a dtype we do not convert, a truncated shard) is found here,
// single-threaded and with the file and tensor named, so the copy itself cannot fail on bad input.
// This part needs no GPU, so CPU CI tests it. Parsing and mapping are SafetensorsModel's (one
// parser): a truncated shard or a missing shard is already refused when the model is opened.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "peft/core/dtype.hpp"
#include "peft/core/error.hpp"
#include "peft/io/safetensors_reader.hpp"

namespace peft {

// A tensor the caller wants, with the shape its buffer was made for.
struct TensorRequest {
  std::string name;
  std::vector<std::int64_t> shape;
};

// Where one requested tensor's bytes are.
struct PlannedTensor {
  std::size_t request = 0;               // index into the requests
  const StoredTensor* stored = nullptr;  // points into the model: lives as long as it
  const SafetensorsFile* file = nullptr;
};

struct TensorReadPlan {
  std::vector<PlannedTensor> reads;  // shard by shard, ascending offset: each file read front to back
  std::uint64_t file_bytes = 0;      // bytes read from the mappings
  std::uint64_t bf16_bytes = 0;      // bytes written (2 per element)
};

// The dtypes a bf16 destination can be filled from.
inline bool converts_to_bf16(DType t) { return t == DType::BF16 || t == DType::F32 || t == DType::F16; }

// Resolves and checks every request; errors name the model source or the file, and the tensor.
inline TensorReadPlan plan_bf16_reads(const SafetensorsModel& model, std::span<const TensorRequest> requests) {
  TensorReadPlan plan;
  std::set<std::string_view> seen;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const TensorRequest& r = requests[i];
    require(seen.insert(r.name).second, "{}: tensor '{}' is requested twice", model.source().string(), r.name);
    require(model.contains(r.name), "{}: no tensor '{}' in the model", model.source().string(), r.name);
    const SafetensorsFile& file = model.file_of(r.name);
    const StoredTensor& t = file.tensor(r.name);
    require(std::equal(t.shape.begin(), t.shape.end(), r.shape.begin(), r.shape.end()),
            "{}: tensor '{}' has shape {}, expected {}", file.path().string(), r.name, format_shape(t.shape),
            format_shape(r.shape));
    require(converts_to_bf16(t.dtype), "{}: tensor '{}' has dtype {}; a bf16 weight is read from BF16, F32 or F16",
            file.path().string(), r.name, dtype_name(t.dtype));
    plan.reads.push_back({i, &t, &file});
    plan.file_bytes += t.nbytes;
    plan.bf16_bytes += static_cast<std::uint64_t>(t.numel()) * 2;
  }
  std::sort(plan.reads.begin(), plan.reads.end(), [](const PlannedTensor& a, const PlannedTensor& b) {
    if (a.file != b.file) return a.file->path() < b.file->path();
    return a.stored->data < b.stored->data;
  });
  return plan;
}

// Elements [begin, begin + count) of the plan's tensor `read`.
struct ReadChunk {
  std::size_t read = 0;
  std::size_t begin = 0, count = 0;
};

// Splits every tensor into pieces of at most `max_bf16_bytes` of output (a staging buffer), in
// the plan's order. Empty tensors give no chunk.
inline std::vector<ReadChunk> split_reads(const TensorReadPlan& plan, std::size_t max_bf16_bytes) {
  require(max_bf16_bytes >= 2, "split_reads: a staging buffer must hold at least one bf16 element (got {} bytes)",
          max_bf16_bytes);
  const std::size_t per_chunk = max_bf16_bytes / 2;
  std::vector<ReadChunk> chunks;
  for (std::size_t r = 0; r < plan.reads.size(); ++r) {
    const std::size_t n = static_cast<std::size_t>(plan.reads[r].stored->numel());
    for (std::size_t b = 0; b < n; b += per_chunk) chunks.push_back({r, b, std::min(per_chunk, n - b)});
  }
  return chunks;
}

// Elements [begin, begin + count) of an F32, BF16 or F16 tensor as bf16 bits: BF16 copied, the
// others rounded to nearest even by float_to_bf16 (F16 widened exactly first). The same bits the
// WeightSource path gives (read_f32, then float_to_bf16). The source may be unaligned.
inline void convert_to_bf16(const StoredTensor& t, std::size_t begin, std::size_t count, std::uint16_t* out) {
  require(begin + count <= static_cast<std::size_t>(t.numel()), "tensor '{}': elements [{}, {}) past its {}", t.name,
          begin, begin + count, t.numel());
  switch (t.dtype) {
    case DType::BF16:
      std::memcpy(out, t.data + 2 * begin, 2 * count);
      return;
    case DType::F32:
      for (std::size_t i = 0; i < count; ++i) {
        float f;
        std::memcpy(&f, t.data + 4 * (begin + i), 4);
        out[i] = float_to_bf16(f);
      }
      return;
    case DType::F16:
      for (std::size_t i = 0; i < count; ++i) {
        std::uint16_t h;
        std::memcpy(&h, t.data + 2 * (begin + i), 2);
        out[i] = float_to_bf16(f16_to_float(h));
      }
      return;
    default:
      fail("tensor '{}': dtype {} does not convert to bf16", t.name, dtype_name(t.dtype));
  }
}

}  // namespace peft
