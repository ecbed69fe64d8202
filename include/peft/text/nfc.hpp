// NFC normalisation (Qwen2's tokenizer.json "normalizer": {"type": "NFC"}) through utf8proc.
// Most training text is already NFC and consists of characters NFC can never change, so a scan
// first looks for any character outside a few known-inert ranges and only then pays for
// utf8proc's decompose-and-recompose (which allocates). The ranges are conservative: each holds
// only characters that NFC maps to themselves, with combining class 0 and no role as the second
// half of a canonical composition, so text made only of them is already NFC.
#pragma once
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include <utf8proc.h>

#include "peft/core/error.hpp"
#include "peft/text/utf8.hpp"

namespace peft::detail {

inline bool nfc_inert(char32_t cp) {
  return cp < 0x300                        // ASCII, Latin-1, Latin Extended-A/B, IPA
         || (cp >= 0x3000 && cp < 0x302A)  // CJK symbols and punctuation (before the tone marks)
         || (cp >= 0x3040 && cp < 0x3099)  // Hiragana (before the combining voicing marks)
         || (cp >= 0x309B && cp < 0x3100)  // Hiragana and Katakana
         || (cp >= 0x3400 && cp < 0x4DC0)  // CJK Unified Ideographs Extension A
         || (cp >= 0x4E00 && cp < 0xA000)  // CJK Unified Ideographs
         || (cp >= 0xAC00 && cp < 0xD7A4)  // Hangul syllables (only a trailing jamo composes)
         || (cp >= 0xFF00 && cp < 0xFFF0);  // half- and full-width forms (compatibility only)
}

// Appends NFC(text) to out. `text` must be valid UTF-8.
inline void append_nfc(std::string& out, std::string_view text) {
  bool inert = true;
  for (std::size_t pos = 0; pos < text.size() && inert;) {
    if (static_cast<unsigned char>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const Utf8Step step = utf8_step(text, pos);
    inert = nfc_inert(step.codepoint);
    pos += step.length;
  }
  if (inert) {
    out.append(text);
    return;
  }
  utf8proc_uint8_t* normalized = nullptr;
  // No UTF8PROC_NULLTERM: the length is explicit, so embedded NUL characters survive.
  const utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                   static_cast<utf8proc_ssize_t>(text.size()), &normalized,
                   static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  const std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owner(normalized, &std::free);
  require(n >= 0, "NFC normalisation failed: {}", utf8proc_errmsg(n));
  out.append(reinterpret_cast<const char*>(normalized), static_cast<std::size_t>(n));
}

}  // namespace peft::detail
