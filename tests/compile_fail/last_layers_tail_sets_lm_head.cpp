// EXPECT: whole-model settings taken from Rest
#include <peft/qwen.hpp>
// The tail asks for a trained lm_head while the rest does not: decided in two places, rejected.
using Tail = peft::Projections<peft::Full, peft::Full, peft::Full, peft::Full, peft::Full, peft::Full, peft::Full,
                               peft::Full>;
peft::Qwen2<peft::LastLayers<2, Tail, peft::Lora<8>>, peft::Fp32, peft::Cpu> model(peft::ModelConfig{},
                                                                                  peft::LoraConfig{});
