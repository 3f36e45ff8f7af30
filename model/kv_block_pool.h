#pragma once
// The bookkeeping half of a paged KV cache: a pool of fixed-size blocks of token positions and
// the block table of each sequence. It owns no K/V memory, so the CPU cache (host floats) and
// the GPU worker (device memory) share one allocator. Models with sliding-window layers also
// need one ring per live sequence (the window's positions of those layers, a fixed size): the
// pool hands those out too, adding one (grow_rings) when every ring is taken, so the number of
// rings follows the number of live sequences, however the batch limit is set.

#include <cstdint>
#include <vector>

namespace ultraserve {

struct KvSequence {
  std::vector<int32_t> blocks;  // block table: the pool blocks holding positions 0.., in order
  int length = 0;               // positions written so far
  int32_t ring = -1;            // its sliding-window ring, when the pool has rings
};

class KvBlockPool {
 public:
  // num_rings: rings made up front; 0 for a pool without rings.
  KvBlockPool(int num_blocks, int block_size, int num_rings = 0);
  virtual ~KvBlockPool() = default;

  int block_size() const { return block_size_; }
  int total_blocks() const { return total_blocks_; }
  int free_blocks() const { return static_cast<int>(free_list_.size()); }
  int used_blocks() const { return total_blocks_ - free_blocks(); }
  // Blocks a sequence needs to hold `length` positions.
  int blocks_for(int length) const { return (length + block_size_ - 1) / block_size_; }
  int total_rings() const { return total_rings_; }
  int free_rings() const { return static_cast<int>(free_rings_.size()); }

  // Grows the block table so that `length` positions fit (and gives the sequence a ring when the
  // pool has rings); false (and no change) if the pool has too few free blocks.
  bool reserve(KvSequence& seq, int length);
  // Returns all of the sequence's blocks (and its ring) to the pool and empties it.
  void release(KvSequence& seq);

 protected:
  // Called when reserve() adds a ring: the owner of the memory makes room for `total` rings.
  virtual void grow_rings(int /*total*/) {}

 private:
  int total_blocks_, block_size_, total_rings_;
  std::vector<int32_t> free_list_, free_rings_;
};

}  // namespace ultraserve
