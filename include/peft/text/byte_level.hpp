// GPT-2's byte-level alphabet: every byte gets a printable Unicode character so that vocab and
// merges can be stored as text (' ' is 'Ġ', '\n' is 'Ċ'). The mapping is a bijection, so the
// tokenizer converts the vocabulary back to raw bytes once at load and runs BPE on bytes: no
// per-character mapping on the encode path. This table is only needed at load, for
// token_to_id/id_to_token, and for ByteLevel's decode fallback.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "peft/text/utf8.hpp"

namespace peft::detail {

class ByteLevelAlphabet {
 public:
  static const ByteLevelAlphabet& instance() {
    static const ByteLevelAlphabet alphabet;
    return alphabet;
  }

  char32_t char_of(unsigned char byte) const { return byte_to_char_[byte]; }

  // Raw bytes -> their byte-level spelling (UTF-8), e.g. " hi" -> "Ġhi".
  std::string encode(std::string_view bytes) const {
    std::string out;
    out.reserve(bytes.size() * 2);
    for (const char b : bytes) append_utf8(out, byte_to_char_[static_cast<unsigned char>(b)]);
    return out;
  }

  // Byte-level spelling -> raw bytes; nullopt if a character is outside the alphabet (added
  // tokens such as "<|im_start|>" are plain ASCII, which maps to itself, so they decode too).
  std::optional<std::string> decode(std::string_view spelled) const {
    std::string out;
    out.reserve(spelled.size());
    for (std::size_t pos = 0; pos < spelled.size();) {
      const Utf8Step step = utf8_step(spelled, pos);
      if (!step.valid || step.codepoint >= char_to_byte_.size() || char_to_byte_[step.codepoint] < 0)
        return std::nullopt;
      out += static_cast<char>(char_to_byte_[step.codepoint]);
      pos += step.length;
    }
    return out;
  }

 private:
  ByteLevelAlphabet() {
    char_to_byte_.fill(-1);
    // Printable Latin-1 stands for itself; the other 68 bytes take U+0100, U+0101, ... in order.
    auto printable = [](int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; };
    char32_t next_free = 0x100;
    for (int b = 0; b < 256; ++b) {
      const char32_t c = printable(b) ? static_cast<char32_t>(b) : next_free++;
      byte_to_char_[b] = c;
      char_to_byte_[c] = static_cast<int16_t>(b);
    }
  }

  std::array<char32_t, 256> byte_to_char_{};
  std::array<int16_t, 0x100 + 68> char_to_byte_{};
};

}  // namespace peft::detail
