// SGD, the second optimizer policy (optim/sgd.hpp): its steps equal torch.optim.SGD's formula
// (momentum, dampening 0, no nesterov, coupled weight decay) computed here in double; the
// Trainer runs with it end to end through the same backend hooks as AdamW (train/backend_hooks.hpp),
// including a checkpoint whose momentum buffers resume the run bit for bit; --optim chooses it.
#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "peft/qwen.hpp"
#include "support/fixture.hpp"

using namespace peft;

namespace {

// torch.optim.SGD._single_tensor_sgd, one tensor, in double: d = g + wd p; b = d on the first
// step, else momentum b + d; p -= lr b.
struct TorchSgdReference {
  double momentum, weight_decay;
  std::vector<double> buf;
  bool first = true;
  void step(std::vector<double>& p, const std::vector<double>& g, double lr) {
    if (buf.empty()) buf.assign(p.size(), 0.0);
    for (std::size_t i = 0; i < p.size(); ++i) {
      double d = g[i] + weight_decay * p[i];
      if (momentum != 0) {
        buf[i] = first ? d : momentum * buf[i] + d;
        d = buf[i];
      }
      p[i] -= lr * d;
    }
    first = false;
  }
};

}  // namespace

TEST_CASE("SGD steps equal torch.optim.SGD's formula", "[sgd]") {
  for (const auto& [momentum, wd] : std::vector<std::pair<double, double>>{{0.9, 0.01}, {0.0, 0.0}, {0.5, 0.0}}) {
    INFO("momentum " << momentum << " weight_decay " << wd);
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    Matrix w(3, 5), b(1, 4), gw(3, 5), gb(1, 4);
    for (Matrix* m : {&w, &b}) for (Eigen::Index i = 0; i < m->size(); ++i) m->data()[i] = normal(rng);
    const ParameterList params = {{"w", &w, &gw}, {"b", &b, &gb, true}};
    std::vector<std::vector<double>> ref_p = {{w.data(), w.data() + w.size()}, {b.data(), b.data() + b.size()}};
    std::vector<TorchSgdReference> ref(2, TorchSgdReference{momentum, wd});
    Sgd opt({momentum, wd});
    opt.init(params);
    const std::vector<double> lrs = {0.1, 0.05, 0.2, 0.01};
    for (double lr : lrs) {
      std::vector<std::vector<double>> grads;
      for (Matrix* g : {&gw, &gb}) {
        for (Eigen::Index i = 0; i < g->size(); ++i) g->data()[i] = normal(rng);
        grads.emplace_back(g->data(), g->data() + g->size());
      }
      opt.step(params, lr);
      for (std::size_t t = 0; t < 2; ++t) ref[t].step(ref_p[t], grads[t], lr);
    }
    CHECK(opt.step_count == static_cast<std::int64_t>(lrs.size()));
    for (std::size_t t = 0; t < 2; ++t)
      for (Eigen::Index i = 0; i < params[t].value->size(); ++i)
        CHECK(params[t].value->data()[i] == Approx(ref_p[t][static_cast<std::size_t>(i)]).epsilon(1e-5).margin(1e-6));
  }
}

TEST_CASE("SGD's options are checked, and --optim takes adamw_torch or sgd only", "[sgd]") {
  CHECK_THROWS_WITH(Sgd({1.0, 0.0}), Catch::Contains("momentum"));
  CHECK_THROWS_WITH(Sgd({0.9, -1.0}), Catch::Contains("weight_decay"));
  TrainingArguments a;
  a.optim = "adamw_hf";
  CHECK_THROWS_WITH(a.validate(), Catch::Contains("--optim adamw_hf") && Catch::Contains("adamw_torch, sgd"));
  a.optim = "sgd";
  a.sgd_momentum = 0.9;
  a.weight_decay = 0.01;
  a.validate();
  const std::string chosen = with_optimizer(a, []<class Opt>(const Opt& o) {
    if constexpr (std::is_same_v<Opt, Sgd>) return fmt::format("sgd {} {}", o.opt.momentum, o.opt.weight_decay);
    else return std::string("adamw");
  });
  CHECK(chosen == "sgd 0.9 0.01");
  a.optim = "adamw_torch";
  CHECK(with_optimizer(a, []<class Opt>(const Opt&) { return std::is_same_v<Opt, AdamW>; }));
}

