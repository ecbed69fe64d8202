// `#N` sampling and the validation split, checked against numpy: the expected indices below are
// what ms-swift's sample_dataset computes with np.random.RandomState(seed), printed by numpy 1.24:
//   def sample(n, k, rs):  # ms-swift 3, swift/llm/dataset/utils.py, shuffle=True
//       idx = np.tile(range(n), k // n)
//       if k % n: idx = np.concatenate([idx, rs.permutation(n)[:k % n]])
//       return idx.tolist()
#include <catch2/catch.hpp>

#include <algorithm>
#include <numeric>
#include <set>
#include <vector>

#include "peft/data/dataset_sampling.hpp"

using namespace peft::data;
using Catch::Matchers::Contains;
using Indices = std::vector<std::int64_t>;

TEST_CASE("NumpyRandomState reproduces numpy's legacy RandomState") {
  // np.random.RandomState(42).permutation(10)
  CHECK(NumpyRandomState(42).permutation(10) == Indices{8, 1, 5, 0, 7, 2, 9, 4, 3, 6});
  // np.random.RandomState(42).permutation(1000)[:8]
  const Indices p = NumpyRandomState(42).permutation(1000);
  CHECK(Indices(p.begin(), p.begin() + 8) == Indices{521, 737, 740, 660, 411, 678, 626, 513});
  // rs = RandomState(0); [rs.randint(0, np.iinfo(np.int32).max) for _ in range(3)]
  NumpyRandomState zero(0);
  CHECK(zero.randint(0, 2147483647) == 209652396);
  CHECK(zero.randint(0, 2147483647) == 398764591);
  CHECK(zero.randint(0, 2147483647) == 924231285);
  // rs = RandomState(7); rs.permutation(5), then get_seed twice: draws continue from one state.
  NumpyRandomState seven(7);
  CHECK(seven.permutation(5) == Indices{0, 3, 2, 1, 4});
  CHECK(seven.derive_seed() == 2053951699u);
  CHECK(seven.derive_seed() == 959775639u);
}

TEST_CASE("#N picks ms-swift's rows: a seeded sample without replacement") {
  NumpyRandomState random(42);
  CHECK(sample_row_indices(10, 4, true, random) == Indices{8, 1, 5, 0});
  // One random state shared by the specs in order: the second spec continues the draws.
  NumpyRandomState shared(42);
  CHECK(sample_row_indices(7, 3, true, shared) == Indices{0, 1, 5});
  CHECK(sample_row_indices(7, 2, true, shared) == Indices{5, 0});
  // RandomState(123), 500 of 1000 rows.
  NumpyRandomState big(123);
  const Indices picked = sample_row_indices(1000, 500, true, big);
  CHECK(Indices(picked.begin(), picked.begin() + 10) == Indices{131, 203, 50, 585, 138, 632, 328, 461, 924, 479});
  CHECK(std::accumulate(picked.begin(), picked.end(), std::int64_t{0}) == 251176);
  CHECK(std::set<std::int64_t>(picked.begin(), picked.end()).size() == 500);
}

TEST_CASE("#N larger than the dataset repeats every row / then samples the rest") {
  NumpyRandomState random(42);
  CHECK(sample_row_indices(3, 7, true, random) == Indices{0, 1, 2, 0, 1, 2, 0});
  NumpyRandomState again(42);
  CHECK(sample_row_indices(3, 6, true, again) == Indices{0, 1, 2, 0, 1, 2});
  // Without shuffling the remainder is the first rows.
  NumpyRandomState unused(42);
  CHECK(sample_row_indices(4, 6, false, unused) == Indices{0, 1, 2, 3, 0, 1});
}

TEST_CASE("split_dataset_ratio holds out validation rows as ms-swift counts them") {
  NumpyRandomState random(42);
  const RowSplit split = split_and_sample(10, std::nullopt, 0.25, true, random, "d");
  CHECK(split.val.size() == 2);  // max(int(10 * 0.25), 1)
  CHECK(split.train.size() == 8);
  std::set<std::int64_t> all(split.train.begin(), split.train.end());
  for (auto i : split.val) CHECK(all.insert(i).second);  // disjoint
  CHECK(all.size() == 10);

  // With #N: val from min(rows, N), train tops up to N - val (repeating rows if needed).
  NumpyRandomState r2(1);
  const RowSplit small = split_and_sample(4, 10, 0.5, true, r2, "d");
  CHECK(small.val.size() == 2);
  CHECK(small.train.size() == 8);
  for (auto i : small.train) CHECK(std::find(small.val.begin(), small.val.end(), i) == small.val.end());

  // At least one validation row, and without shuffling the last rows are held out.
  NumpyRandomState r3(1);
  const RowSplit tiny = split_and_sample(5, std::nullopt, 0.01, false, r3, "d");
  CHECK(tiny.val == Indices{4});
  CHECK(tiny.train == Indices{0, 1, 2, 3});

  // Ratio 1: everything is validation.
  NumpyRandomState r4(1);
  const RowSplit all_val = split_and_sample(5, std::nullopt, 1.0, true, r4, "d");
  CHECK(all_val.train.empty());
  CHECK(all_val.val.size() == 5);
}

TEST_CASE("split and sample: the same seed gives the same rows / another seed other rows") {
  NumpyRandomState a(42), b(42), c(43);
  const RowSplit sa = split_and_sample(100, 30, 0.1, true, a, "d");
  const RowSplit sb = split_and_sample(100, 30, 0.1, true, b, "d");
  const RowSplit sc = split_and_sample(100, 30, 0.1, true, c, "d");
  CHECK(sa.train == sb.train);
  CHECK(sa.val == sb.val);
  CHECK(sa.train != sc.train);
  CHECK(sa.val.size() == 3);
  CHECK(sa.train.size() == 27);
}

TEST_CASE("impossible splits are errors") {
  NumpyRandomState random(42);
  CHECK_THROWS_WITH(split_and_sample(1, std::nullopt, 0.5, true, random, "one.jsonl"),
                    Contains("one.jsonl") && Contains("leaves none to train on"));
  CHECK_THROWS_WITH(split_and_sample(5, std::nullopt, 1.5, true, random, "d"), Contains("must be in [0, 1]"));
  CHECK_THROWS_WITH(split_and_sample(5, 6, 1.0, true, random, "d.jsonl"),
                    Contains("6 validation rows asked for, but it has only 5"));
}

TEST_CASE("shuffle_in_place is a seeded permutation") {
  std::vector<int> a(20), b(20);
  std::iota(a.begin(), a.end(), 0);
  std::iota(b.begin(), b.end(), 0);
  NumpyRandomState ra(42), rb(42);
  shuffle_in_place(a, ra);
  shuffle_in_place(b, rb);
  CHECK(a == b);
  std::vector<int> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int> identity(20);
  std::iota(identity.begin(), identity.end(), 0);
  CHECK(sorted == identity);
  CHECK(a != identity);
}
