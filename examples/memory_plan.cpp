// memory_plan: the "will it fit" floor for LoRA and QLoRA on the Qwen2.5 shapes, from
// peft/models/memory_plan.hpp: the base weights (bf16 or NF4), the adapters and AdamW's state.
// Activations are not included (they depend on sequence length, recompute and the backend).
//   memory_plan                 # the table in docs/qlora.md
//   memory_plan --lora_rank 64
#include <boost/program_options.hpp>
#include <fmt/format.h>
#include <iostream>

#include "peft/models/memory_plan.hpp"
#include "peft/models/presets.hpp"

using namespace peft;

template <ModelPreset P>
void row(std::int64_t rank) {
  const ModelConfig c = preset_config<P>();
  for (bool nf4 : {false, true}) {
    const MemoryPlan p = plan_lora_memory(c, rank, nf4);
    const double gib = 1024.0 * 1024.0 * 1024.0;
    fmt::print("| {} | {} | {:.2f} | {:.2f} | {:.3f} | {:.2f} |\n", P::name, nf4 ? "NF4 (QLoRA)" : "bf16",
               static_cast<double>(p.projection_bytes) / gib, static_cast<double>(p.other_base_bytes) / gib,
               static_cast<double>(p.lora_bytes + p.optimizer_bytes) / gib, static_cast<double>(p.total_bytes()) / gib);
  }
}

int main(int argc, char** argv) {
  namespace po = boost::program_options;
  try {
    std::int64_t rank = 8;
    po::options_description d("memory_plan (planned weights + optimizer bytes, no activations)");
    d.add_options()("help,h", "show this help")("lora_rank", po::value(&rank)->default_value(8), "LoRA rank r (all-linear)");
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, d), vm);
    po::notify(vm);
    if (vm.count("help")) { std::cout << d << '\n'; return 0; }
    if (rank <= 0) { fmt::print(stderr, "memory_plan: error: --lora_rank must be positive\n"); return 1; }
    fmt::print("LoRA r={} on all linear layers; GiB; weights + adapters + AdamW state only, activations NOT included\n\n",
               rank);
    fmt::print("| model | base | projections | embedding, lm_head, norms, biases (bf16) | LoRA + AdamW (fp32) | total |\n");
    fmt::print("|---|---|---:|---:|---:|---:|\n");
    row<Qwen25_0_5B>(rank);
    row<Qwen25_7B>(rank);
    row<Qwen25_14B>(rank);
    row<Qwen25_32B>(rank);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "memory_plan: error: {}\n", e.what());
    return 1;
  }
}
