// peft: parameter-efficient fine-tuning of Qwen2.5 models. The one header users include.
//
//   using Model   = peft::Qwen2<peft::Lora<8>, peft::Bf16Mixed, peft::Cpu>;
//   using Trainer = peft::Trainer<Model, peft::AdamW, peft::CosineWithWarmup>;
//
// Layout of the library (one concern per folder): core/ (errors, tensors, RNG), io/ (safetensors,
// config.json, PEFT adapters, LoRA merge), policies/ (linear, precision, device), layers/ (each layer's
// forward and backward), kernels/cpu/ (reference kernels), models/ (Qwen2, presets),
// optim/ (AdamW, schedules), text/ (tokenizer), data/ (dataset formats, chat template, packing),
// train/ (trainer, checkpoints, hooks), generate/ (KV cache, sampling, generator; docs/generation.md).
#pragma once

#include "peft/core/error.hpp"
#include "peft/core/rng.hpp"
#include "peft/core/tensor.hpp"
#include "peft/data/chat_template.hpp"
#include "peft/data/dataset_loader.hpp"
#include "peft/data/packed_batch.hpp"
#include "peft/data/sample.hpp"
#include "peft/generate/generator.hpp"
#include "peft/generate/greedy.hpp"
#include "peft/io/merge_lora.hpp"
#include "peft/io/model_config.hpp"
#include "peft/io/peft_adapter.hpp"
#include "peft/io/safetensors.hpp"
#include "peft/compositions.hpp"
#include "peft/models/presets.hpp"
#include "peft/models/qwen2.hpp"
#include "peft/optim/adamw.hpp"
#include "peft/optim/optimizer.hpp"
#include "peft/optim/schedules.hpp"
#include "peft/optim/sgd.hpp"
#include "peft/policies/device.hpp"
#include "peft/policies/linear_policy.hpp"
#include "peft/policies/precision.hpp"
#include "peft/text/tokenizer.hpp"
#include "peft/train/checkpoint.hpp"
#include "peft/train/optimizer_choice.hpp"
#include "peft/train/trainer.hpp"
