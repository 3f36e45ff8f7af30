#pragma once
// Paged key/value cache: a pool of fixed-size blocks of token positions, shared by all
// sequences. A sequence owns a block table (the blocks holding its positions, in order),
// so sequences grow without copying and a finished one returns its blocks at once.
// Block layout: [layer][key|value][position in block][kv_dim] floats.

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

  int layers_, kv_dim_;
  size_t block_floats_;
  std::vector<float> storage_;
};

}  // namespace ultraserve
