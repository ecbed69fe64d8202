// One piece of file work at a time on a thread of its own: the trainer's checkpoint writes, so a
// save costs the training loop only its snapshot (the tensors copied to host memory) while the
// files are written, fsynced, published and rotated beside the next steps. On an H100 machine a
// 7B adapter's checkpoint took ~0.5 s of the recipe's step time, twice in 4.8 s of training
// (bench/RESULTS.md, "Checkpoint saves without the writer's copy").
//
// start() first waits for the write before it, so checkpoints are published and rotated in
// order and never two at once; wait() joins and rethrows what the write threw (its messages
// name the file), so an error fails the run at the next save or at the end of training, where
// the caller waits. The destructor waits too (a write under way finishes: it is a checkpoint
// the user may want), and drops its error, since the caller is then leaving on its own exception.
#pragma once
#include <exception>
#include <thread>
#include <utility>

namespace peft {

class BackgroundWrite {
 public:
  BackgroundWrite() = default;
  BackgroundWrite(const BackgroundWrite&) = delete;
  BackgroundWrite& operator=(const BackgroundWrite&) = delete;
  ~BackgroundWrite() {
    if (thread_.joinable()) thread_.join();
  }

  // Runs work() on the write thread once the previous work is done (and its error rethrown here).
  // `work` owns everything it reads: the caller goes on changing its own state.
  template <class Work>
  void start(Work&& work) {
    wait();
    thread_ = std::thread([this, w = std::forward<Work>(work)]() mutable {
      try {
        w();
      } catch (...) {
        error_ = std::current_exception();
      }
    });
  }

  // Blocks until the work under way is done; rethrows its exception, once.
  void wait() {
    if (thread_.joinable()) thread_.join();
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  std::thread thread_;
  std::exception_ptr error_;  // set by the thread, read after the join
};

}  // namespace peft
