// The host-side memory planner (peft/models/memory_plan.hpp): its parameter counts are the
// published Qwen2.5 sizes, and its byte arithmetic is bf16 = 2 bytes a weight, NF4 = the
// quantiser's own storage, LoRA = 16 bytes a parameter (fp32 master, gradient, two AdamW moments).
#include <catch2/catch.hpp>

#include "peft/models/memory_plan.hpp"
#include "peft/models/presets.hpp"

using namespace peft;

TEST_CASE("the planner counts the Qwen2.5 parameters exactly", "[memory_plan]") {
  CHECK(plan_lora_memory(preset_config<Qwen25_0_5B>(), 8, false).base_parameters == 494032768);
  CHECK(plan_lora_memory(preset_config<Qwen25_7B>(), 8, false).base_parameters == 7615616512);
  CHECK(plan_lora_memory(preset_config<Qwen25_14B>(), 8, false).base_parameters == 14770033664);
  CHECK(plan_lora_memory(preset_config<Qwen25_32B>(), 8, false).base_parameters == 32763876352);
}

TEST_CASE("bf16 base: two bytes a parameter", "[memory_plan]") {
  const auto p = plan_lora_memory(preset_config<Qwen25_7B>(), 8, false);
  CHECK(p.base_bytes() == 2 * p.base_parameters);
}

TEST_CASE("NF4 base: the projections at the quantiser's storage, the rest bf16", "[memory_plan]") {
  const ModelConfig c = preset_config<Qwen25_0_5B>();
  const auto bf16 = plan_lora_memory(c, 8, false);
  const auto nf4 = plan_lora_memory(c, 8, true);
  CHECK(nf4.other_base_bytes == bf16.other_base_bytes);
  // One layer of 0.5B: q/o 896x896, k/v 128x896, gate/up 4864x896, down 896x4864.
  const std::int64_t layer = 2 * nf4::storage_bytes(896 * 896) + 2 * nf4::storage_bytes(128 * 896) +
                             3 * nf4::storage_bytes(4864 * 896);
  CHECK(nf4.projection_bytes == 24 * layer);
  CHECK(nf4::storage_bytes(896 * 896) == 896 * 896 / 2 + 896 * 896 / 64 + 4 * 49 + 4);
  // ~0.516 bytes a weight against 2.
  CHECK(static_cast<double>(nf4.projection_bytes) / static_cast<double>(bf16.projection_bytes) ==
        Approx(0.2578).epsilon(0.002));
}

TEST_CASE("LoRA: r (in + out) per projection, 16 bytes a parameter with AdamW", "[memory_plan]") {
  const ModelConfig c = preset_config<Qwen25_7B>();
  const auto p = plan_lora_memory(c, 8, true);
  const std::int64_t per_layer = 8 * ((3584 + 3584) * 2 + (3584 + 512) * 2 + (3584 + 18944) * 3);
  CHECK(p.lora_parameters == 28 * per_layer);
  CHECK(p.lora_parameters == 20185088);  // PEFT's print_trainable_parameters for Qwen2.5-7B, r=8 all-linear
  CHECK(p.lora_bytes + p.optimizer_bytes == 16 * p.lora_parameters);
  CHECK(p.total_bytes() == p.base_bytes() + 16 * p.lora_parameters);
}
