// The row formats ms-swift users write, each turned into one shape: a chat (system/user/assistant
// messages) for the template, or token ids for pre-tokenized rows. The format is chosen per row
// by its keys, so one file may mix them:
//   pre-tokenized   {"input_ids": [...], "labels": [...]}     labels optional (= input_ids)
//   messages        {"messages": [{"role", "content"}, ...]}  roles system/user/assistant
//   sharegpt        {"conversations": [{"from", "value"}, ...]}  from human/gpt/system
//   alpaca          {"instruction", "input", "output", "system"?, "history"?}
//   query/response  {"query", "response", "system"?, "history"?}
// history is [[query, reply], ...] before the row's own round. As in ms-swift's AlpacaPreprocessor
// an alpaca query is instruction + "\n" + input when both are non-empty. An optional "tag"
// ("zh"/"en") says the row's language for self-cognition placeholders. Other keys are ignored.
// Training needs each row's reply (output, response, a last assistant message); rows read to be
// answered (chat, as `swift infer --val_dataset`) may end with the question (Replies::Optional).
// Every error names the row (file and line) and the field.
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/data/chat_template.hpp"
#include "peft/data/sample.hpp"
#include "peft/io/json_file.hpp"

namespace peft::data {

enum class RowFormat { PreTokenized, Messages, ShareGpt, Alpaca, QueryResponse };

inline std::string_view format_name(RowFormat format) {
  switch (format) {
    case RowFormat::PreTokenized: return "pre-tokenized";
    case RowFormat::Messages: return "messages";
    case RowFormat::ShareGpt: return "sharegpt";
    case RowFormat::Alpaca: return "alpaca";
    case RowFormat::QueryResponse: return "query/response";
  }
  return "?";
}

// Where a row came from: the file, its 1-based line, and for JSON arrays the element index.
struct RowLocation {
  std::filesystem::path file;
  std::int64_t line = 0;
  std::int64_t element = -1;  // -1 in JSONL files

  std::string str() const {
    if (element < 0) return fmt::format("{}:{}", file.string(), line);
    return fmt::format("{}:{} (element [{}])", file.string(), line, element);
  }
};

// Whether a text row must carry the reply to train on, or may be a question alone (chat answers
// it; a reply, when present, is the reference it records as the row's labels).
enum class Replies { Required, Optional };

struct DatasetRow {
  RowFormat format = RowFormat::Messages;
  std::vector<ChatMessage> messages;  // text formats
  Sample tokens;                      // pre-tokenized rows
  std::string tag;                    // "zh", "en" or empty
  RowLocation where;

