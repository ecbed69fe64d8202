// Qwen2's byte-level BPE tokenizer, read from a Hugging Face tokenizer.json and meant to give
// exactly HF tokenizers' ids (encode with add_special_tokens=False) and text (decode with
// skip_special_tokens=False). Encoding runs HF's pipeline in HF's order:
//   1. added tokens whose "normalized" is false are cut out of the raw text (leftmost-longest);
//   2. each remaining segment is NFC-normalised, then added tokens with "normalized" true are cut;
//   3. the Split regex cuts segments into pieces;
//   4. each piece's bytes are BPE-merged (the byte-level alphabet is undone once, at load).
// Decoding concatenates each token's bytes and replaces invalid UTF-8 like errors="replace"; ids
// without a token are skipped, as HF's decode does (see decoded_bytes).
// Configurations this code does not implement (other models, normalizers, pre-tokenizers,
// dropout, lstrip/rstrip added tokens...) are rejected at load, never silently approximated.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "peft/core/error.hpp"
#include "peft/text/added_tokens.hpp"
#include "peft/text/bpe.hpp"
#include "peft/text/byte_level.hpp"
#include "peft/text/nfc.hpp"
#include "peft/text/pretokenizer.hpp"
#include "peft/text/tokenizer_json.hpp"
#include "peft/text/utf8.hpp"

namespace peft::text {

class Tokenizer {
 public:
  static Tokenizer from_file(const std::filesystem::path& tokenizer_json) {
    detail::TokenizerJson json = detail::read_tokenizer_json(tokenizer_json);
    try {
      return Tokenizer(json, tokenizer_json.string());
    } catch (const nlohmann::json::exception& e) {  // a field of the wrong JSON type
      fail("{}: unexpected tokenizer.json content: {}", tokenizer_json.string(), e.what());
    }
  }

  std::vector<int32_t> encode(std::string_view utf8) const {
    if (const auto bad = detail::first_invalid_utf8(utf8))
      fail("cannot tokenize: the text is not valid UTF-8 (byte 0x{:02X} at offset {} of {} bytes)",
           static_cast<unsigned char>(utf8[*bad]), *bad, utf8.size());
    std::vector<int32_t> ids;
    ids.reserve(utf8.size() / 3 + 4);
    std::string normalized;
    raw_added_.split(
        utf8, [&](std::string_view segment) { encode_segment(segment, normalized, ids); },
        [&](int32_t id) { ids.push_back(id); });
    return ids;
  }

  std::string decode(std::span<const int32_t> ids) const {
    std::string bytes;
    for (const int32_t id : ids) bytes += decoded_bytes(id);
    std::string text;
    text.reserve(bytes.size());
    detail::append_utf8_lossy(text, bytes);
    return text;
  }

  // The raw bytes id decodes to (may be part of a UTF-8 character). Throws for unknown ids.
  std::string_view token_bytes(int32_t id) const {
    require(has_token(id), "token id {} is not in the vocabulary of {} (ids are 0..{})", id, source_, vocab_size() - 1);
    return bytes_[static_cast<std::size_t>(id)];
  }

  // What decode emits for id: its bytes, or nothing for an id without a token. A model's embedding
  // may have more rows than the tokenizer has tokens (Qwen2.5 pads 151665 ids to 151936) and can
  // generate those ids; HF tokenizers' decode drops them (filter_map in Tokenizer::decode), so an
  // answer is never lost to one. A negative id is refused: it is no id at all (HF's are u32).
  std::string_view decoded_bytes(int32_t id) const {
    require(id >= 0, "token id {} is negative; token ids are 0 or more", id);
    return has_token(id) ? bytes_[static_cast<std::size_t>(id)] : std::string_view();
  }

  bool has_token(int32_t id) const {
    return id >= 0 && id < vocab_size() && kind_[static_cast<std::size_t>(id)] != Kind::kNone;
  }

  // Accepts added tokens as written ("<|im_end|>") and vocabulary tokens in their byte-level
  // spelling ("Ġhello"), like HF's token_to_id.
  std::optional<int32_t> token_to_id(std::string_view token) const {
    if (const auto it = added_ids_.find(token); it != added_ids_.end()) return it->second;
    const auto bytes = detail::ByteLevelAlphabet::instance().decode(token);
    return bytes ? bpe_.id_of(*bytes) : std::nullopt;
  }

  std::string id_to_token(int32_t id) const {
    const std::string_view bytes = token_bytes(id);
    if (kind_[static_cast<std::size_t>(id)] != Kind::kVocab) return added_contents_.at(id);
    return detail::ByteLevelAlphabet::instance().encode(bytes);
  }

