// EXPECT: the rank must be positive
#include <peft/qwen.hpp>
constexpr int r = peft::Lora<-4>::rank;
