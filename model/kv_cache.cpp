#include "model/kv_cache.h"

namespace ultraserve {

PagedKvCache::PagedKvCache(const ModelConfig& config, int num_blocks, int block_size)
    : KvBlockPool(num_blocks, block_size), layers_(config.num_hidden_layers), kv_dim_(config.kv_dim()) {
  block_floats_ = static_cast<size_t>(layers_) * 2 * block_size * kv_dim_;
  storage_.resize(block_floats_ * num_blocks);
}

float* PagedKvCache::slot(const KvSequence& seq, int layer, int kind, int position) {
  int block = seq.blocks.at(position / block_size());
  size_t offset = block * block_floats_ +
                  ((static_cast<size_t>(layer) * 2 + kind) * block_size() + position % block_size()) * kv_dim_;
  return storage_.data() + offset;
}

}  // namespace ultraserve
