// The CUDA programs' memory decision (models/cuda/memory_budget.hpp), host arithmetic only: the
// planned parts add up, --gradient_checkpointing picks the plan, a plan that does not fit the free
// memory falls back to the next leaner one (keep -> selective -> recompute), and a run that cannot fit fails with the numbers; where
// the embedding lives (models/cuda/model_options.hpp).
#include <catch2/catch.hpp>

#include <string>

#include "peft/models/cuda/memory_budget.hpp"
#include "peft/models/cuda/model_options.hpp"
#include "peft/policies/activation_sets.hpp"

using namespace peft;
using namespace peft::cuda;
using Catch::Contains;
using Catch::EndsWith;
using Catch::Equals;
using Catch::StartsWith;

namespace {

constexpr std::size_t GB = 1000000000;

// The 7B at 2048 tokens, in round numbers of the shape the model's plan gives.
const PlannedMemory keep{15'300'000'000, 7'000'000'000, 200'000'000, 600'000'000};
const PlannedMemory selective{15'300'000'000, 2'400'000'000, 200'000'000, 600'000'000};
const PlannedMemory recompute{15'300'000'000, 700'000'000, 200'000'000, 600'000'000};

}  // namespace

TEST_CASE("planned memory adds its parts and prints each") {
  CHECK(keep.total() == 23'100'000'000);
  CHECK(recompute.total() == 16'800'000'000);
  const std::string s = describe(recompute);
  CHECK(s == "16.80 GB (weights 15.30 GB, activations 0.70 GB, optimizer state 0.20 GB, workspace 0.60 GB)");
}

TEST_CASE("an embedding in host memory is printed apart and counts neither in the total nor in the fit") {
  PlannedMemory p = recompute;
  p.host_embedding = 1'090'000'000;
  CHECK(p.total() == 16'800'000'000);
  CHECK(describe(p) == "16.80 GB (weights 15.30 GB, activations 0.70 GB, optimizer state 0.20 GB, workspace 0.60 GB); "
                       "embedding: host (pinned) 1.09 GB");
  CHECK(fits(p, p.total() + kUnplannedReserve));
}

TEST_CASE("the embedding goes to host memory only when frozen and untied, and host is refused otherwise") {
  CHECK(embedding_in_host_memory(EmbeddingHome::automatic, false, false));
  CHECK_FALSE(embedding_in_host_memory(EmbeddingHome::automatic, false, true));  // tied: lm_head's operand
  CHECK_FALSE(embedding_in_host_memory(EmbeddingHome::automatic, true, false));  // trained
  CHECK_FALSE(embedding_in_host_memory(EmbeddingHome::device, false, false));
  CHECK(embedding_in_host_memory(EmbeddingHome::host, false, false));
  CHECK(CudaModelOptions{}.embedding == EmbeddingHome::automatic);
  CHECK_THROWS_WITH(embedding_in_host_memory(EmbeddingHome::host, false, true), Contains("tied"));
  CHECK_THROWS_WITH(embedding_in_host_memory(EmbeddingHome::host, true, false), Contains("--train_type full"));
}

TEST_CASE("the CUDA model refuses shapes its kernels do not take, naming the field") {
  ModelConfig cfg;
  cfg.hidden_size = 64;
  cfg.intermediate_size = 176;
  cfg.num_attention_heads = 4;
  cfg.num_key_value_heads = 2;
  cfg.head_dim = 16;
  CHECK_NOTHROW(check_cuda_model_shapes(cfg));
  cfg.intermediate_size = 100;
  CHECK_THROWS_WITH(check_cuda_model_shapes(cfg), Contains("intermediate_size to be a multiple of 8 (config has 100)"));
  cfg.intermediate_size = 176;
  cfg.head_dim = 256;
  CHECK_THROWS_WITH(check_cuda_model_shapes(cfg), Contains("even head_dim <= 128 (got 256)"));
}

TEST_CASE("a plan fits when it and the unplanned reserve fit the free memory") {
  CHECK(fits(recompute, recompute.total() + kUnplannedReserve));
  CHECK_FALSE(fits(recompute, recompute.total() + kUnplannedReserve - 1));
}

TEST_CASE("gradient_checkpointing takes auto, true, false and selective, and names a bad value") {
  CHECK(parse_gradient_checkpointing("auto") == Activations::kAuto);
  CHECK(parse_gradient_checkpointing("true") == Activations::kRecompute);
  CHECK(parse_gradient_checkpointing("True") == Activations::kRecompute);
  CHECK(parse_gradient_checkpointing("false") == Activations::kKeep);
  CHECK(parse_gradient_checkpointing("0") == Activations::kKeep);
  CHECK(parse_gradient_checkpointing("selective") == Activations::kSelective);
  CHECK_THROWS_WITH(parse_gradient_checkpointing("partial"),
                    Contains("--gradient_checkpointing: 'partial' is not supported (valid: auto, true, false, selective)"));
}

TEST_CASE("gradient_checkpointing auto takes the fastest plan that fits and names the leaner ones") {
  ActivationChoice c = choose_activations(Activations::kAuto, keep, selective, recompute, 80 * GB);
  CHECK(c.policy == Activations::kKeep);
  CHECK_THAT(c.note, StartsWith("[memory] --gradient_checkpointing auto (the fastest plan that fits): false, keep every "
                                "layer's activations; planned peak 23.10 GB") &&
                         Contains("80.00 GB free on the GPU (0.54 GB of it kept for cuBLAS and graphs); to use less "
                                  "memory: --gradient_checkpointing selective (18.50 GB), true (16.80 GB)") &&
                         !Contains("too large"));
  c = choose_activations(Activations::kAuto, keep, selective, recompute, 23 * GB);  // a 24 GB card
  CHECK(c.policy == Activations::kSelective);
  CHECK_THAT(c.note, Contains("auto (the fastest plan that fits): selective, keep the attention side") &&
                         Contains("23.00 GB free on the GPU (0.54 GB of it kept for cuBLAS and graphs); too large: "
                                  "false 23.10 GB; to use less memory: --gradient_checkpointing true (16.80 GB)"));
  c = choose_activations(Activations::kAuto, keep, selective, recompute, 18 * GB);
  CHECK(c.policy == Activations::kRecompute);
  CHECK_THAT(c.note, EndsWith("18.00 GB free on the GPU (0.54 GB of it kept for cuBLAS and graphs); too large: "
                               "false 23.10 GB, selective 18.50 GB"));
  // the boundary is fits(): the plan plus the unplanned reserve
  CHECK(choose_activations(Activations::kAuto, keep, selective, recompute, keep.total() + kUnplannedReserve).policy ==
        Activations::kKeep);
  CHECK(choose_activations(Activations::kAuto, keep, selective, recompute, keep.total() + kUnplannedReserve - 1)
            .policy == Activations::kSelective);
  CHECK_THROWS_WITH(choose_activations(Activations::kAuto, keep, selective, recompute, 12 * GB),
                    Contains("--gradient_checkpointing auto: keep-all plans 23.10 GB, and even recompute plans 16.80 GB") &&
                        Contains("12.00 GB free"));
}

TEST_CASE("gradient_checkpointing true recomputes even when keeping would fit") {
  const ActivationChoice c = choose_activations(Activations::kRecompute, keep, selective, recompute, 80 * GB);
  CHECK(c.policy == Activations::kRecompute);
  CHECK_THAT(c.note, Contains("--gradient_checkpointing true") && Contains("planned peak 16.80 GB") &&
                         Contains("80.00 GB free") &&
                         Contains("; faster plans that fit: --gradient_checkpointing false (23.10 GB), selective (18.50 GB)"));
  // a 24 GB card: only selective fits beside recompute; a 17 GB one: nothing faster
  CHECK_THAT(choose_activations(Activations::kRecompute, keep, selective, recompute, 23 * GB).note,
             Contains("; faster plans that fit: --gradient_checkpointing selective (18.50 GB)") && !Contains("false ("));
  CHECK_THAT(choose_activations(Activations::kRecompute, keep, selective, recompute, 18 * GB).note,
             !Contains("faster plans"));
}

TEST_CASE("gradient_checkpointing false keeps every activation when that fits") {
  const ActivationChoice c = choose_activations(Activations::kKeep, keep, selective, recompute, 80 * GB);
  CHECK(c.policy == Activations::kKeep);
  CHECK_THAT(c.note, Contains("keep every layer's activations") && Contains("planned peak 23.10 GB"));
}

TEST_CASE("gradient_checkpointing selective keeps the attention side when that fits") {
  const ActivationChoice c = choose_activations(Activations::kSelective, keep, selective, recompute, 23 * GB);
  CHECK(c.policy == Activations::kSelective);
  CHECK_THAT(c.note, Contains("--gradient_checkpointing selective: keep the attention side") &&
                         Contains("planned peak 18.50 GB") && !Contains("faster plans"));
  CHECK_THAT(choose_activations(Activations::kSelective, keep, selective, recompute, 80 * GB).note,
             Contains("; faster plans that fit: --gradient_checkpointing false (23.10 GB)"));
}

TEST_CASE("gradient_checkpointing false on a 24 GB card switches to selective and says why") {
  const ActivationChoice c = choose_activations(Activations::kKeep, keep, selective, recompute, 23 * GB);  // a 4090
  CHECK(c.policy == Activations::kSelective);
  CHECK_THAT(c.note, Contains("plans 23.10 GB") && Contains("23.00 GB free") &&
                         Contains("switching to --gradient_checkpointing selective") && Contains("planned peak 18.50 GB"));
}

TEST_CASE("a plan falls back to recompute when neither keep nor selective fits") {
  for (const Activations asked : {Activations::kKeep, Activations::kSelective}) {
    const ActivationChoice c = choose_activations(asked, keep, selective, recompute, 18 * GB);
    CHECK(c.policy == Activations::kRecompute);
    CHECK_THAT(c.note, Contains("18.00 GB free") && Contains("switching to --gradient_checkpointing true (recompute") &&
                           Contains("planned peak 16.80 GB"));
  }
  // keep asked: the note also names selective's plan, tried on the way
  CHECK_THAT(choose_activations(Activations::kKeep, keep, selective, recompute, 18 * GB).note,
             Contains("plans 23.10 GB (weights") && Contains(", selective 18.50 GB but there is 18.00 GB free"));
  CHECK_THAT(choose_activations(Activations::kSelective, keep, selective, recompute, 18 * GB).note,
             Contains("plans 18.50 GB (weights") && Contains("workspace 0.60 GB) but there is"));
  // exactly at the boundary: the plan plus the unplanned reserve
  CHECK(choose_activations(Activations::kSelective, keep, selective, recompute, selective.total() + kUnplannedReserve)
            .policy == Activations::kSelective);
  CHECK(choose_activations(Activations::kSelective, keep, selective, recompute,
                           selective.total() + kUnplannedReserve - 1)
            .policy == Activations::kRecompute);
}

TEST_CASE("a run that does not fit even with recompute fails with the numbers") {
  CHECK_THROWS_WITH(choose_activations(Activations::kRecompute, keep, selective, recompute, 16 * GB),
                    Contains("does not fit") && Contains("--gradient_checkpointing true (recompute)") &&
                        Contains("16.80 GB") && Contains("16.00 GB free") && Contains("--max_length"));
  CHECK_THROWS_WITH(choose_activations(Activations::kKeep, keep, selective, recompute, 12 * GB),
                    Contains("plans 23.10 GB") && Contains("even recompute") && Contains("16.80 GB") &&
                        Contains("12.00 GB free"));
  CHECK_THROWS_WITH(choose_activations(Activations::kSelective, keep, selective, recompute, 12 * GB),
                    Contains("--gradient_checkpointing selective plans 18.50 GB") && Contains("even recompute"));
}

TEST_CASE("recompute_num_layers is described for the run's log by the layers it rebuilds and keeps") {
  // n sharing layers rebuild n - 1 times: the last sharer's values are still there.
  CHECK(describe_recompute_layers(-1, 28) ==
        "layers 0-26 rebuild in the backward, layer 27 (the last) shares their set without rebuilding");
  CHECK(describe_recompute_layers(28, 28) == describe_recompute_layers(-1, 28));
  CHECK(describe_recompute_layers(18, 28) == "layers 0-16 rebuild in the backward, layer 17 shares their set without "
                                             "rebuilding, layers 18-27 keep all their activations");
  CHECK(describe_recompute_layers(27, 28) == "layers 0-25 rebuild in the backward, layer 26 shares their set without "
                                             "rebuilding, layer 27 keeps all its activations");
  CHECK(describe_recompute_layers(2, 4) == "layer 0 rebuilds in the backward, layer 1 shares their set without "
                                           "rebuilding, layers 2-3 keep all their activations");
  CHECK(describe_recompute_layers(1, 2) == "no layer rebuilds: all 2 keep their activations");
  CHECK(describe_recompute_layers(0, 28) == "no layer rebuilds: all 28 keep their activations");
}

TEST_CASE("the activation sets each policy lays out, and which layers rebuild") {
  // keep-all: a set a layer, nothing shared or rebuilt, whatever the flag says
  for (const int n : {-1, 0, 3}) {
    const ActivationSets k = ActivationSets::of_policy(5, true, true, n);
    CHECK(k.count() == 5);
    CHECK(k.mlp_sharers() == 0);
    for (std::size_t l = 0; l < 5; ++l) {
      CHECK(k.of(l) == l);
      CHECK(!k.rebuilds(l));
    }
  }
  for (int layers = 1; layers <= 8; ++layers)
    for (int n = -1; n <= layers; ++n) {
      const std::size_t L = static_cast<std::size_t>(layers), N = n < 0 ? L : static_cast<std::size_t>(n);
      // recompute: the sharers use set 0, each other layer a set of its own after it
      const ActivationSets r = ActivationSets::of_policy(L, false, true, n);
      CHECK(r.mlp_sharers() == 0);
      CHECK(r.count() == L - N + (N > 0 ? 1 : 0));
      std::size_t rebuilt = 0;
      for (std::size_t l = 0; l < L; ++l) {
        CHECK(r.of(l) < r.count());
        CHECK(r.of(l) == (l < N ? 0 : l - N + (N > 0 ? 1 : 0)));
        if (l > 0 && l >= N) CHECK(r.of(l) == r.of(l - 1) + 1);  // a kept layer's set is its own
        rebuilt += r.rebuilds(l) ? 1 : 0;
      }
      CHECK(rebuilt == (N > 0 ? N - 1 : 0));  // the last sharer's values are still there
      // selective: a set a layer, the first N sharing one MLP side, the same layers rebuilding it
      const ActivationSets s = ActivationSets::of_policy(L, true, false, n);
      CHECK(s.count() == L);
      CHECK(s.mlp_sharers() == N);
      for (std::size_t l = 0; l < L; ++l) {
        CHECK(s.of(l) == l);
        CHECK(s.rebuilds(l) == r.rebuilds(l));
      }
    }
}

TEST_CASE("recompute_num_layers' range is 0 to the layer count or -1, the error naming the model") {
  for (int n = -1; n <= 4; ++n) CHECK_NOTHROW(check_recompute_num_layers(n, 4, "m/config.json"));
  CHECK_THROWS_WITH(check_recompute_num_layers(5, 4, "m/config.json"),
                    Equals("--recompute_num_layers 5: m/config.json has 4 layers (0 to 4, or -1 for all of them)"));
  CHECK_THROWS_WITH(check_recompute_num_layers(-2, 28, "the model"),
                    Equals("--recompute_num_layers -2: the model has 28 layers (0 to 28, or -1 for all of them)"));
}

TEST_CASE("the policy that ran is written back as the flag's value that asks for it") {
  for (const Activations a : {Activations::kKeep, Activations::kSelective, Activations::kRecompute, Activations::kAuto})
    CHECK(parse_gradient_checkpointing(gradient_checkpointing_flag(a)) == a);
  CHECK(std::string(gradient_checkpointing_flag(Activations::kKeep)) == "false");
  CHECK(std::string(gradient_checkpointing_flag(Activations::kRecompute)) == "true");
  CHECK(ActivationSets::keeps_all(true, true));
  CHECK_FALSE(ActivationSets::keeps_all(true, false));
  CHECK_FALSE(ActivationSets::keeps_all(false, true));
}

TEST_CASE("the fewest rebuilt layers that fit the free memory, from two plans") {
  // Every layer rebuilds: 16.80 GB; the last keeping everything adds 0.20 GB (a layer's set).
  const PlannedMemory one_kept{15'300'000'000, 900'000'000, 200'000'000, 600'000'000};
  const std::size_t reserve = kUnplannedReserve;
  // Room for 10 kept layers of 28 (and a bit): 18 rebuild, planned 16.80 + 10 x 0.20 GB.
  RebuiltLayersFit f = fewest_rebuilt_layers(recompute, one_kept, 28, 18'850'000'000 + reserve);
  CHECK(f.rebuilt == 18);
  CHECK(f.planned == 18'800'000'000);
  // Room for exactly 10: the same; for 9.99: 19 rebuild.
  CHECK(fewest_rebuilt_layers(recompute, one_kept, 28, 18'800'000'000 + reserve).rebuilt == 18);
  CHECK(fewest_rebuilt_layers(recompute, one_kept, 28, 18'799'999'999 + reserve).rebuilt == 19);
  // No room beyond every layer rebuilding: all 28 rebuild; not even that: -1.
  f = fewest_rebuilt_layers(recompute, one_kept, 28, 16'900'000'000 + reserve);
  CHECK(f.rebuilt == 28);
  CHECK(f.planned == recompute.total());
  CHECK(fewest_rebuilt_layers(recompute, one_kept, 28, 16'000'000'000).rebuilt == -1);
  // Room for 27 kept layers or more: none needs to rebuild (one rebuilding layer costs what none do).
  CHECK(fewest_rebuilt_layers(recompute, one_kept, 28, 80 * GB).rebuilt == 0);
  CHECK(fewest_rebuilt_layers(recompute, one_kept, 28, 80 * GB).planned == 16'800'000'000 + 27 * 200'000'000ull);
  CHECK(fewest_rebuilt_layers(recompute, one_kept, 28, 16'800'000'000 + 26 * 200'000'000ull + reserve).rebuilt == 2);
}

TEST_CASE("a run whose kept layers do not fit is told to raise --recompute_num_layers") {
  CHECK_THROWS_WITH(choose_activations(Activations::kRecompute, keep, selective, recompute, 16 * GB, true),
                    Contains("the run does not fit the GPU") &&
                        Contains("; raise --recompute_num_layers (or leave it out), lower --max_length"));
  CHECK_THROWS_WITH(choose_activations(Activations::kRecompute, keep, selective, recompute, 16 * GB),
                    Contains("the run does not fit the GPU") && !Contains("--recompute_num_layers"));
}

TEST_CASE("kept layers: described when given, taken when false or auto does not fit, named when true or selective") {
  const PlannedMemory kept_plan{15'300'000'000, 900'000'000, 200'000'000, 600'000'000};  // recompute + 0.20 GB
  int counted = 0;  // the one-kept plan is counted only when the answer needs it
  const auto one_kept = [&] { return ++counted, kept_plan; };
  const std::size_t free = 18'850'000'000 + kUnplannedReserve;  // keep (23.10 GB) does not fit; 10 layers would
  // Given: described, the value kept.
  KeptLayersAdvice a = advise_kept_layers(Activations::kRecompute, Activations::kRecompute, 18, keep, recompute,
                                          one_kept, 28, free);
  CHECK(a.recompute_num_layers == 18);
  CHECK_THAT(a.note, Contains("[memory] --recompute_num_layers 18: layers 0-16 rebuild"));
  CHECK(counted == 0);
  // true asked: named only.
  a = advise_kept_layers(Activations::kRecompute, Activations::kRecompute, -1, keep, recompute, one_kept, 28, free);
  CHECK(a.recompute_num_layers == -1);
  CHECK_THAT(a.note, Contains("[memory] faster within the free memory: --gradient_checkpointing true "
                              "--recompute_num_layers 18 (planned peak 18.80 GB: layers 0-16 rebuild"));
  // false asked, fell back to recompute: taken.
  a = advise_kept_layers(Activations::kKeep, Activations::kRecompute, -1, keep, recompute, one_kept, 28, free);
  CHECK(a.recompute_num_layers == 18);
  CHECK_THAT(a.note, Contains("[memory] the layers that fit keep everything, as --gradient_checkpointing false asked: "
                              "--gradient_checkpointing true --recompute_num_layers 18"));
  // auto asked (the programs' default), fell back: taken, as for false.
  a = advise_kept_layers(Activations::kAuto, Activations::kRecompute, -1, keep, recompute, one_kept, 28, free);
  CHECK(a.recompute_num_layers == 18);
  CHECK_THAT(a.note, Contains("[memory] the layers that fit keep everything, as --gradient_checkpointing auto asked: "
                              "--gradient_checkpointing true --recompute_num_layers 18"));
  // Nothing to say: keep-all fits, or was chosen, or not one layer more fits, or the plans do not step.
  CHECK(advise_kept_layers(Activations::kRecompute, Activations::kRecompute, -1, keep, recompute, one_kept, 28, 80 * GB)
            .note.empty());
  CHECK(advise_kept_layers(Activations::kKeep, Activations::kKeep, -1, keep, recompute, one_kept, 28, 80 * GB)
            .note.empty());
  CHECK(counted == 3);  // the three runs above that named or took kept layers
  a = advise_kept_layers(Activations::kKeep, Activations::kRecompute, -1, keep, recompute, one_kept, 28,
                         16'900'000'000 + kUnplannedReserve);
  CHECK(a.note.empty());
  CHECK(a.recompute_num_layers == -1);
  CHECK(advise_kept_layers(Activations::kKeep, Activations::kRecompute, -1, keep, recompute,
                           [&] { return recompute; }, 28, free)
            .note.empty());
}
