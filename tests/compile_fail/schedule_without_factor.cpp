// EXPECT: LrSchedule
#include <peft/qwen.hpp>
struct NotASchedule {};
using T = peft::Trainer<peft::Qwen2<peft::Lora<8>>, peft::AdamW, NotASchedule>;
T* trainer = nullptr;
