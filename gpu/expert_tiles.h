#pragma once
// MXFP4 routed experts as the GPU stores them: in the order the tensor-core expert kernels
// (kernels/moe.cu) read them, so that each thread loads 16 contiguous bytes and widens them to
// its mma operands with a few integer ops. Checkpoints and the CPU engine keep model/mxfp4.h's
// row-major layout; upload_weights() rearranges the bytes, nothing is requantized.
//
// A matrix is cut into tiles of 16 rows (the A operand of mma.sync m16n8k16). For down, tile t
// holds rows 16t .. 16t + 15; for gate/up, tile t holds gate rows 8t .. 8t + 7 then up rows
// 8t .. 8t + 7, so that a thread's two accumulator rows are a gate and its up. Rows past the
// matrix and columns past a multiple of 64 are padding (code 0, scale byte 0).
//
// A tile is a run of 64-column chunks; a chunk is 32 lanes x 16 bytes of codes, then (in the
// scales buffer) 8 x 4 scale bytes. Lane l = 4g + q holds rows g and g + 8; its word j (of 4)
// is mma step j, which covers its columns base .. base + 3, base = 32 (j / 2) + 8 q + 4 (j % 2),
// so steps 0-1 lie in the chunk's first MX block and steps 2-3 in its second. The word holds
// the operand registers r = 0..3: r0 row g columns base, base+1; r1 row g+8 the same columns;
// r2 row g columns base+2, base+3; r3 row g+8 those. Register r's first value has its sign at
// bit 15 - r and its three magnitude bits (exponent, mantissa) at 9 - 3r; its second value the
// same + 16. Shifting the word left by r and by 3r lines the register's signs up at bits 15/31
// and its magnitudes at 9-11/25-27: an fp16 pair of value x 2^-14, exactly (tile_register()).
// Scale bytes of chunk c, group g: row g's blocks 2c and 2c+1, then row g+8's.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/mxfp4.h"

namespace ultraserve::gpu {

constexpr int kTileRows = 16;     // rows of an mma tile
constexpr int kTileColumns = 64;  // columns of a chunk: four mma steps, two MX blocks
constexpr int kTileChunkCodeBytes = 32 * 16;
constexpr int kTileChunkScaleBytes = 8 * 4;

enum class TileRows { consecutive, gate_up_pairs };

// Tiles of a matrix of `rows` (for gate_up_pairs: gate rows then as many up rows).
constexpr int tile_count(int rows, TileRows order) {
  const int per_tile = order == TileRows::gate_up_pairs ? kTileRows / 2 : kTileRows;
  const int outputs = order == TileRows::gate_up_pairs ? rows / 2 : rows;
  return (outputs + per_tile - 1) / per_tile;
}
constexpr int tile_chunks(int cols) { return (cols + kTileColumns - 1) / kTileColumns; }

struct Mxfp4Tiles {
  std::vector<uint8_t> codes, scales;
};

// Appends matrix m (row-major MXFP4) to `out`, tile by tile.
void append_mxfp4_tiles(const Mxfp4Matrix& m, TileRows order, Mxfp4Tiles& out);

// Bytes of codes and of scales a matrix takes as tiles.
size_t mxfp4_tile_code_bytes(int rows, int cols, TileRows order);
size_t mxfp4_tile_scale_bytes(int rows, int cols, TileRows order);

// Operand register r (0..3) of a tile word: the fp16 pair (low half first) the kernels widen,
// each half the E2M1 value times 2^-14.
constexpr uint32_t tile_register(uint32_t word, int r) {
  return r == 0 ? word & 0x8E008E00u : ((word << r) & 0x80008000u) | ((word << (3 * r)) & 0x0E000E00u);
}

}  // namespace ultraserve::gpu
