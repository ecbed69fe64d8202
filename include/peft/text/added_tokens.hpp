// Added tokens ("<|im_start|>", "<|endoftext|>", ...) are cut out of the text before anything
// else sees it, so "<|im_end|>" inside a message is one id, never "<", "|", "im", ... HF finds
// them with an Aho-Corasick automaton in leftmost-longest mode; with a few dozen tokens a scan
// that tries, at each position, the tokens starting with that byte (longest first) gives the
// same matches: the leftmost position where any token matches, and there the longest token.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace peft::detail {

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;
  bool normalized = false;  // matched after NFC (true) or on the raw text (false)
};

class AddedTokenMatcher {
 public:
  void add(const AddedToken& token) {
    if (token.content.empty()) return;
    auto& bucket = by_first_byte_[static_cast<unsigned char>(token.content[0])];
    bucket.push_back({token.content, token.id});
    std::stable_sort(bucket.begin(), bucket.end(),
                     [](const Entry& a, const Entry& b) { return a.content.size() > b.content.size(); });
  }

  bool empty() const {
    return std::all_of(by_first_byte_.begin(), by_first_byte_.end(), [](const auto& b) { return b.empty(); });
  }

  // Calls on_text(std::string_view) for the text between matches (never empty) and
  // on_token(int32_t id) for each match, in order.
  template <class OnText, class OnToken>
  void split(std::string_view text, OnText&& on_text, OnToken&& on_token) const {
    std::size_t text_start = 0, pos = 0;
    while (pos < text.size()) {
      const Entry* hit = nullptr;
      for (const Entry& entry : by_first_byte_[static_cast<unsigned char>(text[pos])]) {
        if (text.compare(pos, entry.content.size(), entry.content) == 0) {
          hit = &entry;
          break;
        }
      }
      if (hit == nullptr) {
        ++pos;
        continue;
      }
      if (pos > text_start) on_text(text.substr(text_start, pos - text_start));
      on_token(hit->id);
      pos += hit->content.size();
      text_start = pos;
    }
    if (text_start < text.size()) on_text(text.substr(text_start));
  }

 private:
  struct Entry {
    std::string content;
    int32_t id;
  };
  std::array<std::vector<Entry>, 256> by_first_byte_;
};

}  // namespace peft::detail
