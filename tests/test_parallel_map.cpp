// parallel_map (core/parallel_map.hpp): results in index order for any thread count, and the error a
// single-threaded loop would raise first, even where a later item fails sooner.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "peft/core/parallel_map.hpp"

using namespace peft;

TEST_CASE("parallel_map returns make(i) in index order, on one thread or many") {
  for (unsigned threads : {1u, 2u, 7u, 64u}) {
    INFO(threads << " threads");
    const auto out = parallel_map(100, threads, [](std::size_t i) { return std::to_string(i * i); });
    REQUIRE(out.size() == 100);
    for (std::size_t i = 0; i < out.size(); ++i) CHECK(out[i] == std::to_string(i * i));
  }
  CHECK(parallel_map(0, 4, [](std::size_t i) { return i; }).empty());
}

TEST_CASE("parallel_map uses several threads where it may") {
  std::atomic<int> running{0}, most{0};
  parallel_map(16, 4, [&](std::size_t) {
    const int now = ++running;
    for (int m = most.load(); now > m && !most.compare_exchange_weak(m, now);) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    --running;
    return 0;
  });
  CHECK(most.load() > 1);
  CHECK(most.load() <= 4);
}

TEST_CASE("parallel_map rethrows the failure of the lowest index") {
  // Item 9 fails at once; item 3 fails later (after a sleep): item 3's error is the one raised, as a
  // loop in index order would raise it.
  auto make = [](std::size_t i) -> int {
    if (i == 9) throw std::runtime_error("nine");
    if (i == 3) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      throw std::runtime_error("three");
    }
    return static_cast<int>(i);
  };
  for (unsigned threads : {1u, 4u, 16u}) {
    INFO(threads << " threads");
    CHECK_THROWS_WITH(parallel_map(20, threads, make), "three");
  }
}
