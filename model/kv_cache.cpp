#include "model/kv_cache.h"

#include <stdexcept>

namespace ultraserve {

PagedKvCache::PagedKvCache(const ModelConfig& config, int num_blocks, int block_size)
    : layers_(config.num_hidden_layers), kv_dim_(config.kv_dim()), block_size_(block_size) {
  if (num_blocks <= 0 || block_size <= 0) throw std::invalid_argument("KV cache needs positive block count and size");
  block_floats_ = static_cast<size_t>(layers_) * 2 * block_size_ * kv_dim_;
  storage_.resize(block_floats_ * num_blocks);
  free_list_.reserve(num_blocks);
  for (int b = num_blocks - 1; b >= 0; --b) free_list_.push_back(b);
}

bool PagedKvCache::reserve(KvSequence& seq, int length) {
  int need = blocks_for(length) - static_cast<int>(seq.blocks.size());
  if (need <= 0) return true;
  if (need > free_blocks()) return false;
  for (int i = 0; i < need; ++i) {
    seq.blocks.push_back(free_list_.back());
    free_list_.pop_back();
  }
  return true;
}

void PagedKvCache::release(KvSequence& seq) {
  for (int32_t b : seq.blocks) free_list_.push_back(b);
  seq.blocks.clear();
  seq.length = 0;
}

float* PagedKvCache::slot(const KvSequence& seq, int layer, int kind, int position) {
  int block = seq.blocks.at(position / block_size_);
  size_t offset = block * block_floats_ +
                  ((static_cast<size_t>(layer) * 2 + kind) * block_size_ + position % block_size_) * kv_dim_;
  return storage_.data() + offset;
}

}  // namespace ultraserve
