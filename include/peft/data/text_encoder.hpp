// What the data layer needs from a tokenizer, as a concept: text in, ids out, and a lookup for
// the chat template's special tokens. peft::text::Tokenizer models it; tests pass a tiny fake, so
// the chat template and the dataset loader are tested without a 7 MB vocabulary.
#pragma once
#include <concepts>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "peft/core/error.hpp"

namespace peft::data {

// encode() must behave as HF's encode(text, add_special_tokens=False): special tokens written in
// the text ("<|im_end|>") are matched as single ids.
template <class T>
concept TextEncoder = requires(const T& tokenizer, std::string_view text) {
  { tokenizer.encode(text) } -> std::convertible_to<std::vector<std::int32_t>>;
  { tokenizer.token_to_id(text) } -> std::convertible_to<std::optional<std::int32_t>>;
};

// Stands in for "no tokenizer" where only pre-tokenized data is loaded (load_datasets(opts,
// nullptr, vocab)); it is never called through, since the pointer to it is null.
struct NoTokenizer {
  std::vector<std::int32_t> encode(std::string_view) const { fail("no tokenizer was given"); }
  std::optional<std::int32_t> token_to_id(std::string_view) const { return std::nullopt; }
};

}  // namespace peft::data
