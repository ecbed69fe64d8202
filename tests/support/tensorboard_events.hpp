// Test support: an independent reader of TensorBoard event files, written from the format's
// description (TFRecord framing with masked CRC32C of length and data; Event protobufs holding
// wall_time, step, file_version or a Summary of tag/simple_value), to check what
// train/tensorboard_writer.hpp wrote. Catch2 only. Only the CRC32C itself is shared with the
// writer; its check value is tested on its own.
#pragma once
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "peft/train/tensorboard_writer.hpp"

namespace peft::test {

inline std::uint32_t mask(std::uint32_t c) { return ((c >> 15) | (c << 17)) + 0xa282ead8u; }

struct Event {
  double wall_time = 0;
  std::int64_t step = -1;
  std::string file_version;
  std::map<std::string, float> scalars;
};

struct Reader {
  std::string_view b;
  std::size_t p = 0;
  std::uint64_t varint() {
    std::uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      REQUIRE(p < b.size());
      const auto c = static_cast<unsigned char>(b[p++]);
      v |= static_cast<std::uint64_t>(c & 0x7F) << shift;
      if (!(c & 0x80)) return v;
    }
  }
  template <class T> T fixed() {
    REQUIRE(p + sizeof(T) <= b.size());
    T v;
    std::memcpy(&v, b.data() + p, sizeof(T));
    p += sizeof(T);
    return v;
  }
  std::string_view bytes() {
    const auto n = varint();
    REQUIRE(p + n <= b.size());
    const auto s = b.substr(p, n);
    p += n;
    return s;
  }
  bool done() const { return p == b.size(); }
};

inline Event parse_event(std::string_view data) {
  Event e;
  Reader r{data};
  while (!r.done()) {
    const auto key = r.varint();
    switch (key) {
      case 1 << 3 | 1: e.wall_time = r.fixed<double>(); break;
      case 2 << 3 | 0: e.step = static_cast<std::int64_t>(r.varint()); break;
      case 3 << 3 | 2: e.file_version = std::string(r.bytes()); break;
      case 5 << 3 | 2: {
        Reader s{r.bytes()};
        while (!s.done()) {
          REQUIRE(s.varint() == (1 << 3 | 2));
          Reader v{s.bytes()};
          std::string tag;
          float value = 0;
          while (!v.done()) {
            const auto k = v.varint();
            if (k == (1 << 3 | 2)) tag = std::string(v.bytes());
            else if (k == (2 << 3 | 5)) value = v.fixed<float>();
            else FAIL("unexpected field in Summary.Value: " << k);
          }
          e.scalars[tag] = value;
        }
        break;
      }
      default: FAIL("unexpected field in Event: " << key);
    }
  }
  return e;
}

// Every record of the file, its CRCs checked.
inline std::vector<Event> read_events(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<Event> out;
  Reader r{all};
  while (!r.done()) {
    const std::size_t at = r.p;
    const auto len = r.fixed<std::uint64_t>();
    CHECK(r.fixed<std::uint32_t>() == mask(tensorboard::crc32c(all.data() + at, 8)));
    REQUIRE(r.p + len + 4 <= all.size());
    const std::string_view data(all.data() + r.p, len);
    r.p += len;
    CHECK(r.fixed<std::uint32_t>() == mask(tensorboard::crc32c(data.data(), data.size())));
    out.push_back(parse_event(data));
  }
  return out;
}


// The event files of a run's runs/ folder, in name order.
inline std::vector<std::filesystem::path> event_files(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> files;
  if (std::filesystem::is_directory(dir))
    for (const auto& e : std::filesystem::directory_iterator(dir))
      if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace peft::test