namespace {

using Model = Qwen2<Lora<>, Fp32, Cpu>;

struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("interrupted") {}
};
struct CrashAt {
  std::int64_t at = -1;
  void on_step_end(const TrainResult& r) {
    if (at >= 0 && r.global_step > at) throw Interrupted();
  }
};

TrainingArguments sgd_args(const std::filesystem::path& out) {
  TrainingArguments a;
  a.optim = "sgd";
  a.sgd_momentum = 0.9;
  a.learning_rate = 0.05;
  a.num_train_epochs = 2;
  a.lr_scheduler_type = "linear";
  a.logging_steps = 4;
  a.save_steps = 5;
  a.weight_decay = 0.01;
  a.output_dir = out;
  return a;
}

template <class Opt>
TrainResult run(const TrainingArguments& a, Opt opt, std::int64_t crash_at = -1) {
  LoraConfig lora = read_adapter_config(test::fixture("tiny_public") / "adapter");
  lora.lora_dropout = 0.1;
  auto model = Model::from_pretrained(test::fixture("tiny_public") / "model", lora, 7);
  Trainer<Model, Opt, NamedSchedule, CrashAt> t(*model, a, std::move(opt), NamedSchedule(a.lr_scheduler_type),
                                                CrashAt{crash_at});
  t.set_run_dir(a.output_dir);
  t.set_quiet(true);
  return t.train(test::fixture_samples("tiny_public"));
}

}  // namespace

TEST_CASE("the trainer trains with SGD and resumes its momentum bit for bit", "[sgd][resume]") {
  const auto root = std::filesystem::temp_directory_path() / "peft_test_sgd";
  std::filesystem::remove_all(root);
  const TrainingArguments a = sgd_args(root / "full");
  const TrainResult full = run(a, sgd_from(a));
  REQUIRE(full.global_step > 10);
  CHECK(full.skipped_steps == 0);
  CHECK(full.step_losses.back() < full.step_losses.front());

  // The checkpoint holds SGD's state under torch's name, and no AdamW moments.
  const auto st = SafetensorsFile::open(root / "full" / "checkpoint-5" / "optimizer.safetensors");
  CHECK(st.metadata().at("step") == "5");
  bool momentum = false, moments = false;
  for (const auto& n : st.names()) {
    momentum = momentum || n.rfind("momentum_buffer.", 0) == 0;
    moments = moments || n.rfind("exp_avg", 0) == 0;
  }
  CHECK(momentum);
  CHECK_FALSE(moments);

  TrainingArguments cut = sgd_args(root / "cut");
  REQUIRE_THROWS_AS(run(cut, sgd_from(cut), 7), Interrupted);
  cut.resume_from_checkpoint = root / "cut" / "checkpoint-5";
  const TrainResult resumed = run(cut, sgd_from(cut));
  REQUIRE(resumed.step_losses.size() == full.step_losses.size());
  for (std::size_t s = 0; s < full.step_losses.size(); ++s) {
    INFO("step " << s + 1);
    CHECK(resumed.step_losses[s] == full.step_losses[s]);
    CHECK(resumed.step_grad_norms[s] == full.step_grad_norms[s]);
  }

  // An SGD checkpoint does not resume an AdamW run: the settings name the optimizer, and past
  // --ignore_args_mismatch the optimizer file names what it lacks.
  TrainingArguments adamw = sgd_args(root / "adamw");
  adamw.optim = "adamw_torch";
  adamw.resume_from_checkpoint = root / "full" / "checkpoint-5";
  CHECK_THROWS_WITH(run(adamw, adamw_from(adamw)), Catch::Contains("optim: recorded \"sgd\""));
  adamw.ignore_args_mismatch = true;
  CHECK_THROWS_WITH(run(adamw, adamw_from(adamw)),
                    Catch::Contains("optimizer.safetensors") && Catch::Contains("no 'exp_avg'"));
  std::filesystem::remove_all(root);
}
