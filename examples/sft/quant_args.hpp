// ms-swift's quantisation flags (`--quant_method bnb --quant_bits 4 --bnb_4bit_*`): QLoRA, the
// LoRA adapters trained on a frozen base held in NF4 (peft/quant/nf4.hpp, docs/qlora.md). What we
// implement is exactly bitsandbytes' NF4 with double quantisation; every other choice those
// flags allow is refused with a sentence naming the flag, never silently run as something else.
#pragma once
#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>
#include <string>

#include "peft/core/error.hpp"

namespace peft::examples {

struct QuantArgs {
  std::string method;                  // "" (none) | bnb
  int bits = 0;                        // 0 (none) | 4
  std::string quant_type = "nf4";      // --bnb_4bit_quant_type
  std::string double_quant = "true";   // --bnb_4bit_use_double_quant
  std::string compute_dtype;           // --bnb_4bit_compute_dtype; empty: follows --torch_dtype
  std::string quant_storage;           // --bnb_4bit_quant_storage; empty or uint8
  bool nf4() const { return bits == 4; }
};

inline void add_quant_options(boost::program_options::options_description& d, QuantArgs& q) {
  namespace po = boost::program_options;
  d.add_options()
      ("quant_method", po::value(&q.method), "bnb: QLoRA, the frozen base quantised to NF4 on load (with --quant_bits 4)")
      ("quant_bits", po::value(&q.bits)->default_value(0), "4 with --quant_method bnb (0: no quantisation)")
      ("bnb_4bit_quant_type", po::value(&q.quant_type)->default_value("nf4"), "nf4 (fp4 is not supported)")
      ("bnb_4bit_use_double_quant", po::value(&q.double_quant)->default_value("true"),
       "true: the block absmax values are 8-bit quantised too (the only mode implemented)")
      ("bnb_4bit_compute_dtype", po::value(&q.compute_dtype), "bfloat16 | float32 (default: --torch_dtype)")
      ("bnb_4bit_quant_storage", po::value(&q.quant_storage), "uint8 (two 4-bit codes per byte; the default)");
}

// Checks the combination and fills the defaults; `args_json` (args.json) then records the
// quantisation with ms-swift's names and types.
inline void validate_quant_args(QuantArgs& q, const std::string& train_type, const std::string& torch_dtype,
                                nlohmann::json& args_json) {
  const bool quantised = !q.method.empty() || q.bits != 0;
  if (quantised) {
    require(q.method == "bnb",
            "--quant_method {}: not supported; only bnb (4-bit NF4, QLoRA) is implemented{}", q.method.empty() ? "(none)" : q.method,
            q.method == "gptq" || q.method == "awq" ? " (GPTQ/AWQ checkpoints are pre-quantised; give the original model)" : "");
    require(q.bits != 8, "--quant_bits 8: bitsandbytes' 8-bit (LLM.int8) base is not supported; use --quant_bits 4 (NF4)");
    require(q.bits != 0, "--quant_method bnb needs --quant_bits 4 (NF4, QLoRA), as ms-swift");
    require(q.bits == 4, "--quant_bits {}: not supported with --quant_method bnb; use --quant_bits 4 (NF4)", q.bits);
    require(q.quant_type == "nf4", "--bnb_4bit_quant_type {}: not supported; only nf4 is implemented", q.quant_type);
    require(q.double_quant == "true" || q.double_quant == "True" || q.double_quant == "1",
            "--bnb_4bit_use_double_quant {}: not supported; the NF4 base is always double-quantised (true), as QLoRA's "
            "recipe and ms-swift's default", q.double_quant);
    if (q.compute_dtype.empty()) q.compute_dtype = torch_dtype;
    if (q.compute_dtype == "bf16") q.compute_dtype = "bfloat16";
    if (q.compute_dtype == "fp32") q.compute_dtype = "float32";
    require(q.compute_dtype == "bfloat16" || q.compute_dtype == "float32",
            "--bnb_4bit_compute_dtype {}: not supported (valid: bfloat16, float32)", q.compute_dtype);
    require(q.compute_dtype == torch_dtype,
            "--bnb_4bit_compute_dtype {} with --torch_dtype {}: this program computes and stores the unquantised "
            "weights in one dtype; give the same for both", q.compute_dtype, torch_dtype);
    require(q.quant_storage.empty() || q.quant_storage == "uint8",
            "--bnb_4bit_quant_storage {}: not supported; the codes are stored two per byte (uint8)", q.quant_storage);
    require(train_type != "full",
            "--quant_bits 4 with --train_type full: a 4-bit base cannot be trained; QLoRA trains LoRA adapters on the "
            "frozen quantised base, so use --train_type lora (or drop --quant_bits for full fine-tuning)");
  } else {
    for (const char* flag : {"bnb_4bit_compute_dtype", "bnb_4bit_quant_storage"})
      require(!args_json.contains(flag), "--{} needs --quant_method bnb --quant_bits 4", flag);
  }
  // args.json, as ms-swift writes these fields (null when unset).
  args_json["quant_method"] = quantised ? nlohmann::json(q.method) : nlohmann::json(nullptr);
  args_json["quant_bits"] = quantised ? nlohmann::json(q.bits) : nlohmann::json(nullptr);
  args_json["bnb_4bit_quant_type"] = q.quant_type;
  args_json["bnb_4bit_use_double_quant"] = true;
  args_json["bnb_4bit_compute_dtype"] = quantised ? nlohmann::json(q.compute_dtype) : nlohmann::json(nullptr);
  args_json["bnb_4bit_quant_storage"] = quantised ? nlohmann::json("uint8") : nlohmann::json(nullptr);
}

}  // namespace peft::examples
