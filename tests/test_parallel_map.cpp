// parallel_map (core/parallel_map.hpp): results in index order for any thread count, and the error a
// single-threaded loop would raise first, even where a later item fails sooner; run_beside: both
// functions at once, and the errors in the order they are rethrown.
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

TEST_CASE("run_beside runs side() while main() runs, and waits for both") {
  // main() waits (up to 5 s) for side() to start: only two threads at once see it.
  std::atomic<bool> side_started{false}, side_done{false};
  bool main_saw_side = false;
  run_beside(
      [&] {
        side_started = true;
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        side_done = true;
      },
      [&] {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (!side_started && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
        main_saw_side = side_started;
      });
  CHECK(main_saw_side);
  CHECK(side_done);  // returned only after side() ended
}

TEST_CASE("run_beside rethrows main()'s error before side()'s, and side()'s when main() succeeds") {
  std::atomic<bool> side_done{false};
  auto failing_side = [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    side_done = true;
    throw std::runtime_error("side");
  };
  CHECK_THROWS_WITH(run_beside(failing_side, [] { throw std::runtime_error("main"); }), "main");
  CHECK(side_done);  // joined before the error left
  side_done = false;
  CHECK_THROWS_WITH(run_beside(failing_side, [] {}), "side");
  CHECK(side_done);
  std::atomic<int> ran{0};
  run_beside([&] { ran += 1; }, [&] { ran += 10; });
  CHECK(ran == 11);
}
