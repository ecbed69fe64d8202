// Byte-pair encoding of one pre-tokenized piece: start from one symbol per byte and repeatedly
// merge the adjacent pair whose merge has the lowest rank (leftmost first on ties), as HF's BPE
// does. Symbols form a linked list and candidate merges sit in a min-heap, so a piece of n
// bytes costs O(n log n), not O(n^2) rescans; stale heap entries (a side already merged away)
// are skipped when popped. Natural text repeats words constantly, so finished pieces are cached
// (piece bytes -> ids), which is what makes encoding fast; the cache is shared between threads
// behind a mutex and stops growing at a fixed size, so memory stays bounded.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "peft/core/error.hpp"

namespace peft::detail {

// Merge ranks keyed by the (left id, right id) pair, in an open-addressing table: the merge loop
// looks up every adjacent pair, and one probe into a flat array is several times faster than a
// node-based std::unordered_map on a table of 150k merges.
class MergeTable {
 public:
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };

  explicit MergeTable(std::size_t count) {
    std::size_t capacity = 16;
    while (capacity < count + count / 2) capacity *= 2;  // load factor <= 2/3: 4 MB for Qwen2
    slots_.assign(capacity, Slot{kEmpty, {0, 0}});
    mask_ = capacity - 1;
  }

  void insert_or_assign(int32_t left, int32_t right, Merge merge) {
    const uint64_t key = pair_key(left, right);
    for (std::size_t i = slot_of(key);; i = (i + 1) & mask_) {
      if (slots_[i].key == key || slots_[i].key == kEmpty) {
        slots_[i] = {key, merge};
        return;
      }
    }
  }

  const Merge* find(int32_t left, int32_t right) const {
    const uint64_t key = pair_key(left, right);
    for (std::size_t i = slot_of(key);; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return &slots_[i].merge;
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // ids are non-negative: never a real pair
  struct Slot {
    uint64_t key;
    Merge merge;
  };
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  std::size_t slot_of(uint64_t key) const {  // Fibonacci hashing: spreads consecutive ids
    return static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ULL) >> 20) & mask_;
  }

  std::vector<Slot> slots_;
  std::size_t mask_ = 0;
};

struct TransparentStringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

// Raw token bytes -> id; looked up with std::string_view (no temporary strings).
using ByteVocab = std::unordered_map<std::string, int32_t, TransparentStringHash, std::equal_to<>>;

class BpeModel {
 public:
  using Merge = MergeTable::Merge;

  // `vocab` maps raw token bytes to ids; every single byte must be present (byte-level BPE).
  // `merges` are pairs of raw token bytes, in rank order. `where` names the file for errors.
  BpeModel(ByteVocab vocab, const std::vector<std::pair<std::string, std::string>>& merges, bool ignore_merges,
           std::string_view where)
      : vocab_(std::move(vocab)), merges_(merges.size()), ignore_merges_(ignore_merges) {
    for (int b = 0; b < 256; ++b) {
      const auto it = vocab_.find(std::string_view(std::string(1, static_cast<char>(b))));
      require(it != vocab_.end(), "{}: no vocabulary token for byte 0x{:02X}; not a byte-level BPE vocabulary", where,
              b);
      byte_ids_[b] = it->second;
    }
    for (std::size_t rank = 0; rank < merges.size(); ++rank) {
      const auto& [left, right] = merges[rank];
      const auto l = vocab_.find(left), r = vocab_.find(right), m = vocab_.find(left + right);
      require(l != vocab_.end() && r != vocab_.end() && m != vocab_.end(),
              "{}: merge #{} joins tokens that are not all in the vocabulary", where, rank);
      // A repeated pair takes its last rank: HF collects the merges into a map the same way.
      merges_.insert_or_assign(l->second, r->second, Merge{static_cast<int32_t>(rank), m->second});
    }
    // Every piece starts as single bytes, so its first round of lookups is all byte pairs: a
    // dense 512 KB table answers those from cache instead of the large hash table.
    byte_pair_merges_.assign(256 * 256, Merge{-1, -1});
    for (int a = 0; a < 256; ++a)
      for (int b = 0; b < 256; ++b)
        if (const Merge* m = merges_.find(byte_ids_[a], byte_ids_[b])) byte_pair_merges_[a * 256 + b] = *m;
  }

