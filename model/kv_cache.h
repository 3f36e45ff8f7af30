#pragma once
// Paged key/value cache: a pool of fixed-size blocks of token positions, shared by all
// sequences. A sequence owns a block table (the blocks holding its positions, in order),
// so sequences grow without copying and a finished one returns its blocks at once.
// Block layout: for each layer, [key: position in block][k_dim(layer)] then
// [value: position in block][v_dim(layer)] floats (widths differ by layer in hybrid models).

#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/kv_block_pool.h"
#include "model/model_config.h"

namespace ultraserve {

// Host memory for every block of a KvBlockPool.
class PagedKvCache : public KvBlockPool {
 public:
  PagedKvCache(const ModelConfig& config, int num_blocks, int block_size);

  float* key(const KvSequence& seq, int layer, int position) { return slot(seq, layer, 0, position); }
  float* value(const KvSequence& seq, int layer, int position) { return slot(seq, layer, 1, position); }

 private:
  float* slot(const KvSequence& seq, int layer, int kind, int position);

  std::vector<size_t> layer_offset_;  // floats from a block's start to each layer's keys
  std::vector<int> width_[2];         // key and value floats per position, per layer
  size_t block_floats_ = 0;
  std::vector<float> storage_;
};

}  // namespace ultraserve
