// EXPECT: TrainerBackend
#include <peft/qwen.hpp>
// An optimizer policy that steps but brings no checkpoint state (save/load_optimizer_state).
struct Stepless {
  std::int64_t step_count = 0;
  void init(const peft::ParameterList&) {}
  void step(const peft::ParameterList&, double) {}
};
using T = peft::Trainer<peft::Qwen2<peft::Lora<8>>, Stepless>;
T* trainer = nullptr;
