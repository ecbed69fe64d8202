// Which rows of a dataset go to training and validation, following ms-swift 3's
// DatasetLoader.post_process and sample_dataset (swift/llm/dataset/loader.py, utils.py):
// - `#N` takes N rows: every row floor(N / rows) times in file order, then N % rows more, the
//   first of a seeded permutation (without replacement), or the first rows when not shuffling.
// - split_dataset_ratio r in (0, 1) holds out max(int(min(rows, N) * r), 1) rows for validation
//   before sampling the rest up to N - val; r = 1 makes everything validation.
// - one NumpyRandomState(seed) is shared across the specs in order, as ms-swift shares its
//   RandomState, so `#N` picks ms-swift's rows when the split ratio is 0.
// Where ms-swift hands a derived seed to Hugging Face datasets (train_test_split, shuffle), which
// permute with numpy's PCG64 Generator, we permute with NumpyRandomState(derived seed): the draws
// from the shared state stay aligned with ms-swift, but the held-out rows and the final order are
// our own (seeded and deterministic all the same).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/data/numpy_random_state.hpp"

namespace peft::data {

struct RowSplit {
  std::vector<std::int64_t> train, val;  // indices into the dataset's rows
};

// ms-swift's sample_dataset: n_sample row indices out of n_rows.
inline std::vector<std::int64_t> sample_row_indices(std::int64_t n_rows, std::int64_t n_sample,
                                                    bool shuffle, NumpyRandomState& random) {
  require(n_rows > 0, "cannot sample from a dataset with no rows");
  std::vector<std::int64_t> indices;
  indices.reserve(static_cast<std::size_t>(n_sample));
  const std::int64_t repeats = n_sample / n_rows, remainder = n_sample % n_rows;
  for (std::int64_t r = 0; r < repeats; ++r) {
    for (std::int64_t i = 0; i < n_rows; ++i) indices.push_back(i);
  }
  if (remainder > 0) {
    if (shuffle) {
      const std::vector<std::int64_t> permutation = random.permutation(n_rows);
      indices.insert(indices.end(), permutation.begin(), permutation.begin() + remainder);
    } else {
      for (std::int64_t i = 0; i < remainder; ++i) indices.push_back(i);
    }
  }
  return indices;
}

// ms-swift's post_process for one dataset of n_rows rows; `spec` names it in errors.
inline RowSplit split_and_sample(std::int64_t n_rows, std::optional<std::int64_t> n_sample,
                                 double split_ratio, bool shuffle, NumpyRandomState& random,
                                 std::string_view spec) {
  require(split_ratio >= 0.0 && split_ratio <= 1.0,
          "--split_dataset_ratio must be in [0, 1], got {}", split_ratio);
  require(!n_sample || *n_sample > 0, "dataset '{}': the sample count after '#' must be positive", spec);
  const std::int64_t wanted = n_sample.value_or(n_rows);
  RowSplit split;
  if (split_ratio == 0.0) {
    split.train = sample_row_indices(n_rows, wanted, shuffle, random);
    return split;
  }
  if (split_ratio == 1.0) {
    require(wanted <= n_rows, "dataset '{}': {} validation rows asked for, but it has only {} rows",
            spec, wanted, n_rows);
    split.val = sample_row_indices(n_rows, wanted, shuffle, random);
    return split;
  }
  const std::int64_t val_rows = std::max<std::int64_t>(
      static_cast<std::int64_t>(std::floor(static_cast<double>(std::min(n_rows, wanted)) * split_ratio)), 1);
  const std::int64_t train_rows = wanted - val_rows;
  require(train_rows > 0 && val_rows < n_rows,
          "dataset '{}': --split_dataset_ratio {} holds out {} of {} rows and leaves none to train on",
          spec, split_ratio, val_rows, std::min(n_rows, wanted));
  // Hugging Face's train_test_split(test_size=val_rows, shuffle, seed=get_seed(random)): the
  // validation rows are the first of a permutation (the last rows without shuffling).
  const std::uint32_t split_seed = random.derive_seed();
  std::vector<std::int64_t> order(static_cast<std::size_t>(n_rows));
  for (std::int64_t i = 0; i < n_rows; ++i) order[static_cast<std::size_t>(i)] = i;
  std::vector<std::int64_t> pool;
  if (shuffle) {
    order = NumpyRandomState(split_seed).permutation(n_rows);
    split.val.assign(order.begin(), order.begin() + val_rows);
    pool.assign(order.begin() + val_rows, order.end());
  } else {
    pool.assign(order.begin(), order.end() - val_rows);
    split.val.assign(order.end() - val_rows, order.end());
  }
  for (std::int64_t i : sample_row_indices(static_cast<std::int64_t>(pool.size()), train_rows, shuffle, random)) {
    split.train.push_back(pool[static_cast<std::size_t>(i)]);
  }
  return split;
}

// The final --dataset_shuffle over the concatenated specs (ms-swift: shuffle_dataset with
// seed=get_seed(random_state)).
template <class T>
void shuffle_in_place(std::vector<T>& items, NumpyRandomState& random) {
  const std::uint32_t seed = random.derive_seed();
  const std::vector<std::int64_t> permutation =
      NumpyRandomState(seed).permutation(static_cast<std::int64_t>(items.size()));
  std::vector<T> shuffled;
  shuffled.reserve(items.size());
  for (std::int64_t i : permutation) shuffled.push_back(std::move(items[static_cast<std::size_t>(i)]));
  items = std::move(shuffled);
}

}  // namespace peft::data
