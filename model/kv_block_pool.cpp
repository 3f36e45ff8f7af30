#include "model/kv_block_pool.h"

#include <stdexcept>

namespace ultraserve {

KvBlockPool::KvBlockPool(int num_blocks, int block_size, int num_rings)
    : total_blocks_(num_blocks), block_size_(block_size), total_rings_(num_rings) {
  if (num_blocks <= 0 || block_size <= 0) throw std::invalid_argument("KV cache needs positive block count and size");
  if (num_rings < 0) throw std::invalid_argument("KV cache ring count must not be negative");
  free_list_.reserve(num_blocks);
  for (int b = num_blocks - 1; b >= 0; --b) free_list_.push_back(b);
  for (int r = num_rings - 1; r >= 0; --r) free_rings_.push_back(r);
}

bool KvBlockPool::reserve(KvSequence& seq, int length) {
  const bool needs_ring = total_rings_ > 0 && seq.ring < 0;
  int need = blocks_for(length) - static_cast<int>(seq.blocks.size());
  if (need > free_blocks()) return false;
  if (needs_ring && free_rings_.empty()) {
    free_rings_.push_back(total_rings_++);
    grow_rings(total_rings_);
  }
  if (needs_ring) {
    seq.ring = free_rings_.back();
    free_rings_.pop_back();
  }
  for (int i = 0; i < need; ++i) {
    seq.blocks.push_back(free_list_.back());
    free_list_.pop_back();
  }
  return true;
}

void KvBlockPool::release(KvSequence& seq) {
  for (int32_t b : seq.blocks) free_list_.push_back(b);
  if (seq.ring >= 0) free_rings_.push_back(seq.ring);
  seq.blocks.clear();
  seq.ring = -1;
  seq.length = 0;
}

}  // namespace ultraserve
