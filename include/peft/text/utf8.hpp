// UTF-8 decoding rules shared by the tokenizer's encode (reject invalid input, saying where) and
// decode (replace invalid bytes). Invalid input is replaced one "maximal subpart" at a time
// (Unicode 15, section 3.9, table 3-8): the same U+FFFD count that Python's errors="replace" and
// Rust's String::from_utf8_lossy (what HF tokenizers uses) produce, so decoded text matches
// theirs byte for byte, also when a generated sequence stops in the middle of a character.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace peft::detail {

struct Utf8Step {
  char32_t codepoint = 0;  // valid only when `valid`
  std::size_t length = 1;  // bytes consumed: the character, or the maximal invalid subpart
  bool valid = false;
  bool truncated = false;  // invalid only because the text ended inside a correct prefix
};

// Decodes the character that starts at text[pos] (pos < text.size()).
inline Utf8Step utf8_step(std::string_view text, std::size_t pos) {
  auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(pos);
  if (lead < 0x80) return {lead, 1, true, false};
  std::size_t need = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte (table 3-7)
  char32_t cp = 0;
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 2, cp = lead & 0x1F;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 3, cp = lead & 0x0F;
    if (lead == 0xE0) lo = 0xA0;
    if (lead == 0xED) hi = 0x9F;  // no UTF-16 surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 4, cp = lead & 0x07;
    if (lead == 0xF0) lo = 0x90;
    if (lead == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {};  // a continuation byte, C0, C1 or F5..FF on its own
  }
  std::size_t len = 1;
  for (; len < need; ++len) {
    if (pos + len >= text.size()) return {0, len, false, true};
    const unsigned char c = byte(pos + len);
    const bool in_range = len == 1 ? (c >= lo && c <= hi) : (c >= 0x80 && c <= 0xBF);
    if (!in_range) return {0, len, false, false};
    cp = (cp << 6) | (c & 0x3F);
  }
  return {cp, need, true, false};
}

// Byte offset of the first invalid UTF-8 sequence, or nullopt when the text is valid.
inline std::optional<std::size_t> first_invalid_utf8(std::string_view text) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    if (static_cast<unsigned char>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const Utf8Step step = utf8_step(text, pos);
    if (!step.valid) return pos;
    pos += step.length;
  }
  return std::nullopt;
}

inline void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Appends `bytes` to `out` with every maximal invalid subpart replaced by U+FFFD.
inline void append_utf8_lossy(std::string& out, std::string_view bytes) {
  std::size_t pos = 0, clean_from = 0;
  while (pos < bytes.size()) {
    if (static_cast<unsigned char>(bytes[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const Utf8Step step = utf8_step(bytes, pos);
    if (!step.valid) {
      out.append(bytes.substr(clean_from, pos - clean_from));
      out += "\xEF\xBF\xBD";
      clean_from = pos + step.length;
    }
    pos += step.length;
  }
  out.append(bytes.substr(clean_from));
}

// Length of the trailing bytes that begin a character the text has not finished yet (0 to 3).
// A streaming decoder holds these back until the next token completes (or breaks) them.
inline std::size_t incomplete_utf8_tail(std::string_view bytes) {
  const std::size_t n = bytes.size();
  for (std::size_t back = 1; back <= 3 && back <= n; ++back) {
    const unsigned char c = static_cast<unsigned char>(bytes[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: the lead is further back
    return utf8_step(bytes, n - back).truncated ? back : 0;
  }
  return 0;
}

}  // namespace peft::detail
