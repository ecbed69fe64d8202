// Qwen2.5's ChatML template: the rendered text, the system-prompt rules, and the labels (replies
// and their <|im_end|> trained, nothing else), first with a byte-level fake tokenizer whose ids
// are readable, then with the real Qwen2.5 tokenizer.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "fixtures/datasets/dataset_test_support.hpp"
#include "peft/data/chat_template.hpp"

using namespace peft::data;
using peft::testing::ByteTokenizer;
using Catch::Matchers::Contains;
using Ids = std::vector<std::int32_t>;

namespace {

const std::vector<ChatMessage> kOneRound = {{Role::User, "Who are you?"}, {Role::Assistant, "I am Qwen."}};

// Appends ids to a sample under construction, trained or not.
struct Expected {
  Ids ids, labels;
  Expected& add(const Ids& piece, bool trained) {
    ids.insert(ids.end(), piece.begin(), piece.end());
    for (auto id : piece) labels.push_back(trained ? id : peft::kIgnoreIndex);
    return *this;
  }
  Expected& text(std::string_view s, bool trained = false) { return add(ByteTokenizer::bytes(s), trained); }
  Expected& special(std::int32_t id, bool trained = false) { return add({id}, trained); }
};

}  // namespace

TEST_CASE("render_chat: one round with Qwen2.5's default system / ending at the last <|im_end|>") {
  CHECK(render_chat(kOneRound) ==
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWho are you?<|im_end|>\n"
        "<|im_start|>assistant\nI am Qwen.<|im_end|>");
}

TEST_CASE("render_chat: the row's system wins over --system / which wins over the default - empty drops it") {
  std::vector<ChatMessage> with_system = kOneRound;
  with_system.insert(with_system.begin(), {Role::System, "Row system."});
  CHECK(render_chat(with_system, "Flag system.").starts_with("<|im_start|>system\nRow system.<|im_end|>\n"));
  CHECK(render_chat(kOneRound, "Flag system.").starts_with("<|im_start|>system\nFlag system.<|im_end|>\n"));
  std::vector<ChatMessage> empty_system = kOneRound;
  empty_system.insert(empty_system.begin(), {Role::System, ""});
  CHECK(render_chat(empty_system).starts_with("<|im_start|>user\nWho are you?"));
  CHECK(render_chat(kOneRound, "").starts_with("<|im_start|>user\n"));
}

TEST_CASE("render_chat: multi-turn history and the generation prompt") {
  const std::vector<ChatMessage> chat = {{Role::System, "S"},     {Role::User, "Q1"}, {Role::Assistant, "A1"},
                                         {Role::User, "Q2"},      {Role::Assistant, "A2"}};
  CHECK(render_chat(chat) ==
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
        "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>");
  const std::vector<ChatMessage> prompt = {{Role::User, "Q1"}, {Role::Assistant, "A1"}, {Role::User, "Q2"}};
  CHECK(render_chat(prompt, "S") ==
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
        "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n");
  const ByteTokenizer tok;
  CHECK(encode_prompt(tok, prompt, "S") == tok.encode(render_chat(prompt, "S")));
  CHECK_THROWS_WITH(encode_prompt(tok, kOneRound), Contains("must end with a user message"));
}

TEST_CASE("encode_chat labels the reply and its <|im_end|> / nothing else (byte tokenizer)") {
  const ByteTokenizer tok;
  const std::vector<ChatMessage> chat = {{Role::System, "S"}, {Role::User, "Q"}, {Role::Assistant, "Hi!"}};
  const peft::Sample sample = encode_chat(tok, chat);
  Expected e;
  e.special(ByteTokenizer::kImStart).text("system\nS").special(ByteTokenizer::kImEnd).text("\n");
  e.special(ByteTokenizer::kImStart).text("user\nQ").special(ByteTokenizer::kImEnd).text("\n");
  e.special(ByteTokenizer::kImStart).text("assistant\n");
  e.text("Hi!", true).special(ByteTokenizer::kImEnd, true);
  CHECK(sample.input_ids == e.ids);
  CHECK(sample.labels == e.labels);
  CHECK(sample.input_ids == tok.encode(render_chat(chat)));
  CHECK(sample.label_tokens() == 4);
}

TEST_CASE("encode_chat trains every assistant turn of a multi-turn chat / with its <|im_end|> but not the newline") {
  const ByteTokenizer tok;
  const std::vector<ChatMessage> chat = {{Role::User, "Q1"}, {Role::Assistant, "A1"}, {Role::User, "Q2"},
                                         {Role::Assistant, "A2"}};
  const peft::Sample sample = encode_chat(tok, chat, "S");
  Expected e;
  e.special(ByteTokenizer::kImStart).text("system\nS").special(ByteTokenizer::kImEnd).text("\n");
  e.special(ByteTokenizer::kImStart).text("user\nQ1").special(ByteTokenizer::kImEnd).text("\n");
  e.special(ByteTokenizer::kImStart).text("assistant\n").text("A1", true).special(ByteTokenizer::kImEnd, true);
  e.text("\n").special(ByteTokenizer::kImStart).text("user\nQ2").special(ByteTokenizer::kImEnd).text("\n");
  e.special(ByteTokenizer::kImStart).text("assistant\n").text("A2", true).special(ByteTokenizer::kImEnd, true);
  CHECK(sample.input_ids == e.ids);
  CHECK(sample.labels == e.labels);
  CHECK(sample.input_ids == tok.encode(render_chat(chat, "S")));
}

