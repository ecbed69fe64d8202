// The trainer's one call for data: `--dataset` specs in, training and validation samples out,
// with the counts the trainer logs. The steps follow ms-swift's `swift sft`:
//   1. each spec is resolved (dataset_spec.hpp) and its files read and validated row by row
//      (dataset_file.hpp, dataset_formats.hpp), all rows, so a bad row fails fast;
//   2. per spec, `#N` sampling and the validation split (dataset_sampling.hpp), one seeded
//      random state shared across specs in order; the specs are then concatenated; every
//      --val_dataset spec (after the --dataset ones) goes to validation whole (or its `#N` rows);
//   3. --dataset_shuffle shuffles the concatenated training and validation rows;
//   4. the picked rows are encoded: self-cognition placeholders filled (self_cognition.hpp), the
//      ChatML template applied and tokenized (chat_template.hpp), or pre-tokenized ids taken as
//      they are; a row picked several times (N > rows) is encoded once;
//   5. --max_length / --truncation_strategy drop or cut long samples (truncation.hpp).
// Pre-tokenized data needs no tokenizer (load_datasets(options, nullptr, vocab_size)); a text row
// without one is an error that names it. Every id is checked against the model's vocab_size.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/data/chat_template.hpp"
#include "peft/data/dataset_file.hpp"
#include "peft/data/dataset_formats.hpp"
#include "peft/data/dataset_sampling.hpp"
#include "peft/data/dataset_spec.hpp"
#include "peft/data/numpy_random_state.hpp"
#include "peft/data/sample.hpp"
#include "peft/data/self_cognition.hpp"
#include "peft/data/text_encoder.hpp"
#include "peft/data/truncation.hpp"

namespace peft::data {

// ms-swift's flags of the same names and defaults (ms-swift's data_seed plays the part of seed).
struct DatasetOptions {
  std::vector<std::string> specs;  // --dataset values
  std::vector<std::string> val_specs;  // --val_dataset values: validation only
  std::uint64_t seed = 42;
  bool dataset_shuffle = true;
  double split_dataset_ratio = 0.0;
  std::int64_t max_length = 2048;
  std::string truncation_strategy = "delete";
  std::string system;                                // --system; empty: Qwen2.5's default
  std::vector<std::string> model_name, model_author;  // [] or [both] or [zh, en]
  std::filesystem::path data_home;                   // empty: $PEFT_DATA_HOME
};

struct SpecStats {
  std::string spec;
  std::vector<std::filesystem::path> files;
  std::int64_t rows_read = 0;
  std::int64_t train_rows = 0, val_rows = 0;  // after sampling and the split, before max_length
};

struct DatasetStats {
  std::vector<SpecStats> specs;
  std::int64_t max_length = 0;
  std::string truncation_strategy;
  std::int64_t truncated = 0, dropped = 0;  // over training and validation samples
  std::int64_t train_samples = 0, val_samples = 0;
  std::int64_t train_tokens = 0, train_label_tokens = 0;
  std::int64_t samples_without_labels = 0;           // every label -100 (e.g. cut by 'right')
  std::int64_t rows_with_unfilled_placeholders = 0;  // {{NAME}}/{{AUTHOR}} left for want of a value