  bool is_text() const { return format != RowFormat::PreTokenized; }
};

namespace detail {

inline std::string row_keys(const nlohmann::json& row) {
  std::string keys;
  for (const auto& item : row.items()) keys += (keys.empty() ? "" : ", ") + item.key();
  return keys.empty() ? "none" : keys;
}

inline std::string optional_string(const nlohmann::json& row, std::string_view key,
                                   std::string_view where) {
  const nlohmann::json* v = find_field(row, key);
  return v ? json_value_as<std::string>(*v, where, key) : std::string();
}

// ms-swift's role names: messages use user/assistant, sharegpt human/gpt; either is accepted.
inline Role parse_role(const nlohmann::json& value, std::string_view where, std::string_view field) {
  const std::string name = json_value_as<std::string>(value, where, field);
  if (name == "system") return Role::System;
  if (name == "user" || name == "human") return Role::User;
  if (name == "assistant" || name == "gpt") return Role::Assistant;
  fail("{}: field '{}' has role '{}'; expected system, user/human or assistant/gpt", where, field,
       name);
}

inline void append_history(const nlohmann::json& row, std::string_view where,
                           std::vector<ChatMessage>& messages) {
  const nlohmann::json* history = find_field(row, "history");
  if (!history) return;
  require(history->is_array(), "{}: field 'history' must be an array of [query, response] pairs",
          where);
  for (std::size_t i = 0; i < history->size(); ++i) {
    const nlohmann::json& pair = (*history)[i];
    const std::string field = fmt::format("history[{}]", i);
    require(pair.is_array() && pair.size() == 2,
            "{}: field '{}' must be a [query, response] pair, got {}", where, field, pair.dump());
    messages.push_back({Role::User, json_value_as<std::string>(pair[0], where, field + "[0]")});
    messages.push_back({Role::Assistant, json_value_as<std::string>(pair[1], where, field + "[1]")});
  }
}

// alpaca and query/response: optional system, history, then the row's own round (its reply when
// it has one: see Replies).
inline std::vector<ChatMessage> single_round_chat(const nlohmann::json& row, std::string_view where,
                                                  std::string query, std::optional<std::string> response) {
  std::vector<ChatMessage> messages;
  if (const nlohmann::json* system = find_field(row, "system")) {
    messages.push_back({Role::System, json_value_as<std::string>(*system, where, "system")});
  }
  append_history(row, where, messages);
  messages.push_back({Role::User, std::move(query)});
  if (response) messages.push_back({Role::Assistant, std::move(*response)});
  return messages;
}

// The row's reply field: required for training, absent allowed for answering.
inline std::optional<std::string> reply_field(const nlohmann::json& row, std::string_view key, std::string_view where,
                                              Replies replies) {
  if (replies == Replies::Optional && !find_field(row, key)) return std::nullopt;
  return required_field<std::string>(row, key, where);
}

inline std::vector<ChatMessage> alpaca_chat(const nlohmann::json& row, std::string_view where, Replies replies) {
  const nlohmann::json* instruction = find_field(row, "instruction");
  const nlohmann::json* input = find_field(row, "input");
  require(instruction || input, "{}: alpaca row is missing required field 'instruction'", where);
  std::string query = optional_string(row, "instruction", where);
  const std::string input_text = optional_string(row, "input", where);
  if (query.empty()) {
    query = input_text;
  } else if (!input_text.empty()) {
    query += "\n" + input_text;
  }
  return single_round_chat(row, where, std::move(query), reply_field(row, "output", where, replies));
}

// messages / sharegpt: a list of {role_key, content_key} objects, plus an optional top-level
// "system" (common in sharegpt files) when the list has no system message of its own.
inline std::vector<ChatMessage> conversation_chat(const nlohmann::json& row, std::string_view where,
                                                  std::string_view list_key, std::string_view role_key,
                                                  std::string_view content_key, Replies replies) {
  const nlohmann::json& list = row.at(std::string(list_key));
  require(list.is_array() && !list.empty(), "{}: field '{}' must be a non-empty array of messages",
          where, list_key);
  std::vector<ChatMessage> messages;
  for (std::size_t i = 0; i < list.size(); ++i) {
    const nlohmann::json& message = list[i];
    const std::string field = fmt::format("{}[{}]", list_key, i);
    require(message.is_object(), "{}: field '{}' must be an object with '{}' and '{}'", where, field,
            role_key, content_key);
    const nlohmann::json* role = find_field(message, role_key);
    require(role != nullptr, "{}: missing required field '{}.{}'", where, field, role_key);
    const nlohmann::json* content = find_field(message, content_key);
    require(content != nullptr, "{}: missing required field '{}.{}'", where, field, content_key);
    messages.push_back({parse_role(*role, where, field + "." + std::string(role_key)),
                        json_value_as<std::string>(*content, where, field + "." + std::string(content_key))});
  }
  if (const nlohmann::json* system = find_field(row, "system")) {
    require(messages.front().role != Role::System,
            "{}: row has both a top-level 'system' and a system message in '{}'", where, list_key);
    messages.insert(messages.begin(), {Role::System, json_value_as<std::string>(*system, where, "system")});
  }
  for (std::size_t i = 1; i < messages.size(); ++i) {
    require(messages[i].role != Role::System,
            "{}: field '{}[{}]' is a system message; only the first message may be one", where,
            list_key, i);
  }
  require(replies == Replies::Optional || messages.back().role == Role::Assistant,
          "{}: the last message in '{}' must be from the assistant (there is nothing to train on)",
          where, list_key);
  return messages;
}

inline std::vector<std::int32_t> token_list(const nlohmann::json& row, std::string_view key,
                                            std::string_view where, std::int64_t vocab_size,
                                            bool allow_ignore_index) {
  const nlohmann::json& list = row.at(std::string(key));
  require(list.is_array(), "{}: field '{}' must be an array of token ids, got {}", where, key,
          peft::detail::json_type_name(list));
  std::vector<std::int32_t> ids;
  ids.reserve(list.size());
  for (std::size_t i = 0; i < list.size(); ++i) {
    const std::string field = fmt::format("{}[{}]", key, i);
    const std::int64_t id = json_value_as<std::int64_t>(list[i], where, field);
    const bool ignored = allow_ignore_index && id == kIgnoreIndex;
    require(ignored || (id >= 0 && id < vocab_size),
            "{}: field '{}' = {} is outside the vocabulary [0, {}){}", where, field, id, vocab_size,
            allow_ignore_index ? " and is not -100" : "");
    ids.push_back(static_cast<std::int32_t>(id));
  }
  return ids;
}

inline Sample pre_tokenized_sample(const nlohmann::json& row, std::string_view where,
                                   std::int64_t vocab_size) {
  Sample sample;
  sample.input_ids = token_list(row, "input_ids", where, vocab_size, false);
  require(!sample.input_ids.empty(), "{}: field 'input_ids' is empty", where);
  if (find_field(row, "labels")) {
    sample.labels = token_list(row, "labels", where, vocab_size, true);
    require(sample.labels.size() == sample.input_ids.size(),
            "{}: 'labels' has {} entries but 'input_ids' has {}; they must be aligned", where,
            sample.labels.size(), sample.input_ids.size());
  } else {
    sample.labels = sample.input_ids;  // no labels: train on every token
  }
  return sample;
}

}  // namespace detail

// Parses one row. vocab_size bounds the ids of pre-tokenized rows (input to the model, so an id
// past its embedding is an error here, whatever a tokenizer would make of it).
inline DatasetRow parse_dataset_row(const nlohmann::json& row, const RowLocation& location,
                                    std::int64_t vocab_size, Replies replies = Replies::Required) {
  const std::string where = location.str();
  require(row.is_object(), "{}: a row must be a JSON object, got {}", where, peft::detail::json_type_name(row));
  DatasetRow out;
  out.where = location;
  auto has = [&](std::string_view key) { return row.contains(std::string(key)); };
  if (has("input_ids")) {
    out.format = RowFormat::PreTokenized;
    out.tokens = detail::pre_tokenized_sample(row, where, vocab_size);
    return out;
  }
  if (has("messages")) {
    out.format = RowFormat::Messages;
    out.messages = detail::conversation_chat(row, where, "messages", "role", "content", replies);
  } else if (has("conversations")) {
    out.format = RowFormat::ShareGpt;
    out.messages = detail::conversation_chat(row, where, "conversations", "from", "value", replies);
  } else if (has("instruction") || has("output")) {
    out.format = RowFormat::Alpaca;
    out.messages = detail::alpaca_chat(row, where, replies);
  } else if (has("query") || has("response")) {
    out.format = RowFormat::QueryResponse;
    out.messages = detail::single_round_chat(row, where, required_field<std::string>(row, "query", where),
                                             detail::reply_field(row, "response", where, replies));
  } else {
    fail("{}: the row fits no dataset format (its keys: {}); expected alpaca (instruction, input, "
         "output), messages, conversations (sharegpt), query/response, or input_ids (pre-tokenized)",
         where, detail::row_keys(row));
  }
  out.tag = detail::optional_string(row, "tag", where);
  return out;
}

}  // namespace peft::data
