// EXPECT: CausalLm
#include <peft/qwen.hpp>
struct NotAModel {
  void zero_grad() {}
};
using T = peft::Trainer<NotAModel>;
T* trainer = nullptr;
