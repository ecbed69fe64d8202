// EXPECT: must adapt the same projections with the same rank
#include <peft/qwen.hpp>
// LoRA r=8 on the tail's attention, r=16 everywhere else: one PEFT adapter cannot say that.
peft::Qwen2<peft::LastLayers<2, peft::AttentionOnly<peft::Lora<8>>, peft::Lora<16>>, peft::Fp32, peft::Cpu> model(
    peft::ModelConfig{}, peft::LoraConfig{});
