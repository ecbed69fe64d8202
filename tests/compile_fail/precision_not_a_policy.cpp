// EXPECT: PrecisionPolicy
#include <peft/qwen.hpp>
peft::Qwen2<peft::Lora<8>, double, peft::Cpu>* model = nullptr;
