// Data-parallel training at library level (train/trainer.hpp with a dist::Communicator): two ranks
// as threads over the CPU transport, each with its own copy of the tiny model, must take the same
// steps as one process with twice the accumulation - same global batch. That checks the sharding
// (each micro-batch once, on one rank), the global 1/label-token normalisation (the ranks' shares
// have different token counts) and the all-reduce. Tolerance: fp32 on the CPU, the same products
// summed in another order ((mb0 + mb2) + (mb1 + mb3) instead of left to right): relative 1e-5 on
// losses, grad norms and every trainable value. A wrong shard or a local normalisation is off by
// percents. World size 1 through the communicator path must equal no communicator bit for bit.
#include <catch2/catch.hpp>
#include <cmath>
#include <future>

#include "peft/dist/tcp_communicator.hpp"
#include "peft/qwen.hpp"
#include "support/fixture.hpp"
#include "support/training_runs.hpp"

using namespace peft;
using Model = Qwen2<Lora<>, Fp32, Cpu>;

namespace {

test::TrainedRun train(int ga, dist::Communicator* comm) {
  LoraConfig lora = read_adapter_config(test::fixture("tiny_public") / "adapter");
  lora.lora_dropout = 0;  // ranks draw their own dropout masks: parity holds without dropout
  auto model = Model::from_pretrained(test::fixture("tiny_public") / "model", lora, 7);
  TrainingArguments a;
  a.learning_rate = 2e-3;
  a.num_train_epochs = 2;
  a.gradient_accumulation_steps = ga;
  a.warmup_ratio = 0.1;
  a.train_dataloader_shuffle = true;
  Trainer<Model> t(*model, a, AdamW({0.9, 0.95, 1e-8, 0.1}), NamedSchedule("cosine"));
  t.set_communicator(comm);
  t.set_quiet(true);
  test::TrainedRun r{t.train(test::fixture_samples("tiny_public")), {}};
  for (const auto& p : model->trainable_parameters()) r.values.push_back(*p.value);
  return r;
}

// Two ranks with accumulation `ga` each; returns rank 0's run and checks rank 1 holds the same weights.
test::TrainedRun two_ranks(int ga) {
  dist::Socket listener = dist::listen_on(0);
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  ::getsockname(listener.fd(), reinterpret_cast<sockaddr*>(&addr), &len);
  dist::LaunchEnv e;
  e.world_size = 2;
  e.master_port = ntohs(addr.sin_port);
  e.timeout_s = 60;
  auto rank1 = std::async(std::launch::async, [e, ga]() mutable {
    e.rank = 1;
    dist::TcpCommunicator c(dist::rendezvous(e), e.timeout_s);
    return train(ga, &c);
  });
  dist::TcpCommunicator c(dist::rendezvous(e, {}, std::move(listener)), e.timeout_s);
  test::TrainedRun r0 = train(ga, &c);
  const test::TrainedRun r1 = rank1.get();
  for (std::size_t i = 0; i < r0.values.size(); ++i) CHECK(r0.values[i] == r1.values[i]);  // one update, everywhere
  CHECK(r0.res.step_losses == r1.res.step_losses);
  return r0;
}

}  // namespace

TEST_CASE("two ranks with accumulation 2 equal one process with accumulation 4", "[dist]") {
  test::check_same_training(two_ranks(2), train(4, nullptr));
}

TEST_CASE("two ranks with odd accumulation and a short last step equal one process", "[dist]") {
  // 16 samples, 6 micro-batches a step: steps of 6, 6, 4 - the last one leaves rank 1 two of four.
  const test::TrainedRun two = two_ranks(3);
  CHECK(two.res.global_step == 6);
  test::check_same_training(two, train(6, nullptr));
}

TEST_CASE("world size 1 through a communicator equals no communicator bit for bit", "[dist]") {
  dist::SingleProcess one;
  const test::TrainedRun a = train(2, &one), b = train(2, nullptr);
  CHECK(a.res.step_losses == b.res.step_losses);
  CHECK(a.res.step_grad_norms == b.res.step_grad_norms);
  for (std::size_t i = 0; i < a.values.size(); ++i) CHECK(a.values[i] == b.values[i]);
}
