#pragma once
// Paged key/value cache: a pool of fixed-size blocks of token positions, shared by all
// sequences. A sequence owns a block table (the blocks holding its positions, in order),
// so sequences grow without copying and a finished one returns its blocks at once.
// Block layout: [layer][key|value][position in block][kv_dim] floats.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/model_config.h"

namespace ultraserve {

struct KvSequence {
  std::vector<int32_t> blocks;
  int length = 0;  // positions written so far
};

class PagedKvCache {
 public:
  PagedKvCache(const ModelConfig& config, int num_blocks, int block_size);

  int block_size() const { return block_size_; }
  int total_blocks() const { return static_cast<int>(free_list_.capacity()); }
  int free_blocks() const { return static_cast<int>(free_list_.size()); }
  int used_blocks() const { return total_blocks() - free_blocks(); }
  // Blocks a sequence needs to hold `length` positions.
  int blocks_for(int length) const { return (length + block_size_ - 1) / block_size_; }

  // Grows the block table so that `length` positions fit; false (and no change) if the pool
  // has too few free blocks.
  bool reserve(KvSequence& seq, int length);
  // Returns all of the sequence's blocks to the pool and empties it.
  void release(KvSequence& seq);

  float* key(const KvSequence& seq, int layer, int position) { return slot(seq, layer, 0, position); }
  float* value(const KvSequence& seq, int layer, int position) { return slot(seq, layer, 1, position); }

 private:
  float* slot(const KvSequence& seq, int layer, int kind, int position);

  int layers_, kv_dim_, block_size_;
  size_t block_floats_;
  std::vector<float> storage_;
  std::vector<int32_t> free_list_;
};

}  // namespace ultraserve
