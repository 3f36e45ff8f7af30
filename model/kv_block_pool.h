#pragma once
// The bookkeeping half of a paged KV cache: a pool of fixed-size blocks of token positions and
// the block table of each sequence. It owns no K/V memory, so the CPU cache (host floats) and
// the GPU worker (device memory) share one allocator.

#include <cstdint>
#include <vector>

namespace ultraserve {

struct KvSequence {
  std::vector<int32_t> blocks;  // block table: the pool blocks holding positions 0.., in order
  int length = 0;               // positions written so far
};

class KvBlockPool {
 public:
  KvBlockPool(int num_blocks, int block_size);

  int block_size() const { return block_size_; }
  int total_blocks() const { return total_blocks_; }
  int free_blocks() const { return static_cast<int>(free_list_.size()); }
  int used_blocks() const { return total_blocks_ - free_blocks(); }
  // Blocks a sequence needs to hold `length` positions.
  int blocks_for(int length) const { return (length + block_size_ - 1) / block_size_; }

  // Grows the block table so that `length` positions fit; false (and no change) if the pool
  // has too few free blocks.
  bool reserve(KvSequence& seq, int length);
  // Returns all of the sequence's blocks to the pool and empties it.
  void release(KvSequence& seq);

 private:
  int total_blocks_, block_size_;
  std::vector<int32_t> free_list_;
};

}  // namespace ultraserve
