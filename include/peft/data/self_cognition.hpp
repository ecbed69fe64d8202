// Self-cognition: identity rows carry placeholders that the run fills in, as ms-swift's
// SelfCognitionPreprocessor does with --model_name / --model_author. Each flag takes a Chinese
// and an English value (`--model_name 小黄 'Xiao Huang'`); a single value serves both.
// A row is Chinese when its "tag" says "zh" (ms-swift's self-cognition rows carry one) or, for
// rows without a tag, when its user or assistant text contains a Han character.
// Differences from ms-swift, both deliberate: the lower-case spellings {{name}} / {{author}} are
// replaced as well (common in community identity files), and every text dataset gets the
// replacement, not only the registered self-cognition one, so a local self_cognition.json works.
// A placeholder whose value was not given stays as written (as in ms-swift); the caller counts
// such rows so the trainer can warn.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <utf8proc.h>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/data/chat_template.hpp"

namespace peft::data {

// True when the text contains a CJK unified ideograph (any block, compatibility ones included).
inline bool contains_han(std::string_view text) {
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  std::size_t i = 0;
  while (i < text.size()) {
    utf8proc_int32_t c = 0;
    const utf8proc_ssize_t n = utf8proc_iterate(bytes + i, static_cast<utf8proc_ssize_t>(text.size() - i), &c);
    if (n <= 0) return false;
    if ((c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0xF900 && c <= 0xFAFF) ||
        (c >= 0x20000 && c <= 0x323AF)) {
      return true;
    }
    i += static_cast<std::size_t>(n);
  }
  return false;
}

class SelfCognition {
 public:
  SelfCognition() = default;
  // model_name / model_author as given on the command line: empty, [both], or [zh, en].
  SelfCognition(const std::vector<std::string>& model_name, const std::vector<std::string>& model_author)
      : name_(zh_en(model_name, "--model_name")), author_(zh_en(model_author, "--model_author")) {}

  bool empty() const { return !name_ && !author_; }

  // Fills the placeholders in every message; returns true when some placeholder is left unfilled.
  bool apply(std::vector<ChatMessage>& messages, std::string_view tag) const {
    bool chinese = tag == "zh";
    if (tag != "zh" && tag != "en") {
      for (const ChatMessage& m : messages) chinese = chinese || (m.role != Role::System && contains_han(m.content));
    }
    bool unfilled = false;
    for (ChatMessage& m : messages) {
      if (name_) {
        const std::string& value = chinese ? name_->first : name_->second;
        replace_all(m.content, "{{NAME}}", value);
        replace_all(m.content, "{{name}}", value);
      }
      if (author_) {
        const std::string& value = chinese ? author_->first : author_->second;
        replace_all(m.content, "{{AUTHOR}}", value);
        replace_all(m.content, "{{author}}", value);
      }
      for (std::string_view p : {"{{NAME}}", "{{name}}", "{{AUTHOR}}", "{{author}}"}) {
        unfilled = unfilled || m.content.find(p) != std::string::npos;
      }
    }
    return unfilled;
  }

 private:
  using ZhEn = std::optional<std::pair<std::string, std::string>>;

  static ZhEn zh_en(const std::vector<std::string>& values, std::string_view flag) {
    require(values.size() <= 2, "{} takes a Chinese and an English value at most, got {} values", flag,
            values.size());
    if (values.empty()) return std::nullopt;
    return std::make_pair(values.front(), values.back());
  }

  static void replace_all(std::string& text, std::string_view from, std::string_view to) {
    for (std::size_t pos = text.find(from); pos != std::string::npos; pos = text.find(from, pos + to.size())) {
      text.replace(pos, from.size(), to);
    }
  }

  ZhEn name_, author_;
};

}  // namespace peft::data
