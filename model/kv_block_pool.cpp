#include "model/kv_block_pool.h"

#include <stdexcept>

namespace ultraserve {

KvBlockPool::KvBlockPool(int num_blocks, int block_size) : total_blocks_(num_blocks), block_size_(block_size) {
  if (num_blocks <= 0 || block_size <= 0) throw std::invalid_argument("KV cache needs positive block count and size");
  free_list_.reserve(num_blocks);
  for (int b = num_blocks - 1; b >= 0; --b) free_list_.push_back(b);
}

bool KvBlockPool::reserve(KvSequence& seq, int length) {
  int need = blocks_for(length) - static_cast<int>(seq.blocks.size());
  if (need <= 0) return true;
  if (need > free_blocks()) return false;
  for (int i = 0; i < need; ++i) {
    seq.blocks.push_back(free_list_.back());
    free_list_.pop_back();
  }
  return true;
}

void KvBlockPool::release(KvSequence& seq) {
  for (int32_t b : seq.blocks) free_list_.push_back(b);
  seq.blocks.clear();
  seq.length = 0;
}

}  // namespace ultraserve