  int32_t vocab_size() const { return static_cast<int32_t>(kind_.size()); }  // max id + 1

  bool is_special(int32_t id) const {
    return id >= 0 && id < vocab_size() && kind_[static_cast<std::size_t>(id)] == Kind::kSpecial;
  }

 private:
  enum class Kind : uint8_t { kNone, kVocab, kAdded, kSpecial };

  Tokenizer(detail::TokenizerJson& json, std::string_view where)
      : source_(where), bpe_(read_model(json, where)) {
    read_normalizer(json.config.value("normalizer", nlohmann::json()));
    read_pre_tokenizer(json.config.value("pre_tokenizer", nlohmann::json()));
    const nlohmann::json decoder = json.config.value("decoder", nlohmann::json());
    require(decoder.is_null() || decoder.value("type", "") == "ByteLevel",
            "{}: unsupported decoder {} (only ByteLevel)", source_, decoder.dump());
    bpe_.for_each_token([&](std::string_view bytes, int32_t id) {
      grow_to(id);
      bytes_[static_cast<std::size_t>(id)] = bytes;
      kind_[static_cast<std::size_t>(id)] = Kind::kVocab;
    });
    read_added_tokens(json.config.value("added_tokens", nlohmann::json::array()));
  }

  // ----- loading -----

  static detail::BpeModel read_model(detail::TokenizerJson& json, std::string_view where) {
    require(json.config.is_object() && json.config.contains("model"),
            "{}: no \"model\" section; not a tokenizer.json", where);
    const nlohmann::json& model = json.config.at("model");
    const std::string type = model.value("type", "");
    require(type == "BPE", "{}: model.type is \"{}\"; only BPE tokenizers are supported", where, type);
    require(model.value("dropout", nlohmann::json()).is_null(), "{}: BPE dropout is not supported", where);
    require(!model.value("byte_fallback", false), "{}: BPE byte_fallback is not supported", where);
    for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      const nlohmann::json value = model.value(affix, nlohmann::json());
      require(value.is_null() || value.get<std::string>().empty(), "{}: BPE {} is not supported", where, affix);
    }
    require(!json.vocab.empty(), "{}: model.vocab is missing or empty", where);
    require(model.contains("merges"), "{}: model.merges is missing", where);

    const auto& alphabet = detail::ByteLevelAlphabet::instance();
    detail::ByteVocab vocab;
    vocab.reserve(json.vocab.size());
    for (auto& [token, id] : json.vocab) {
      require(id >= 0, "{}: vocabulary token \"{}\" has negative id {}", where, token, id);
      vocab.emplace(spelled_to_bytes(alphabet, token), id);
    }
    for (auto& [left, right] : json.merges) {
      left = spelled_to_bytes(alphabet, left);
      right = spelled_to_bytes(alphabet, right);
    }
    return detail::BpeModel(std::move(vocab), json.merges, model.value("ignore_merges", false), where);
  }

  // ByteLevel's decoder turns a token into bytes through the alphabet when every character is
  // in it, and takes the token's own UTF-8 otherwise; vocabulary tokens are read the same way.
  static std::string spelled_to_bytes(const detail::ByteLevelAlphabet& alphabet, std::string_view token) {
    auto bytes = alphabet.decode(token);
    return bytes ? std::move(*bytes) : std::string(token);
  }

  void read_normalizer(const nlohmann::json& normalizer) {
    if (normalizer.is_null()) return;
    const std::string type = normalizer.value("type", "");
    if (type == "Sequence") {
      for (const nlohmann::json& step : normalizer.at("normalizers")) read_normalizer(step);
      return;
    }
    require(type == "NFC", "{}: unsupported normalizer {} (only NFC)", source_, normalizer.dump());
    nfc_ = true;
  }

  void read_pre_tokenizer(const nlohmann::json& pre) {
    if (pre.is_null()) return;
    const std::string type = pre.value("type", "");
    if (type == "Sequence") {
      for (const nlohmann::json& step : pre.at("pretokenizers")) read_pre_tokenizer(step);
      return;
    }
    if (type == "ByteLevel") {
      // The byte-level mapping itself happens at load (see byte_level.hpp); only its options
      // that change the pieces matter here.
      require(!pre.value("add_prefix_space", false), "{}: ByteLevel add_prefix_space is not supported", source_);
      if (pre.value("use_regex", true))
        set_splitter(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)");  // GPT-2's
      return;
    }
    require(type == "Split", "{}: unsupported pre_tokenizer {}", source_, pre.dump());
    require(pre.value("behavior", "") == "Isolated" && !pre.value("invert", false),
            "{}: only Split with behavior Isolated (not inverted) is supported, got {}", source_, pre.dump());
    const nlohmann::json pattern = pre.value("pattern", nlohmann::json());
    require(pattern.contains("Regex"), "{}: Split pattern {} is not a Regex", source_, pattern.dump());
    set_splitter(pattern["Regex"].get<std::string>());
  }

