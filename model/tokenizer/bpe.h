#pragma once
// The BPE model (HF models::bpe::BPE): its tables - merges, vocabulary index, byte tokens -
// a word cache, and BPE itself on one pre-tokenized word.

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/tokenizer/string_map.h"

namespace ultraserve::tokenizer_detail {

// (left id, right id) -> (rank, merged id), open addressing with linear probing. The hot
// loop of BPE is this lookup; a flat table is several times faster than unordered_map.
class MergeTable {
 public:
  struct Entry {
    uint64_t key;
    int32_t rank;
    int32_t merged;
  };
  static uint64_t key(int32_t left, int32_t right) {
    return (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
  }
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    slots_.assign(cap, Entry{kEmpty, 0, 0});
    mask_ = cap - 1;
  }
  // A later duplicate overwrites an earlier one, as HF's HashMap collect() does.
  void insert_or_assign(uint64_t k, int32_t rank, int32_t merged) {
    for (size_t i = hash(k) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == kEmpty || slots_[i].key == k) {
        slots_[i] = Entry{k, rank, merged};
        return;
      }
    }
  }
  const Entry* find(uint64_t k) const {
    for (size_t i = hash(k) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == k) return &slots_[i];
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t(0);  // ids are non-negative: never a key
  static size_t hash(uint64_t k) {  // splitmix64 finaliser
    k ^= k >> 30;
    k *= 0xbf58476d1ce4e5b9ULL;
    k ^= k >> 27;
    k *= 0x94d049bb133111ebULL;
    k ^= k >> 31;
    return size_t(k);
  }
  std::vector<Entry> slots_;
  size_t mask_ = 0;
};

// The model vocabulary, token string -> id: open addressing over keys kept in one arena
// string. An unordered_map<std::string, int> costs 150k node allocations (tens of ms)
// at load; this costs two. Like HF's HashMap, a repeated key keeps its last id.
class VocabIndex {
 public:
  void reserve(size_t keys, size_t key_bytes) {
    size_t cap = 16;
    while (cap < 2 * keys) cap <<= 1;
    slots_.assign(cap, Slot{0, 0, -1});
    mask_ = cap - 1;
    arena_.reserve(key_bytes);
  }
  void insert_or_assign(std::string_view key, int32_t id) {
    for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      Slot& slot = slots_[i];
      if (slot.id < 0) {
        slot = Slot{uint32_t(arena_.size()), uint32_t(key.size()), id};
        arena_.append(key);
        ++size_;
        return;
      }
      if (key_of(slot) == key) {
        slot.id = id;
        return;
      }
    }
  }
  int32_t find(std::string_view key) const {  // -1 when absent
    if (slots_.empty()) return -1;
    for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      const Slot& slot = slots_[i];
      if (slot.id < 0) return -1;
      if (key_of(slot) == key) return slot.id;
    }
  }
  size_t size() const { return size_; }

 private:
  struct Slot {
    uint32_t offset, length;
    int32_t id;  // -1: empty
  };
  static size_t hash(std::string_view s) { return std::hash<std::string_view>{}(s); }
  std::string_view key_of(const Slot& slot) const { return std::string_view(arena_).substr(slot.offset, slot.length); }
  std::vector<Slot> slots_;
  size_t mask_ = 0, size_ = 0;
  std::string arena_;
};

// Word -> ids cache shared by all threads calling encode(). Sharded so that concurrent
// encodes rarely wait on one another; a full shard is simply cleared (HF's cache instead
// stops accepting entries - either way only speed is affected, never results).
class WordCache {
 public:
  static constexpr size_t kMaxWordBytes = 255;  // HF does not cache words of 256+ bytes

  bool lookup(std::string_view word, std::vector<int32_t>& out) const;
  void store(std::string_view word, std::span<const int32_t> ids) const;

 private:
  static constexpr size_t kShards = 32;
  static constexpr size_t kEntriesPerShard = 2048;
  struct Shard {
    std::mutex mu;
    StringMap<std::vector<int32_t>> map;
  };
  Shard& shard(std::string_view word) const { return shards_[StringHash{}(word) % kShards]; }
  mutable std::array<Shard, kShards> shards_;
};

// The BPE model as loaded from tokenizer.json's "model" object.
struct BpeModel {
  VocabIndex vocab;  // the model's vocabulary
  MergeTable merges;
  std::array<int32_t, 256> byte_ids{};  // id of the single-character token of each byte, or -1
  int32_t unk_id = -1;
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  std::array<int32_t, 256> fallback_ids{};  // "<0xAB>" tokens for byte_fallback, or -1

  WordCache cache;

  // Appends the ids of one pre-tokenized word, given as raw bytes (ByteLevel's mapping to
  // the GPT-2 alphabet is implied), through the word cache.
  void encode_word(std::string_view word, std::vector<int32_t>& ids) const;

 private:
  void merge_word(std::string_view word, std::vector<int32_t>& ids) const;  // uncached
};

}  // namespace ultraserve::tokenizer_detail