  std::string summary() const {
    std::string out;
    for (const SpecStats& s : specs) {
      out += fmt::format("dataset '{}': {} rows read from {} file{} -> {} train, {} val\n", s.spec,
                         s.rows_read, s.files.size(), s.files.size() == 1 ? "" : "s", s.train_rows, s.val_rows);
    }
    out += fmt::format("{} train samples ({} tokens, {} trained), {} val samples; max_length {} "
                       "(truncation_strategy '{}'): {} dropped, {} truncated",
                       train_samples, train_tokens, train_label_tokens, val_samples, max_length,
                       truncation_strategy, dropped, truncated);
    if (samples_without_labels > 0) {
      out += fmt::format("\nwarning: {} samples have no trained token", samples_without_labels);
    }
    if (rows_with_unfilled_placeholders > 0) {
      out += fmt::format("\nwarning: {} rows keep {{{{NAME}}}}/{{{{AUTHOR}}}} placeholders; give "
                         "--model_name and --model_author", rows_with_unfilled_placeholders);
    }
    return out;
  }
};

struct LoadedData {
  std::vector<Sample> train, val;
  DatasetStats stats;
};

namespace detail {

struct RowPick {
  std::size_t spec;
  std::int64_t row;
};

inline std::filesystem::path data_home_or_env(const std::filesystem::path& data_home) {
  if (!data_home.empty()) return data_home;
  const char* env = std::getenv("PEFT_DATA_HOME");
  return env ? std::filesystem::path(env) : std::filesystem::path();
}

// Steps 1-3: every spec's rows read, sampled and split with one seeded random state, then the
// picks concatenated and shuffled. The rows themselves are kept per spec, unencoded.
struct PickedRows {
  std::vector<std::vector<DatasetRow>> rows;  // per spec: --dataset specs, then --val_dataset specs
  std::vector<RowPick> train, val;
};

inline PickedRows pick_rows(const DatasetOptions& options, std::int64_t vocab_size, DatasetStats& stats,
                            Replies replies) {
  require(vocab_size > 0, "load_datasets: vocab_size must be positive, got {}", vocab_size);
  require(options.seed <= 0xFFFFFFFFull, "--seed must be in [0, 4294967295] (numpy's RandomState range), got {}",
          options.seed);
  const std::filesystem::path data_home = data_home_or_env(options.data_home);
  NumpyRandomState random(static_cast<std::uint32_t>(options.seed));
  std::vector<std::string> all_specs = options.specs;
  all_specs.insert(all_specs.end(), options.val_specs.begin(), options.val_specs.end());
  PickedRows p;
  p.rows.resize(all_specs.size());
  for (std::size_t s = 0; s < all_specs.size(); ++s) {
    const bool validation_only = s >= options.specs.size();
    const DatasetSpec spec = resolve_dataset_spec(all_specs[s], data_home);
    for (const std::filesystem::path& file : spec.files) {
      std::vector<DatasetRow> file_rows = read_dataset_file(file, vocab_size, replies);
      p.rows[s].insert(p.rows[s].end(), std::make_move_iterator(file_rows.begin()),
                       std::make_move_iterator(file_rows.end()));
    }
    RowSplit split = split_and_sample(static_cast<std::int64_t>(p.rows[s].size()), spec.sample_count,
                                      validation_only ? 0.0 : options.split_dataset_ratio, options.dataset_shuffle,
                                      random, spec.text);
    if (validation_only) std::swap(split.train, split.val);
    for (std::int64_t i : split.train) p.train.push_back({s, i});
    for (std::int64_t i : split.val) p.val.push_back({s, i});
    stats.specs.push_back({spec.text, spec.files, static_cast<std::int64_t>(p.rows[s].size()),
                           static_cast<std::int64_t>(split.train.size()), static_cast<std::int64_t>(split.val.size())});
  }
  if (options.dataset_shuffle) {
    shuffle_in_place(p.train, random);
    shuffle_in_place(p.val, random);
  }
  return p;
}

}  // namespace detail

// The validation rows a run with these options held out (its --val_dataset rows and its
// --split_dataset_ratio share), in the order training evaluated them, self-cognition placeholders
// filled: what `chat --load_data_args true` answers (ms-swift's infer re-derives the split the same
// way, from the seed). Rows --max_length dropped from evaluation are kept: they can be answered, and
// so can rows that are questions alone (Replies::Optional).
inline std::vector<DatasetRow> validation_rows(const DatasetOptions& options, std::int64_t vocab_size) {
  require(!options.specs.empty() || !options.val_specs.empty(), "no --dataset or --val_dataset to take rows from");
  DatasetStats stats;
  detail::PickedRows p = detail::pick_rows(options, vocab_size, stats, Replies::Optional);
  const SelfCognition identity(options.model_name, options.model_author);
  std::vector<DatasetRow> out;
  for (const detail::RowPick& pick : p.val) {
    DatasetRow row = p.rows[pick.spec][static_cast<std::size_t>(pick.row)];
    if (row.is_text()) identity.apply(row.messages, row.tag);
    out.push_back(std::move(row));
  }
  return out;
}

template <TextEncoder Tok>
LoadedData load_datasets(const DatasetOptions& options, const Tok* tokenizer, std::int64_t vocab_size) {
  require(!options.specs.empty(), "--dataset: no dataset given");
  require(options.max_length > 0, "--max_length must be positive, got {}", options.max_length);
  const TruncationStrategy strategy = parse_truncation_strategy(options.truncation_strategy);
  const SelfCognition identity(options.model_name, options.model_author);
  const std::string_view default_system = options.system.empty() ? kQwen25DefaultSystem : options.system;

  LoadedData out;
  DatasetStats& stats = out.stats;
  stats.max_length = options.max_length;
  stats.truncation_strategy = options.truncation_strategy;
  detail::PickedRows picked = detail::pick_rows(options, vocab_size, stats, Replies::Required);
  const std::vector<std::vector<DatasetRow>>& rows = picked.rows;
  const std::vector<detail::RowPick>& train_picks = picked.train;
  const std::vector<detail::RowPick>& val_picks = picked.val;

  // 4: encode each picked row once.
  std::vector<std::vector<std::optional<Sample>>> encoded(rows.size());
  for (std::size_t s = 0; s < rows.size(); ++s) encoded[s].resize(rows[s].size());
  auto encode = [&](const detail::RowPick& pick) -> const Sample& {
    std::optional<Sample>& slot = encoded[pick.spec][static_cast<std::size_t>(pick.row)];
    if (slot) return *slot;
    const DatasetRow& row = rows[pick.spec][static_cast<std::size_t>(pick.row)];
    const std::string where = row.where.str();
    if (!row.is_text()) {
      slot = row.tokens;
      return *slot;
    }
    require(tokenizer != nullptr,
            "{}: this {} row is text, but no tokenizer was given; text datasets need the model's "
            "tokenizer.json (pre-tokenized rows with input_ids do not)",
            where, format_name(row.format));
    std::vector<ChatMessage> messages = row.messages;
    stats.rows_with_unfilled_placeholders += identity.apply(messages, row.tag);
    try {
      slot = encode_chat(*tokenizer, messages, default_system);
    } catch (const Error& e) {
      fail("{}: {}", where, e.what());
    }
    for (std::int32_t id : slot->input_ids) {
      require(id >= 0 && id < vocab_size,
              "{}: the tokenizer produced id {}, outside the model's vocabulary [0, {}): the tokenizer "
              "does not belong to this model",
              where, id, vocab_size);
    }
    return *slot;
  };

  // 5: apply max_length.
  auto collect = [&](const std::vector<detail::RowPick>& picks, std::vector<Sample>& samples) {
    samples.reserve(picks.size());
    for (const detail::RowPick& pick : picks) {
      Sample sample = encode(pick);
      const LengthOutcome outcome = fit_to_max_length(sample, options.max_length, strategy);
      if (outcome == LengthOutcome::Dropped) {
        ++stats.dropped;
        continue;
      }
      stats.truncated += outcome == LengthOutcome::Truncated;
      stats.samples_without_labels += sample.label_tokens() == 0;
      samples.push_back(std::move(sample));
    }
  };
  collect(train_picks, out.train);
  collect(val_picks, out.val);
  require(train_picks.empty() || !out.train.empty(),
          "all {} training samples are longer than --max_length {} and were dropped "
          "(--truncation_strategy delete); raise --max_length or use 'left' or 'right'",
          train_picks.size(), options.max_length);

  stats.train_samples = static_cast<std::int64_t>(out.train.size());
  stats.val_samples = static_cast<std::int64_t>(out.val.size());
  for (const Sample& sample : out.train) {
    stats.train_tokens += static_cast<std::int64_t>(sample.size());
    stats.train_label_tokens += static_cast<std::int64_t>(sample.label_tokens());
  }
  return out;
}

// Pre-tokenized data only: no tokenizer.
inline LoadedData load_datasets(const DatasetOptions& options, std::nullptr_t, std::int64_t vocab_size) {
  return load_datasets(options, static_cast<const NoTokenizer*>(nullptr), vocab_size);
}

}  // namespace peft::data
