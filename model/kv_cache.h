#pragma once
// Paged key/value cache: a pool of fixed-size blocks of token positions, shared by all
// sequences. A sequence owns a block table (the blocks holding its positions, in order),
// so sequences grow without copying and a finished one returns its blocks at once.
// Block layout: for each full-attention layer, [key: position in block][k_dim(layer)] then
// [value: position in block][v_dim(layer)] floats (widths differ by layer in hybrid models).
//
// Sliding-window layers (MiMo-V2) keep only their window: each live sequence has a ring of
// window + kMaxRollback positions per such layer (position p in slot p % capacity), so a long
// context costs memory on the full-attention layers only. The extra kMaxRollback positions keep
// what a rejected speculative block overwrote: after rolling back by up to that many positions,
// the window before the new position is still there. Readers must not ask for positions older
// than the window (CpuModel reads a pass's own new positions from its buffers, not the ring).

#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/kv_block_pool.h"
#include "model/model_config.h"

namespace ultraserve {

// Host memory for every block of a KvBlockPool, and for its rings.
class PagedKvCache : public KvBlockPool {
 public:
  static constexpr int kMaxRollback = 64;  // the largest speculative block (dflash_config.block_size <= 64)

  // `max_sequences`: the rings made up front (hybrid models only); more are added as sequences need them.
  PagedKvCache(const ModelConfig& config, int num_blocks, int block_size, int max_sequences = 1);

  float* key(const KvSequence& seq, int layer, int position) { return slot(seq, layer, 0, position); }
  float* value(const KvSequence& seq, int layer, int position) { return slot(seq, layer, 1, position); }

  int ring_capacity() const { return ring_capacity_; }  // positions a ring holds (0: no rings)
  size_t block_bytes() const { return block_floats_ * sizeof(float); }
  size_t ring_bytes() const { return ring_floats_ * sizeof(float); }

 private:
  float* slot(const KvSequence& seq, int layer, int kind, int position);
  void grow_rings(int total) override { rings_.resize(ring_floats_ * size_t(total)); }

  std::vector<bool> in_ring_;         // per layer: a sliding layer, kept in the rings
  std::vector<size_t> layer_offset_;  // floats from a block's (or a ring's) start to each layer's keys
  std::vector<int> width_[2];         // key and value floats per position, per layer
  size_t block_floats_ = 0, ring_floats_ = 0;
  int ring_capacity_ = 0;
  std::vector<float> storage_, rings_;
};

}  // namespace ultraserve