TEST_CASE("encode_chat: an empty earlier reply leaves its <|im_end|> untrained (ms-swift's dynamic eos)") {
  const ByteTokenizer tok;
  const std::vector<ChatMessage> chat = {{Role::User, "Q1"}, {Role::Assistant, ""}, {Role::User, "Q2"},
                                         {Role::Assistant, ""}};
  const peft::Sample sample = encode_chat(tok, chat, "");
  std::vector<std::size_t> trained;
  for (std::size_t i = 0; i < sample.labels.size(); ++i) {
    if (sample.labels[i] != peft::kIgnoreIndex) trained.push_back(i);
  }
  REQUIRE(trained.size() == 1);  // only the final <|im_end|>, the template's suffix
  CHECK(trained[0] == sample.size() - 1);
  CHECK(sample.labels.back() == ByteTokenizer::kImEnd);
}

TEST_CASE("encode_chat merges consecutive roles and puts an empty query before a leading reply") {
  const ByteTokenizer tok;
  const std::vector<ChatMessage> split_user = {
      {Role::User, "Q"}, {Role::User, "uestion"}, {Role::Assistant, "A"}, {Role::Assistant, "nswer"}};
  const std::vector<ChatMessage> merged = {{Role::User, "Question"}, {Role::Assistant, "Answer"}};
  CHECK(encode_chat(tok, split_user).input_ids == encode_chat(tok, merged).input_ids);
  const std::vector<ChatMessage> reply_only = {{Role::Assistant, "Text"}};
  CHECK(render_chat(reply_only, "") == "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\nText<|im_end|>");
}

TEST_CASE("encode_chat rejects conversations it cannot train on / and tokenizers without ChatML tokens") {
  const ByteTokenizer tok;
  CHECK_THROWS_WITH(encode_chat(tok, std::vector<ChatMessage>{{Role::User, "Q"}}),
                    Contains("ends with a user message"));
  CHECK_THROWS_WITH(encode_chat(tok, std::vector<ChatMessage>{{Role::System, "S"}}),
                    Contains("no user or assistant message"));
  CHECK_THROWS_WITH(
      encode_chat(tok, std::vector<ChatMessage>{{Role::User, "Q"}, {Role::System, "S"}, {Role::Assistant, "A"}}),
      Contains("message 1 is a system message"));
  struct NoChatTokens {
    std::vector<std::int32_t> encode(std::string_view s) const { return ByteTokenizer::bytes(s); }
    std::optional<std::int32_t> token_to_id(std::string_view) const { return std::nullopt; }
  };
  static_assert(TextEncoder<NoChatTokens>);
  CHECK_THROWS_WITH(encode_chat(NoChatTokens{}, kOneRound), Contains("no '<|im_start|>' token"));
}

// ---------------------------------------------------------------------------------------------
// The real Qwen2.5 tokenizer (assets/tokenizer/qwen2.5/tokenizer.json, made by
// tools/fetch_tokenizer.sh), when the tokenizer header is part of the tree.
#if __has_include("peft/text/tokenizer.hpp")
#include "peft/text/tokenizer.hpp"

namespace {

const peft::text::Tokenizer& qwen_tokenizer() {
  static const peft::text::Tokenizer tokenizer = [] {
    const std::filesystem::path file =
        std::filesystem::path(PEFT_SOURCE_DIR) / "assets" / "tokenizer" / "qwen2.5" / "tokenizer.json";
    INFO("missing " << file << ": run tools/fetch_tokenizer.sh");
    REQUIRE(std::filesystem::exists(file));
    return peft::text::Tokenizer::from_file(file);
  }();
  return tokenizer;
}

}  // namespace

TEST_CASE("Qwen2.5 tokenizer: encode_chat ids equal encoding the whole rendered string") {
  const auto& tok = qwen_tokenizer();
  static_assert(TextEncoder<peft::text::Tokenizer>);
  const std::vector<std::vector<ChatMessage>> chats = {
      kOneRound,
      {{Role::User, "你是谁？"}, {Role::Assistant, "我是小黄，由魔搭开发的人工智能助手。"}},
      {{Role::System, "Answer briefly."},
       {Role::User, "What's 12+30?"},
       {Role::Assistant, "42."},
       {Role::User, "And  in words?\n"},
       {Role::Assistant, "Forty-two 👍\n\nDone."}},
      {{Role::User, "Write code"}, {Role::Assistant, "```cpp\nint main() {}\n```  "}},
      {{Role::User, "Tabs\tand spaces   "}, {Role::Assistant, " Leading space, trailing newline\n"}},
  };
  for (const auto& chat : chats) {
    const std::string text = render_chat(chat);
    INFO(text);
    const peft::Sample sample = encode_chat(tok, chat);
    CHECK(sample.input_ids == tok.encode(text));
    CHECK(tok.decode(sample.input_ids) == text);
  }
}

