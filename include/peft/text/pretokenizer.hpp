// The pre-tokenizer: tokenizer.json's Split regex (behaviour "Isolated": every match and every
// gap between matches is a piece), run with PCRE2 in UTF + UCP mode and JIT-compiled.
// HF tokenizers runs the same pattern with Oniguruma. The two engines agree on \p{L}, \p{N},
// case folding and backtracking order; they differ on one class: PCRE2's \s also matches
// U+180E MONGOLIAN VOWEL SEPARATOR (a space until Unicode 6.3), while Oniguruma's \s is
// U+0009-000D, U+0085 and the Zs/Zl/Zp categories (its doc/RE). The pattern's \s is therefore
// spelled out as Oniguruma's before compiling.
#pragma once
#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include <memory>
#include <string>
#include <string_view>

#include "peft/core/error.hpp"

namespace peft::detail {

// Oniguruma's Unicode \s: U+0009-000D, U+0085 and the Zs, Zl, Zp categories.
inline constexpr std::string_view kOnigSpaceClassBody = R"(\t\n\x0B\f\r\x{85}\p{Zs}\p{Zl}\p{Zp})";

// Rewrites \s and \S (outside classes) and \s (inside classes) as Oniguruma reads them.
inline std::string with_oniguruma_spaces(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 64);
  bool in_class = false;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char next = pattern[++i];
      if (next == 's') {
        if (in_class) out += kOnigSpaceClassBody;
        else out += "[" + std::string(kOnigSpaceClassBody) + "]";
      } else if (next == 'S' && !in_class) {
        out += "[^" + std::string(kOnigSpaceClassBody) + "]";
      } else {
        out += c;
        out += next;
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      // A ']' (or '^]') right after '[' is a literal member, not the end of the class.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

class RegexSplitter {
 public:
  // `where` names the source (file and field) for error messages.
  RegexSplitter(std::string_view pattern, std::string_view where) {
    const std::string translated = with_oniguruma_spaces(pattern);
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                     PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error_code, message, sizeof message);
      fail("{}: cannot compile the pre-tokenizer regex \"{}\": {} (near offset {})", where, pattern,
           reinterpret_cast<const char*>(message), error_offset);
    }
    code_.reset(code);
    // JIT is an optimisation only: when it is unavailable pcre2_match interprets instead.
    jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  }

  // Calls on_piece(std::string_view) for each match and each gap between matches, in order.
  // `text` must be valid UTF-8 (it is checked once, at Tokenizer::encode).
  template <class OnPiece>
  void split(std::string_view text, OnPiece&& on_piece) const {
    const std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
        pcre2_match_data_create_from_pattern(code_.get(), nullptr), &pcre2_match_data_free);
    require(match != nullptr, "out of memory creating PCRE2 match data");
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    std::size_t offset = 0, piece_start = 0;
    while (offset < text.size()) {
      const int rc = jit_ ? pcre2_jit_match(code_.get(), subject, text.size(), offset, PCRE2_NO_UTF_CHECK,
                                            match.get(), nullptr)
                          : pcre2_match(code_.get(), subject, text.size(), offset, PCRE2_NO_UTF_CHECK,
                                        match.get(), nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      require(rc >= 0, "pre-tokenizer regex failed with PCRE2 error {} at byte {}", rc, offset);
      const PCRE2_SIZE* span = pcre2_get_ovector_pointer(match.get());
      if (span[1] == span[0]) {  // an empty match splits nothing; step over one character
        offset = span[0] + 1;
        while (offset < text.size() && (static_cast<unsigned char>(text[offset]) & 0xC0) == 0x80) ++offset;
        continue;
      }
      if (span[0] > piece_start) on_piece(text.substr(piece_start, span[0] - piece_start));
      on_piece(text.substr(span[0], span[1] - span[0]));
      piece_start = offset = span[1];
    }
    if (piece_start < text.size()) on_piece(text.substr(piece_start));
  }

 private:
  struct CodeFree {
    void operator()(pcre2_code* code) const { pcre2_code_free(code); }
  };
  std::unique_ptr<pcre2_code, CodeFree> code_;
  bool jit_ = false;
};

}  // namespace peft::detail
