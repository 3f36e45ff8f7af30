#include "model/kv_cache.h"

#include <algorithm>

namespace ultraserve {
namespace {

int rings_for(const ModelConfig& config, int max_sequences) { return config.sliding ? std::max(1, max_sequences) : 0; }

}  // namespace

PagedKvCache::PagedKvCache(const ModelConfig& config, int num_blocks, int block_size, int max_sequences)
    : KvBlockPool(num_blocks, block_size, rings_for(config, max_sequences)) {
  ring_capacity_ = config.sliding ? config.sliding->window + kMaxRollback : 0;
  for (int l = 0; l < config.num_hidden_layers; ++l) {
    const bool ring = config.is_sliding_layer(l);
    const size_t positions = ring ? ring_capacity_ : block_size;
    size_t& floats = ring ? ring_floats_ : block_floats_;
    in_ring_.push_back(ring);
    layer_offset_.push_back(floats);
    width_[0].push_back(config.k_dim(l));
    width_[1].push_back(config.v_dim(l));
    floats += positions * (config.k_dim(l) + config.v_dim(l));
  }
  storage_.resize(block_floats_ * num_blocks);
  rings_.resize(ring_floats_ * total_rings());
}

float* PagedKvCache::slot(const KvSequence& seq, int layer, int kind, int position) {
  const bool ring = in_ring_[layer];
  const size_t positions = ring ? ring_capacity_ : block_size();
  const size_t keys = kind ? positions * width_[0][layer] : 0;  // values follow the keys
  const size_t index = size_t(position) % positions;
  if (ring) return rings_.data() + size_t(seq.ring) * ring_floats_ + layer_offset_[layer] + keys + index * width_[kind][layer];
  const size_t block = size_t(seq.blocks.at(position / block_size()));
  return storage_.data() + block * block_floats_ + layer_offset_[layer] + keys + index * width_[kind][layer];
}

}  // namespace ultraserve
