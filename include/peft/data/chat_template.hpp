// Qwen2.5's ChatML template, rendered and tokenized as ms-swift's `qwen2_5` template does for
// `swift sft`, so a sample here has the ids and labels ms-swift would train on.
//
//   <|im_start|>system\n{system}<|im_end|>\n            (omitted when the system is empty)
//   <|im_start|>user\n{query}<|im_end|>\n<|im_start|>assistant\n{reply}<|im_end|>\n   per round
//
// Decisions, each taken from ms-swift 3 (swift/llm/template/base.py, loss_scale 'default'):
// - System: the conversation's own system message, else the caller's default (--system), else
//   Qwen2.5's "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.". An explicit
//   empty system drops the system block, as ms-swift's `not system` test does.
// - Labels: every assistant reply is trained, in every round (loss_scale 'default'; 'last_round'
//   is the opt-in that trains only the last). Each reply's <|im_end|> is trained too: the last
//   round's as the template suffix, earlier rounds' through ms-swift's _add_dynamic_eos (only
//   after a non-empty reply, as there). The "\n" after <|im_end|> and all prompt tokens are -100.
// - The training sample ends with the last <|im_end|>, without the "\n" (ms-swift 3's ChatML
//   suffix; ms-swift 4 made the suffix "<|im_end|>\n", which also trains that last "\n").
// - Tokenization goes piece by piece as ms-swift's _encode_context_list: the untrained text
//   between replies as one string, each reply as another. Special tokens split the text anyway,
//   so this equals tokenizing the whole rendered string, except when a reply begins with
//   whitespace that contains a newline: then the whole-string pre-tokenizer would merge it with
//   the "\n" after "assistant" across the label boundary, and ms-swift (and we) keep them apart.
// - Consecutive messages of one role are merged, and a conversation that starts with the
//   assistant gets an empty user query first, as ms-swift's _swift_prepare_inputs does.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/data/sample.hpp"
#include "peft/data/text_encoder.hpp"

namespace peft::data {

inline constexpr std::string_view kQwen25DefaultSystem =
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
inline constexpr std::string_view kImStart = "<|im_start|>";
inline constexpr std::string_view kImEnd = "<|im_end|>";

enum class Role { System, User, Assistant };

inline std::string_view role_name(Role role) {
  switch (role) {
    case Role::System: return "system";
    case Role::User: return "user";
    case Role::Assistant: return "assistant";
  }
  return "?";
}

struct ChatMessage {
  Role role;
  std::string content;
  bool operator==(const ChatMessage&) const = default;
};

namespace detail {

struct ChatRound {
  std::string query;
  std::optional<std::string> reply;  // absent only in the last round of a generation prompt
};

struct NormalizedChat {
  std::string system;  // empty: no system block
  std::vector<ChatRound> rounds;
};

inline NormalizedChat normalize_chat(std::span<const ChatMessage> messages,
                                     std::string_view default_system) {
  NormalizedChat chat;
  std::size_t first = 0;
  if (!messages.empty() && messages.front().role == Role::System) {
    chat.system = messages.front().content;
    first = 1;
  } else {
    chat.system = default_system;
  }
  std::vector<ChatMessage> turns;
  for (std::size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    require(m.role != Role::System,
            "message {} is a system message; a system message may only come first", i);
    if (!turns.empty() && turns.back().role == m.role) {
      turns.back().content += m.content;
    } else {
      turns.push_back(m);
    }
  }
  require(!turns.empty(), "the conversation has no user or assistant message");
  if (turns.front().role == Role::Assistant) turns.insert(turns.begin(), {Role::User, ""});
  for (std::size_t k = 0; k < turns.size(); k += 2) {
    ChatRound round{turns[k].content, std::nullopt};
    if (k + 1 < turns.size()) round.reply = turns[k + 1].content;
    chat.rounds.push_back(std::move(round));
  }
  return chat;
}

inline void append_system_block(std::string& out, std::string_view system) {
  if (system.empty()) return;
  out.append(kImStart).append("system\n").append(system).append(kImEnd).append("\n");
}

inline void append_query_block(std::string& out, std::string_view query) {
  out.append(kImStart).append("user\n").append(query).append(kImEnd).append("\n");
  out.append(kImStart).append("assistant\n");
}

template <TextEncoder Tok>
std::int32_t required_token_id(const Tok& tokenizer, std::string_view token) {
  const std::optional<std::int32_t> id = tokenizer.token_to_id(token);
  require(id.has_value(), "the tokenizer has no '{}' token, which Qwen2.5's ChatML template needs",
          token);
  return *id;
}

}  // namespace detail

// The rendered text. A conversation that ends with the assistant renders as a training sample
// (ending in <|im_end|>); one that ends with the user renders as a generation prompt (ending in
// "<|im_start|>assistant\n").
inline std::string render_chat(std::span<const ChatMessage> messages,
                               std::string_view default_system = kQwen25DefaultSystem) {
  const detail::NormalizedChat chat = detail::normalize_chat(messages, default_system);
  std::string out;
  detail::append_system_block(out, chat.system);
  for (std::size_t r = 0; r < chat.rounds.size(); ++r) {
    detail::append_query_block(out, chat.rounds[r].query);
    if (!chat.rounds[r].reply) break;
    out.append(*chat.rounds[r].reply).append(kImEnd);
    if (r + 1 < chat.rounds.size()) out.append("\n");
  }
  return out;
}

// A training sample: ids of the rendered conversation, labels on the replies and their <|im_end|>.
template <TextEncoder Tok>
Sample encode_chat(const Tok& tokenizer, std::span<const ChatMessage> messages,
                   std::string_view default_system = kQwen25DefaultSystem) {
  detail::required_token_id(tokenizer, kImStart);
  const std::int32_t im_end = detail::required_token_id(tokenizer, kImEnd);
  const detail::NormalizedChat chat = detail::normalize_chat(messages, default_system);
  require(chat.rounds.back().reply.has_value(),
          "the conversation ends with a user message: there is no assistant reply to train on");

  Sample sample;
  auto append = [&](const std::vector<std::int32_t>& ids, bool trained) {
    sample.input_ids.insert(sample.input_ids.end(), ids.begin(), ids.end());
    if (trained) {
      sample.labels.insert(sample.labels.end(), ids.begin(), ids.end());
    } else {
      sample.labels.insert(sample.labels.end(), ids.size(), kIgnoreIndex);
    }
  };
  std::string untrained;  // prompt text since the last reply, tokenized as one piece
  detail::append_system_block(untrained, chat.system);
  for (std::size_t r = 0; r < chat.rounds.size(); ++r) {
    const bool last = r + 1 == chat.rounds.size();
    const std::string& reply = *chat.rounds[r].reply;
    detail::append_query_block(untrained, chat.rounds[r].query);
    append(tokenizer.encode(untrained), false);
    untrained.clear();
    append(tokenizer.encode(reply), true);
    append({im_end}, last || !reply.empty());
    if (!last) untrained = "\n";
  }
  return sample;
}

// Ids of a generation prompt: the conversation so far, ending with the user's message, followed
// by "<|im_start|>assistant\n".
template <TextEncoder Tok>
std::vector<std::int32_t> encode_prompt(const Tok& tokenizer, std::span<const ChatMessage> messages,
                                        std::string_view default_system = kQwen25DefaultSystem) {
  detail::required_token_id(tokenizer, kImStart);
  detail::required_token_id(tokenizer, kImEnd);
  require(!messages.empty() && messages.back().role == Role::User,
          "a generation prompt must end with a user message");
  return tokenizer.encode(render_chat(messages, default_system));
}

}  // namespace peft::data