  std::optional<int32_t> id_of(std::string_view bytes) const {
    const auto it = vocab_.find(bytes);
    if (it == vocab_.end()) return std::nullopt;
    return it->second;
  }

  template <class OnToken>  // on_token(std::string_view bytes, int32_t id)
  void for_each_token(OnToken&& on_token) const {
    for (const auto& [bytes, id] : vocab_) on_token(std::string_view(bytes), id);
  }

  // Appends the ids of one piece (raw bytes) to `out`.
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
    if (piece.size() == 1) {
      out.push_back(byte_ids_[static_cast<unsigned char>(piece[0])]);
      return;
    }
    if (ignore_merges_) {
      if (const auto id = id_of(piece)) {
        out.push_back(*id);
        return;
      }
    }
    const bool cacheable = piece.size() <= kMaxCachedPieceBytes;
    if (cacheable) {
      const std::lock_guard lock(cache_->mutex);
      const auto it = cache_->ids.find(piece);
      if (it != cache_->ids.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    const std::size_t first = out.size();
    merge(piece, out);
    if (cacheable) {
      const std::lock_guard lock(cache_->mutex);
      if (cache_->ids.size() < kMaxCachedPieces)
        cache_->ids.emplace(piece, std::vector<int32_t>(out.begin() + first, out.end()));
    }
  }

 private:
  static constexpr std::size_t kMaxCachedPieceBytes = 256;
  static constexpr std::size_t kMaxCachedPieces = 200'000;

  const Merge* find_merge(int32_t left, int32_t right) const { return merges_.find(left, right); }

  struct Symbol {
    int32_t id;
    int32_t prev;  // index of the previous live symbol, -1 at the start
    int32_t next;  // index of the next live symbol, -1 at the end
    bool alive;
  };
  struct Candidate {
    int32_t rank;
    int32_t left;  // symbol index of the pair's left side
    int32_t left_id, right_id;  // the pair when pushed: if either side changed since, it is stale
    int32_t merged_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };

  void merge(std::string_view piece, std::vector<int32_t>& out) const {
    const auto n = static_cast<int32_t>(piece.size());
    std::vector<Symbol> symbols(static_cast<std::size_t>(n));
    for (int32_t i = 0; i < n; ++i)
      symbols[i] = {byte_ids_[static_cast<unsigned char>(piece[i])], i - 1, i + 1 < n ? i + 1 : -1, true};
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
    auto push_pair = [&](int32_t left) {
      const int32_t right = symbols[left].next;
      if (right < 0) return;
      if (const Merge* m = find_merge(symbols[left].id, symbols[right].id))
        heap.push({m->rank, left, symbols[left].id, symbols[right].id, m->merged_id});
    };
    for (int32_t i = 0; i + 1 < n; ++i) {
      const auto first = static_cast<unsigned char>(piece[i]), second = static_cast<unsigned char>(piece[i + 1]);
      const Merge& m = byte_pair_merges_[first * 256 + second];
      if (m.rank >= 0) heap.push({m.rank, i, symbols[i].id, symbols[i + 1].id, m.merged_id});
    }
    while (!heap.empty()) {
      const Candidate top = heap.top();
      heap.pop();
      Symbol& left = symbols[top.left];
      if (!left.alive || left.next < 0) continue;
      Symbol& right = symbols[left.next];
      if (left.id != top.left_id || right.id != top.right_id) continue;  // stale: a side changed
      left.id = top.merged_id;
      right.alive = false;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = top.left;
      if (left.prev >= 0) push_pair(left.prev);
      push_pair(top.left);
    }
    for (int32_t i = 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
  }

  ByteVocab vocab_;
  MergeTable merges_;
  std::array<int32_t, 256> byte_ids_{};
  std::vector<Merge> byte_pair_merges_;  // [first byte * 256 + second byte]; rank -1: no merge
  bool ignore_merges_ = false;

  struct PieceCache {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<int32_t>, TransparentStringHash, std::equal_to<>> ids;
  };
  std::unique_ptr<PieceCache> cache_ = std::make_unique<PieceCache>();  // behind a pointer: movable
};

}  // namespace peft::detail
