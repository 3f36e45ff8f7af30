// Row-major MXFP4 -> the tile order of gpu/expert_tiles.h.

#include "gpu/expert_tiles.h"

#include <stdexcept>

namespace ultraserve::gpu {
namespace {

// Tile row i (0..15) of tile t: its row of m, or -1 for padding.
int source_row(const Mxfp4Matrix& m, TileRows order, int t, int i) {
  if (order == TileRows::consecutive) {
    const int row = kTileRows * t + i;
    return row < m.rows ? row : -1;
  }
  const int outputs = m.rows / 2, half = kTileRows / 2;
  const int output = half * t + i % half;
  return output < outputs ? output + (i < half ? 0 : outputs) : -1;
}

uint8_t nibble(const Mxfp4Matrix& m, int row, int col) {
  if (row < 0 || col >= m.cols) return 0;
  const uint8_t byte = m.blocks[static_cast<size_t>(row) * m.cols / 2 + col / 2];
  return col % 2 ? byte >> 4 : byte & 0xf;
}

uint8_t scale(const Mxfp4Matrix& m, int row, int block) {
  if (row < 0 || block * kMxBlock >= m.cols) return 0;
  return m.scales[static_cast<size_t>(row) * (m.cols / kMxBlock) + block];
}

// Register r's two values (rows g or g + 8, columns base + 2 (r / 2) and + 1) into `word`.
uint32_t place(uint32_t word, int r, uint8_t first, uint8_t second) {
  const auto bits = [r](uint8_t code) { return uint32_t(code & 7) << (9 - 3 * r) | uint32_t(code >> 3) << (15 - r); };
  return word | bits(first) | bits(second) << 16;
}

}  // namespace

void append_mxfp4_tiles(const Mxfp4Matrix& m, TileRows order, Mxfp4Tiles& out) {
  if (m.cols % kMxBlock || (order == TileRows::gate_up_pairs && m.rows % 2))
    throw std::invalid_argument("append_mxfp4_tiles: columns must be a multiple of 32, gate/up rows even");
  const int tiles = tile_count(m.rows, order), chunks = tile_chunks(m.cols);
  for (int t = 0; t < tiles; ++t)
    for (int c = 0; c < chunks; ++c) {
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane / 4, q = lane % 4;
        const int rows[2] = {source_row(m, order, t, g), source_row(m, order, t, g + 8)};
        for (int j = 0; j < 4; ++j) {
          const int base = kTileColumns * c + 32 * (j / 2) + 8 * q + 4 * (j % 2);
          uint32_t word = 0;
          for (int r = 0; r < 4; ++r) {
            const int row = rows[r % 2], col = base + 2 * (r / 2);
            word = place(word, r, nibble(m, row, col), nibble(m, row, col + 1));
          }
          for (int b = 0; b < 4; ++b) out.codes.push_back(static_cast<uint8_t>(word >> (8 * b)));
        }
      }
      for (int g = 0; g < 8; ++g)
        for (const int i : {g, g + 8})
          for (const int block : {2 * c, 2 * c + 1}) out.scales.push_back(scale(m, source_row(m, order, t, i), block));
    }
}

size_t mxfp4_tile_code_bytes(int rows, int cols, TileRows order) {
  return size_t(tile_count(rows, order)) * tile_chunks(cols) * kTileChunkCodeBytes;
}

size_t mxfp4_tile_scale_bytes(int rows, int cols, TileRows order) {
  return size_t(tile_count(rows, order)) * tile_chunks(cols) * kTileChunkScaleBytes;
}

}  // namespace ultraserve::gpu
