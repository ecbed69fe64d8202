// EXPECT: a LoRA adapter on lm_head is not supported
#include <peft/qwen.hpp>
using L = peft::Projections<peft::Lora<8>, peft::Lora<8>, peft::Lora<8>, peft::Lora<8>, peft::Frozen, peft::Frozen,
                            peft::Frozen, peft::Lora<8>>;
peft::Qwen2Model<L, peft::Fp32, peft::Cpu> model(peft::ModelConfig{}, peft::LoraConfig{});
