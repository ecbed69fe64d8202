// Streaming generated text: a character whose UTF-8 bytes arrive in several tokens is printed only
// once complete, every printed piece is valid UTF-8, and the pieces add up to decode() of all
// tokens. First with hand-picked single-byte tokens (so a split certainly happens), then on the
// embedded default model's own generation with the real Qwen2.5 tokenizer.
#include <catch2/catch.hpp>
#include <filesystem>

#include "peft/generate/generator.hpp"
#include "peft/io/peft_adapter.hpp"
#include "peft/models/qwen2.hpp"
#include "peft/text/tokenizer.hpp"

using namespace peft;

namespace {

const std::filesystem::path kQwenTokenizer =
    std::filesystem::path(PEFT_SOURCE_DIR) / "assets/tokenizer/qwen2.5/tokenizer.json";

bool valid_utf8(const std::string& s) { return !detail::first_invalid_utf8(s).has_value(); }

}  // namespace

TEST_CASE("a character split over byte tokens is streamed whole", "[generate][stream]") {
  INFO("the Qwen2.5 tokenizer comes with the set-up (tools/fetch_tokenizer.sh)");
  REQUIRE(std::filesystem::exists(kQwenTokenizer));
  const auto tok = text::Tokenizer::from_file(kQwenTokenizer);
  const std::string text = "你是谁? 🙂";
  // One token per byte: the byte-level vocabulary has every single byte as a token.
  std::vector<std::int32_t> ids;
  for (const unsigned char b : text) {
    const auto id = tok.token_to_id(detail::ByteLevelAlphabet::instance().encode(std::string(1, static_cast<char>(b))));
    REQUIRE(id.has_value());
    ids.push_back(*id);
  }
  text::StreamDecoder stream(tok);
  std::vector<std::string> pieces;
  for (const auto id : ids) pieces.push_back(stream.push(id));
  pieces.push_back(stream.flush());
  std::string joined;
  for (const auto& p : pieces) {
    CHECK(valid_utf8(p));
    joined += p;
  }
  CHECK(joined == text);
  // 你 is three bytes: nothing for its first two tokens, the whole character with the third.
  CHECK(pieces[0].empty());
  CHECK(pieces[1].empty());
  CHECK(pieces[2] == "你");
  // 🙂 is four bytes, the last of the text.
  CHECK(pieces[pieces.size() - 2] == "🙂");
}

TEST_CASE("streamed pieces of a real generation are valid UTF-8 and add up to decode()", "[generate][stream]") {
  INFO("the Qwen2.5 tokenizer comes with the set-up (tools/fetch_tokenizer.sh)");
  REQUIRE(std::filesystem::exists(kQwenTokenizer));
  const auto tok = text::Tokenizer::from_file(kQwenTokenizer);
  // The embedded default model's shape with random weights: its output is arbitrary vocabulary,
  // multi-byte tokens and partial characters included.
  ModelConfig c;
  c.hidden_size = 64, c.intermediate_size = 192, c.num_hidden_layers = 2, c.num_attention_heads = 4;
  c.num_key_value_heads = 2, c.head_dim = 16, c.vocab_size = 151936, c.rope_theta = 1e6;
  c.tie_word_embeddings = true;
  RandomWeights weights(20250101);
  auto model = Qwen2<Frozen, Fp32, Cpu>::from_weights(c, weights, LoraConfig{}, 0);
  GenerationConfig g;
  g.max_new_tokens = 96;
  g.sampling.temperature = 1.0;  // sampling over the whole vocabulary reaches many byte tokens
  g.sampling.top_k = 0;
  Generator gen(*model);
  text::StreamDecoder stream(tok);
  std::string joined;
  const auto out = gen.generate(tok.encode("你是谁?"), g, [&](std::int32_t id) {
    const std::string piece = stream.push(id);
    CHECK(valid_utf8(piece));
    joined += piece;
  });
  joined += stream.flush();
  CHECK(joined == tok.decode(out.tokens));
  CHECK(out.tokens.size() == 96);
}