  void set_splitter(std::string_view pattern) {
    require(!splitter_, "{}: more than one regex pre-tokenizer is not supported", source_);
    splitter_.emplace(pattern, source_ + " pre_tokenizer");
  }

  void read_added_tokens(const nlohmann::json& added) {
    const auto& alphabet = detail::ByteLevelAlphabet::instance();
    for (const nlohmann::json& entry : added) {
      detail::AddedToken token{entry.at("content").get<std::string>(), entry.at("id").get<int32_t>(),
                               entry.value("special", false), entry.value("normalized", false)};
      require(token.id >= 0, "{}: added token \"{}\" has negative id", source_, token.content);
      for (const char* option : {"lstrip", "rstrip", "single_word"})
        require(!entry.value(option, false), "{}: added token \"{}\" sets {}, which is not supported", source_,
                token.content, option);
      grow_to(token.id);
      bytes_[token.id] = spelled_to_bytes(alphabet, token.content);
      kind_[token.id] = token.special ? Kind::kSpecial : Kind::kAdded;
      added_ids_[token.content] = token.id;
      added_contents_[token.id] = token.content;
      if (token.normalized && nfc_) {  // HF matches normalized tokens in their normalized form
        std::string content;
        detail::append_nfc(content, token.content);
        token.content = std::move(content);
      }
      (token.normalized ? normalized_added_ : raw_added_).add(token);
    }
  }

  // Ids index dense tables, so one absurd id (found by tests/test_fuzz_inputs.cpp: 2^31 - 1 asked
  // for 64 GB) is refused by name; real vocabularies stay far below the bound.
  static constexpr int32_t kMaxTokenId = (1 << 24) - 1;

  void grow_to(int32_t id) {
    require(id >= 0 && id <= kMaxTokenId, "{}: token id {} is out of range (ids from 0 to {} are supported)", source_,
            id, kMaxTokenId);
    if (static_cast<std::size_t>(id) >= kind_.size()) {
      kind_.resize(static_cast<std::size_t>(id) + 1, Kind::kNone);
      bytes_.resize(static_cast<std::size_t>(id) + 1);
    }
  }

  // ----- encoding -----

  void encode_segment(std::string_view segment, std::string& normalized, std::vector<int32_t>& ids) const {
    std::string_view text = segment;
    if (nfc_) {
      normalized.clear();
      detail::append_nfc(normalized, segment);
      text = normalized;
    }
    normalized_added_.split(
        text, [&](std::string_view part) { encode_pretokenized(part, ids); },
        [&](int32_t id) { ids.push_back(id); });
  }

  void encode_pretokenized(std::string_view text, std::vector<int32_t>& ids) const {
    if (!splitter_) return bpe_.encode_piece(text, ids);
    splitter_->split(text, [&](std::string_view piece) { bpe_.encode_piece(piece, ids); });
  }

  std::string source_;
  detail::BpeModel bpe_;
  bool nfc_ = false;
  std::optional<detail::RegexSplitter> splitter_;
  detail::AddedTokenMatcher raw_added_, normalized_added_;
  std::vector<std::string> bytes_;  // per id: what decode emits
  std::vector<Kind> kind_;          // per id
  detail::ByteVocab added_ids_;     // content -> id
  std::unordered_map<int32_t, std::string> added_contents_;
};

// Turns a stream of generated ids into text as soon as it is complete UTF-8: a character whose
// bytes span several tokens is held back until its last byte arrives, so a terminal never shows
// half a character. The concatenation of every push() and the final flush() equals decode() of
// all ids (an invalid sequence becomes U+FFFD once it can no longer be completed).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer) : tokenizer_(&tokenizer) {}

  std::string push(int32_t id) {
    pending_ += tokenizer_->decoded_bytes(id);
    const std::size_t ready = pending_.size() - detail::incomplete_utf8_tail(pending_);
    std::string text;
    detail::append_utf8_lossy(text, std::string_view(pending_).substr(0, ready));
    pending_.erase(0, ready);
    return text;
  }

  std::string flush() {
    std::string text;
    detail::append_utf8_lossy(text, pending_);
    pending_.clear();
    return text;
  }

 private:
  const Tokenizer* tokenizer_;
  std::string pending_;
};

}  // namespace peft::text
