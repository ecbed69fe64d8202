// The `swift export` flags export and merge_lora share beyond their own, so a merge recipe runs
// as written on either: --overwrite and ms-swift's name for it, --exist_ok (one setting, the same
// safety rules); --torch_dtype, --max_shard_size and --safe_serialization, checked against what
// the merge writes rather than ignored; flags that change nothing here (accepted, reported); and
// ms-swift's export quantisation and hub upload, refused with what to do instead.
#pragma once
#include <boost/program_options.hpp>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "../sft/sft_args.hpp"  // parse_bool, one_of
#include "../swift_flags.hpp"
#include "peft/io/safetensors.hpp"
#include "peft/io/shard_plan.hpp"

namespace peft::examples {

struct SwiftExportFlags {
  std::string overwrite = "false", exist_ok, torch_dtype, safe_serialization = "true", max_shard_size;
};

// Settled from SwiftExportFlags once parsed (check_swift_export_flags).
struct ExportSettings {
  bool overwrite = false;
  std::vector<std::string> ignored;  // accepted, not used: for the "[args]" line
  std::optional<std::int64_t> max_shard_size;  // bytes; none: the base's own shard files
};

// --model_type / --template are checked to name Qwen2 / Qwen2.5.
inline const std::vector<std::string>& export_accepted_unused_flags() {
  static const std::vector<std::string> flags = {"model_type", "template", "attn_impl", "use_hf"};
  return flags;
}

inline constexpr const char* kQuantisedExportHint =
    "no AWQ / GPTQ / BNB quantised export here; for a quantised model file, write llama.cpp's 8-bit GGUF: "
    "export --adapters CKPT --to_gguf true --gguf_type q8_0";
inline constexpr const char* kUploadHint =
    "nothing here uploads; upload the output folder with `huggingface-cli upload` or `modelscope upload`";
inline constexpr UnsupportedFlag kUnsupportedExportFlags[] = {
    {"quant_method", kQuantisedExportHint},
    {"quant_bits", kQuantisedExportHint},
    {"quant_n_samples", kQuantisedExportHint},
    {"dataset", "in `swift export` it is the calibration data of AWQ / GPTQ quantisation, which is not done here; "
                "for a quantised model file: export --adapters CKPT --to_gguf true --gguf_type q8_0"},
    {"hub_model_id", kUploadHint},
    {"hub_token", kUploadHint},
};

inline void add_swift_export_flags(boost::program_options::options_description& d, SwiftExportFlags& f,
                                   const char* overwrite_help) {
  namespace po = boost::program_options;
  d.add_options()
      ("overwrite", bool_flag(&f.overwrite), overwrite_help)
      ("exist_ok", bool_flag(&f.exist_ok), "ms-swift's name for --overwrite (one setting, the same rules)")
      ("torch_dtype", po::value(&f.torch_dtype), "the merged weights' dtype: bfloat16 | float32 | float16; default "
       "the base's own (kept as stored); another converts every weight, each rounded once")
      ("safe_serialization", bool_flag(&f.safe_serialization), "true only: the weights are always safetensors")
      ("max_shard_size", po::value(&f.max_shard_size), "cut the merged weights into files of at most this size, as "
       "save_pretrained does (5GB, 500MB, 2GiB; one file: model.safetensors); default: the base's own files")
      ("push_to_hub", po::value<std::vector<std::string>>()->multitoken()->zero_tokens(), "false only: nothing "
       "here uploads");
  add_accepted_unused(d, export_accepted_unused_flags());
  add_unsupported(d, kUnsupportedExportFlags);
}

inline ExportSettings check_swift_export_flags(const boost::program_options::variables_map& vm,
                                               const SwiftExportFlags& f) {
  const std::vector<std::string> as_ours = refuse_unsupported(vm, kUnsupportedExportFlags);
  refuse_push_to_hub(vm, "the output folder");
  require_qwen2_family(vm);
  require(detail::parse_bool("safe_serialization", f.safe_serialization),
          "--safe_serialization false: the weights are always written as safetensors (no pytorch_model.bin); drop the "
          "flag");
  ExportSettings s;
  s.overwrite = detail::parse_bool("overwrite", f.overwrite);
  if (vm.count("exist_ok"))
    take_alias(vm, "exist_ok", detail::parse_bool("exist_ok", f.exist_ok), "overwrite", s.overwrite);
  if (vm.count("max_shard_size")) s.max_shard_size = parse_max_shard_size(f.max_shard_size);
  s.ignored = given_flags(vm, export_accepted_unused_flags());
  s.ignored.insert(s.ignored.end(), as_ours.begin(), as_ours.end());
  return s;
}

// --torch_dtype: the dtype the merged folder stores its weights in, as ms-swift's export saves the
// model in the dtype it loaded it in (config.json's by default). The base's own dtype (or no
// flag) keeps every tensor as stored: the merge rounds W + BA once into each weight's dtype and
// copies the rest byte for byte. Another converts every floating tensor (merge_lora's store_as),
// which only a merge writes: a GGUF's type is --gguf_type. `base_dir` empty: the embedded
// default model, written in float32. Returns the dtype to convert to, if any.
inline std::optional<DType> export_store_dtype(std::string torch_dtype, const std::filesystem::path& base_dir,
                                               bool merges) {
  if (torch_dtype.empty()) return std::nullopt;
  for (const auto& [short_name, name] : {std::pair{"bf16", "bfloat16"}, {"fp32", "float32"}, {"fp16", "float16"}})
    if (torch_dtype == short_name) torch_dtype = name;
  detail::one_of("torch_dtype", torch_dtype, {"bfloat16", "float32", "float16"});
  std::set<std::string> stored;
  if (base_dir.empty()) {
    stored.insert(torch_dtype_name(DType::F32));
  } else {
    const SafetensorsModel base = SafetensorsModel::open(base_dir);
    for (const auto& name : base.names())
      if (const std::string t = torch_dtype_name(base.tensor(name).dtype); !t.empty()) stored.insert(t);
  }
  if (stored.size() == 1 && *stored.begin() == torch_dtype) return std::nullopt;  // as stored
  require(merges, "--torch_dtype {}: the weights of {} are {}; a conversion applies to the merged folder "
          "(--merge_lora true), and the GGUF's type is --gguf_type; drop the flag or add --merge_lora true",
          torch_dtype, base_dir.empty() ? "the embedded default model" : base_dir.string(), fmt::join(stored, " and "));
  for (const DType t : {DType::F32, DType::BF16, DType::F16})
    if (torch_dtype == torch_dtype_name(t)) return t;
  fail("--torch_dtype {}: not a floating dtype", torch_dtype);  // one_of above checked it
}

}  // namespace peft::examples