TEST_CASE("Qwen2.5 tokenizer: exact label positions on a small example") {
  const auto& tok = qwen_tokenizer();
  const std::int32_t im_start = 151644, im_end = 151645, newline = 198;
  REQUIRE(tok.token_to_id("<|im_start|>") == im_start);
  REQUIRE(tok.token_to_id("<|im_end|>") == im_end);
  const std::vector<ChatMessage> chat = {
      {Role::System, "You are a helpful assistant."}, {Role::User, "Hi"}, {Role::Assistant, "Hello there!"}};
  const peft::Sample sample = encode_chat(tok, chat);
  // HF's ids for "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n".
  const Ids prefix = {im_start, 8948, newline, 2610, 525, 264, 10950, 17847, 13, im_end, newline, im_start, 872, newline};
  REQUIRE(sample.size() > prefix.size());
  CHECK(Ids(sample.input_ids.begin(), sample.input_ids.begin() + prefix.size()) == prefix);
  const Ids reply = tok.encode("Hello there!");
  const Ids assistant_header = {im_start, 77091, newline};  // "<|im_start|>assistant\n"
  // ... "Hi" <|im_end|> \n <|im_start|>assistant\n | reply | <|im_end|>
  const std::size_t reply_start = sample.size() - 1 - reply.size();
  CHECK(Ids(sample.input_ids.begin() + reply_start - 3, sample.input_ids.begin() + reply_start) == assistant_header);
  CHECK(sample.input_ids[reply_start - 5] == im_end);
  CHECK(sample.input_ids.back() == im_end);
  for (std::size_t i = 0; i < sample.size(); ++i) {
    INFO("position " << i);
    if (i >= reply_start) {
      CHECK(sample.labels[i] == sample.input_ids[i]);
    } else {
      CHECK(sample.labels[i] == peft::kIgnoreIndex);
    }
  }
  CHECK(tok.decode(Ids(sample.input_ids.begin() + reply_start, sample.input_ids.end())) == "Hello there!<|im_end|>");
}

TEST_CASE("Qwen2.5 tokenizer: multi-turn labels cover each reply and its <|im_end|> / not the newline after it") {
  const auto& tok = qwen_tokenizer();
  const std::vector<ChatMessage> chat = {
      {Role::User, "名字?"}, {Role::Assistant, "我叫小黄。"}, {Role::User, "Who built you?"}, {Role::Assistant, "ModelScope."}};
  const peft::Sample sample = encode_chat(tok, chat);
  std::string trained_text;
  std::vector<std::size_t> im_end_positions;
  for (std::size_t i = 0; i < sample.size(); ++i) {
    if (sample.input_ids[i] == 151645) im_end_positions.push_back(i);
    if (sample.labels[i] != peft::kIgnoreIndex) trained_text += tok.decode(Ids{sample.labels[i]});
  }
  CHECK(trained_text == "我叫小黄。<|im_end|>ModelScope.<|im_end|>");
  REQUIRE(im_end_positions.size() == 5);  // system, query 1, reply 1, query 2, reply 2
  CHECK(sample.labels[im_end_positions[2]] == 151645);
  CHECK(sample.labels[im_end_positions[2] + 1] == peft::kIgnoreIndex);  // the "\n" after it
  CHECK(sample.input_ids[im_end_positions[2] + 1] == 198);
  CHECK(sample.labels[im_end_positions[4]] == 151645);
  CHECK(sample.labels[im_end_positions[1]] == peft::kIgnoreIndex);
}

TEST_CASE("Qwen2.5 tokenizer: a reply that starts with a newline is tokenized apart from the prompt / as ms-swift does") {
  const auto& tok = qwen_tokenizer();
  const std::vector<ChatMessage> chat = {{Role::User, "Hi"}, {Role::Assistant, "\nHello"}};
  const peft::Sample sample = encode_chat(tok, chat);
  // Whole-string encoding would merge "assistant\n" + "\n" into one "\n\n" token across the label
  // boundary; the piecewise ids keep the reply's own tokens.
  CHECK(sample.input_ids != tok.encode(render_chat(chat)));
  const Ids reply = tok.encode("\nHello");
  CHECK(Ids(sample.input_ids.end() - 1 - reply.size(), sample.input_ids.end() - 1) == reply);
  CHECK(tok.decode(sample.input_ids) == render_chat(chat));
}

TEST_CASE("Qwen2.5 tokenizer: the generation prompt ends with <|im_start|>assistant newline") {
  const auto& tok = qwen_tokenizer();
  const Ids ids = encode_prompt(tok, std::vector<ChatMessage>{{Role::User, "你是谁?"}});
  REQUIRE(ids.size() > 3);
  CHECK(Ids(ids.end() - 3, ids.end()) == Ids{151644, 77091, 198});
}
#endif
