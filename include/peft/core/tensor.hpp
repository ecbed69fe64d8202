// The CPU backend's tensors are Eigen row-major float matrices: a [tokens x features] activation
// is one contiguous row per token, the layout of HF's [seq, hidden] and of the weights in
// safetensors ([out, in]), so files map onto them without transposes.
#pragma once
#include <Eigen/Core>
#include <cstdint>
#include <vector>

namespace peft {

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowVector = Eigen::Matrix<float, 1, Eigen::Dynamic>;
using MatrixMap = Eigen::Map<Matrix>;
using ConstMatrixMap = Eigen::Map<const Matrix>;

inline std::vector<std::int64_t> shape_of(const Matrix& m) {
  return {static_cast<std::int64_t>(m.rows()), static_cast<std::int64_t>(m.cols())};
}

}  // namespace peft
