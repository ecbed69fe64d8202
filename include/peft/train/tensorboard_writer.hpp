// TensorBoard event files without TensorFlow or protobuf: what `--report_to tensorboard` writes
// under <run>/runs/, where ms-swift (HF's TensorBoardCallback) puts them, so `tensorboard
// --logdir output` and ms-swift's own plot scripts read our runs.
// The format, written out by hand:
//   - a TFRecord stream: each record is [u64 length][u32 masked CRC32C of the length bytes]
//     [data][u32 masked CRC32C of the data], little-endian; mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8;
//   - each record's data is an Event protobuf: wall_time (field 1, double), step (2, int64), and
//     either file_version (3, string; the first record, "brain.Event:2") or summary (5, message);
//   - a Summary holds Values: tag (1, string) and simple_value (2, float): one scalar each.
// Tags follow HF's rewrite: "eval_loss" -> "eval/loss", "loss" -> "train/loss".
#pragma once
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "peft/core/error.hpp"

namespace peft {

namespace tensorboard {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum TFRecord uses.
inline std::uint32_t crc32c(const void* data, std::size_t n, std::uint32_t crc = 0) {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (std::size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

// TFRecord stores CRCs masked, so a CRC of data that itself holds CRCs does not degenerate.
inline std::uint32_t masked_crc32c(const void* data, std::size_t n) {
  const std::uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

// Protobuf wire encoding, the three field kinds an Event needs.
inline void put_varint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
template <class T>
inline void put_fixed(std::string& out, T v) {  // little-endian, as x86 and the format are
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}
inline void put_bytes_field(std::string& out, int field, std::string_view bytes) {
  put_varint(out, static_cast<std::uint64_t>(field) << 3 | 2);
  put_varint(out, bytes.size());
  out.append(bytes);
}

// An Event holding one scalar per (tag, value).
inline std::string scalar_event(double wall_time, std::int64_t step,
                                const std::vector<std::pair<std::string, float>>& values) {
  std::string summary;
  for (const auto& [tag, v] : values) {
    std::string value;
    put_bytes_field(value, 1, tag);
    put_varint(value, 2 << 3 | 5);  // simple_value: fixed32
    put_fixed(value, v);
    put_bytes_field(summary, 1, value);
  }
  std::string event;
  put_varint(event, 1 << 3 | 1);  // wall_time: fixed64
  put_fixed(event, wall_time);
  put_varint(event, 2 << 3 | 0);  // step: varint
  put_varint(event, static_cast<std::uint64_t>(step));
  put_bytes_field(event, 5, summary);
  return event;
}

inline std::string file_version_event(double wall_time) {
  std::string event;
  put_varint(event, 1 << 3 | 1);
  put_fixed(event, wall_time);
  put_bytes_field(event, 3, "brain.Event:2");
  return event;
}

// One TFRecord around `data`.
inline std::string tfrecord(std::string_view data) {
  std::string r;
  const std::uint64_t len = data.size();
  put_fixed(r, len);
  put_fixed(r, masked_crc32c(r.data(), 8));
  r.append(data);
  put_fixed(r, masked_crc32c(data.data(), data.size()));
  return r;
}

// HF TensorBoardCallback's tag for a logging.jsonl key.
inline std::string tag_for(const std::string& key) {
  if (key.rfind("eval_", 0) == 0) return "eval/" + key.substr(5);
  return "train/" + key;
}

}  // namespace tensorboard

// Appends scalar events to one events.out.tfevents.<time>.<host>.<pid>.<n> file in `dir`;
// flushed after every entry, so TensorBoard shows a run while it trains and a killed run keeps
// what it logged.
class TensorBoardWriter {
 public:
  explicit TensorBoardWriter(const std::filesystem::path& dir) {
    std::filesystem::create_directories(dir);
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    const auto now = static_cast<long long>(wall_time());
    for (int n = 0;; ++n) {  // never reuse an existing file (a resumed run gets a new one)
      file_ = dir / fmt::format("events.out.tfevents.{}.{}.{}.{}", now, host, static_cast<long long>(getpid()), n);
      if (!std::filesystem::exists(file_)) break;
    }
    out_.open(file_, std::ios::binary);
    require(static_cast<bool>(out_), "cannot write {}", file_.string());
    write(tensorboard::file_version_event(wall_time()));
  }

  const std::filesystem::path& file() const { return file_; }

  void add_scalars(std::int64_t step, const std::vector<std::pair<std::string, float>>& values) {
    if (!values.empty()) write(tensorboard::scalar_event(wall_time(), step, values));
  }

  // A logging.jsonl entry: every number but "step" (the event's step), tagged as HF tags it.
  void add_log_entry(const nlohmann::json& entry) {
    if (!entry.is_object() || !entry.contains("step") || !entry["step"].is_number()) return;
    std::vector<std::pair<std::string, float>> values;
    for (const auto& [k, v] : entry.items())
      if (k != "step" && v.is_number()) values.emplace_back(tensorboard::tag_for(k), v.get<float>());
    add_scalars(entry["step"].get<std::int64_t>(), values);
  }

 private:
  static double wall_time() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  }
  void write(const std::string& event) {
    const std::string r = tensorboard::tfrecord(event);
    out_.write(r.data(), static_cast<std::streamsize>(r.size()));
    out_.flush();
    require(static_cast<bool>(out_), "{}: write failed (disk full?)", file_.string());
  }

  std::filesystem::path file_;
  std::ofstream out_;
};

}  // namespace peft
