// EXPECT: Layout must be a linear policy|ProjectionLayout
#include <peft/qwen.hpp>
peft::Qwen2<int, peft::Fp32, peft::Cpu>* model = nullptr;
