#include "model/tokenizer/bpe.h"

#include <algorithm>

#include "model/byte_level.h"

namespace ultraserve::tokenizer_detail {

bool WordCache::lookup(std::string_view word, std::vector<int32_t>& out) const {
  Shard& sh = shard(word);
  std::lock_guard lock(sh.mu);
  auto it = sh.map.find(word);
  if (it == sh.map.end()) return false;
  out.insert(out.end(), it->second.begin(), it->second.end());
  return true;
}

void WordCache::store(std::string_view word, std::span<const int32_t> ids) const {
  Shard& sh = shard(word);
  std::lock_guard lock(sh.mu);
  if (sh.map.size() >= kEntriesPerShard) sh.map.clear();
  sh.map.try_emplace(std::string(word), ids.begin(), ids.end());
}

// BPE on one pre-tokenized word, given as raw bytes: the ByteLevel step maps byte b to
// the character byte_level::byte_to_utf8(b), and since that map is one-to-one the initial
// BPE symbols are simply byte_ids[b] - no need to build the mapped string.
void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  if (word.size() == 1 && !ignore_merges && byte_ids[static_cast<unsigned char>(word[0])] >= 0) {
    ids.push_back(byte_ids[static_cast<unsigned char>(word[0])]);
    return;
  }
  if (ignore_merges) {
    // HF looks the whole (byte-level) word up first and skips BPE when it is a token.
    if (const int32_t id = vocab.find(byte_level::encode(word)); id >= 0) {
      ids.push_back(id);
      return;
    }
  }
  const bool cacheable = word.size() <= WordCache::kMaxWordBytes;
  if (cacheable && cache.lookup(word, ids)) return;
  const size_t before = ids.size();
  merge_word(word, ids);
  if (cacheable) cache.store(word, std::span<const int32_t>(ids).subspan(before));
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& ids) const {
  // HF models::bpe::Word: a doubly linked list over a vector; merged-away symbols get
  // len 0. Queue entries are (rank, position), smallest first, so equal ranks merge left
  // to right; an entry is stale if its pair no longer maps to the same merged id.
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    uint32_t len;
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t merged;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  // Per-thread buffers: no allocation per word once they have grown.
  thread_local std::vector<Symbol> sym;
  thread_local std::vector<Candidate> heap;
  sym.clear();
  heap.clear();
  const std::greater<> later;  // min-heap: smallest (rank, pos) on top
  auto push = [&](const Candidate& c) {
    heap.push_back(c);
    std::push_heap(heap.begin(), heap.end(), later);
  };

  auto add = [&](int32_t id, uint32_t len) {
    const int32_t n = int32_t(sym.size());
    sym.push_back({id, n - 1, -1, len});
    if (n > 0) sym[size_t(n - 1)].next = n;
  };

  // Initial symbols, with HF's handling of characters missing from the vocabulary:
  // byte_fallback tokens, else unk (consecutive ones fused when fuse_unk), else dropped.
  int32_t pending_unk_len = 0;
  for (unsigned char b : word) {
    if (byte_ids[b] >= 0) {
      if (pending_unk_len > 0) {
        add(unk_id, uint32_t(pending_unk_len));
        pending_unk_len = 0;
      }
      add(byte_ids[b], 1);
      continue;
    }
    if (byte_fallback) {
      // The fallback covers the UTF-8 bytes of the byte-level *character*.
      const std::string_view ch = byte_level::byte_to_utf8(b);
      bool all = true;
      for (unsigned char cb : ch) all = all && fallback_ids[cb] >= 0;
      if (all) {
        // HF does not flush a pending unk here either: it lands after these tokens.
        for (unsigned char cb : ch) add(fallback_ids[cb], 1);
        continue;
      }
    }
    if (unk_id >= 0) {
      if (pending_unk_len > 0 && !fuse_unk) {
        add(unk_id, uint32_t(pending_unk_len));
        pending_unk_len = 0;
      }
      pending_unk_len += 1;
    }
  }
  if (pending_unk_len > 0) add(unk_id, uint32_t(pending_unk_len));

  for (size_t i = 0; i + 1 < sym.size(); ++i) {
    if (const MergeTable::Entry* e = merges.find(MergeTable::key(sym[i].id, sym[i + 1].id)))
      push({e->rank, int32_t(i), e->merged});
  }
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = sym[size_t(top.pos)];
    if (left.len == 0 || left.next < 0) continue;
    const int32_t right_pos = left.next;
    const Symbol right = sym[size_t(right_pos)];
    const MergeTable::Entry* e = merges.find(MergeTable::key(left.id, right.id));
    if (e == nullptr || e->merged != top.merged) continue;  // stale entry

    left.id = top.merged;
    left.len += right.len;
    left.next = right.next;
    sym[size_t(right_pos)].len = 0;
    if (right.next >= 0) sym[size_t(right.next)].prev = top.pos;

    if (left.prev >= 0) {
      const Symbol& p = sym[size_t(left.prev)];
      if (const MergeTable::Entry* pe = merges.find(MergeTable::key(p.id, left.id)))
        push({pe->rank, left.prev, pe->merged});
    }
    if (left.next >= 0) {
      const Symbol& n = sym[size_t(left.next)];
      if (const MergeTable::Entry* ne = merges.find(MergeTable::key(left.id, n.id)))
        push({ne->rank, top.pos, ne->merged});
    }
  }
  for (const Symbol& s : sym)
    if (s.len > 0) ids.push_back(s.id);
}

}  // namespace ultraserve::tokenizer_detail
