// Work on several threads, for file work that is independent per item. parallel_map(n, threads,
// make): make(0) .. make(n - 1) on up to `threads` threads (a merge's tensors), the results in index
// order; an exception stops the workers at their next item, and the one of the lowest index is
// rethrown: every item below it was handed out first and finishes, so the error is the one a
// single-threaded loop would raise. run_beside(side, main): two functions at once (a checkpoint's
// two large files).
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <optional>
#include <system_error>
#include <thread>
#include <vector>

#ifdef __linux__
#include <sched.h>
#endif

namespace peft {

// The threads a parallel_map over file work should use here: the cores this process may run on
// (its affinity mask, where taskset or a container narrows it), at most `cap`.
inline unsigned worker_threads(unsigned cap = 16) {
  unsigned cores = std::thread::hardware_concurrency();
#ifdef __linux__
  cpu_set_t mask;
  if (sched_getaffinity(0, sizeof(mask), &mask) == 0 && CPU_COUNT(&mask) > 0)
    cores = static_cast<unsigned>(CPU_COUNT(&mask));
#endif
  return std::clamp(cores, 1u, cap);
}

template <class F>
auto parallel_map(std::size_t n, unsigned threads, F&& make) {
  using T = decltype(make(std::size_t{0}));
  std::vector<std::optional<T>> done(n);
  std::vector<std::exception_ptr> errors(n);
  std::atomic<std::size_t> next{0}, first_error{n};
  auto work = [&] {
    for (std::size_t i = next++; i < n && i < first_error.load(); i = next++) {
      try {
        done[i].emplace(make(i));
      } catch (...) {
        errors[i] = std::current_exception();
        for (std::size_t e = first_error.load(); i < e && !first_error.compare_exchange_weak(e, i);) {
        }
      }
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(threads);  // no allocation while threads run: a bad_alloc there would leave them joinable
  const unsigned extra = static_cast<unsigned>(std::min<std::size_t>(n, std::max(threads, 1u))) - (n > 0 ? 1 : 0);
  for (unsigned t = 0; t < extra; ++t) {
    try {
      pool.emplace_back(work);
    } catch (const std::system_error&) {  // no more threads to be had: the ones running do the rest
      break;
    }
  }
  work();  // this thread is one of them
  for (auto& t : pool) t.join();
  if (const std::size_t e = first_error.load(); e < n) std::rethrow_exception(errors[e]);
  std::vector<T> out;
  out.reserve(n);
  for (auto& d : done) out.push_back(std::move(*d));
  return out;
}

// side() on a thread of its own while main() runs on this one; returns when both are done. An
// exception of main() is rethrown before one of side(). Without a thread to be had, side() runs
// after main() here.
template <class Side, class Main>
void run_beside(Side&& side, Main&& main) {
  std::exception_ptr side_error;
  std::optional<std::thread> thread;
  try {
    thread.emplace([&] {
      try {
        side();
      } catch (...) {
        side_error = std::current_exception();
      }
    });
  } catch (const std::system_error&) {
  }
  try {
    main();
  } catch (...) {
    if (thread) thread->join();
    throw;
  }
  if (thread) thread->join();
  else side();
  if (side_error) std::rethrow_exception(side_error);
}

}  // namespace peft
