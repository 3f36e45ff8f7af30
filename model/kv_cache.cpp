#include "model/kv_cache.h"

namespace ultraserve {

PagedKvCache::PagedKvCache(const ModelConfig& config, int num_blocks, int block_size)
    : KvBlockPool(num_blocks, block_size) {
  for (int l = 0; l < config.num_hidden_layers; ++l) {
    layer_offset_.push_back(block_floats_);
    width_[0].push_back(config.k_dim(l));
    width_[1].push_back(config.v_dim(l));
    block_floats_ += size_t(block_size) * (config.k_dim(l) + config.v_dim(l));
  }
  storage_.resize(block_floats_ * num_blocks);
}

float* PagedKvCache::slot(const KvSequence& seq, int layer, int kind, int position) {
  const size_t block = size_t(seq.blocks.at(position / block_size()));
  const size_t keys = kind ? size_t(block_size()) * width_[0][layer] : 0;  // values follow the keys
  return storage_.data() + block * block_floats_ + layer_offset_[layer] + keys +
         size_t(position % block_size()) * width_[kind][layer];
}

}  // namespace ultraserve
