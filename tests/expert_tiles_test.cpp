// The MXFP4 tile order of gpu/expert_tiles.h, read back the way the tensor-core kernels read it:
// every operand register, widened as fp16, must be the E2M1 value of the row and column the
// mma fragment layout gives that register, and every scale byte that of its row and block.

#include "gpu/expert_tiles.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

namespace ultraserve::gpu {
namespace {

float half_to_float(uint16_t h) {
  const int sign = h >> 15, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  const float magnitude = exponent ? std::ldexp(1.0f + mantissa / 1024.0f, exponent - 15) : std::ldexp(mantissa / 1024.0f, -14);
  return sign ? -magnitude : magnitude;
}

Mxfp4Matrix random_matrix(int rows, int cols, uint32_t seed) {
  std::mt19937 rng(seed);
  Mxfp4Matrix m{rows, cols, std::vector<uint8_t>(size_t(rows) * cols / 2), std::vector<uint8_t>(size_t(rows) * cols / 32)};
  for (uint8_t& b : m.blocks) b = static_cast<uint8_t>(rng());
  for (uint8_t& s : m.scales) s = static_cast<uint8_t>(1 + rng() % 254);
  return m;
}

// The value the row-major matrix holds at (row, col): 0 past its edges, as the padding is.
float value(const Mxfp4Matrix& m, int row, int col) {
  if (row < 0 || col >= m.cols) return 0.0f;
  const uint8_t byte = m.blocks[size_t(row) * m.cols / 2 + col / 2];
  return kE2M1Values[col % 2 ? byte >> 4 : byte & 0xf];
}

// Row of m that tile row i (0..15) of tile t stands for, -1 for padding.
int row_of(const Mxfp4Matrix& m, TileRows order, int t, int i) {
  if (order == TileRows::consecutive) return kTileRows * t + i < m.rows ? kTileRows * t + i : -1;
  const int outputs = m.rows / 2, out = 8 * t + i % 8;
  return out < outputs ? out + (i < 8 ? 0 : outputs) : -1;
}

void check_tiles(const Mxfp4Matrix& m, TileRows order) {
  Mxfp4Tiles tiles;
  append_mxfp4_tiles(m, order, tiles);
  const int count = tile_count(m.rows, order), chunks = tile_chunks(m.cols);
  ASSERT_EQ(tiles.codes.size(), mxfp4_tile_code_bytes(m.rows, m.cols, order));
  ASSERT_EQ(tiles.scales.size(), mxfp4_tile_scale_bytes(m.rows, m.cols, order));
  int checked = 0;
  for (int t = 0; t < count; ++t)
    for (int c = 0; c < chunks; ++c) {
      const size_t chunk = size_t(t) * chunks + c;
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane / 4, q = lane % 4;
        for (int j = 0; j < 4; ++j) {
          uint32_t word;
          std::memcpy(&word, &tiles.codes[chunk * kTileChunkCodeBytes + lane * 16 + j * 4], 4);
          const int base = kTileColumns * c + 32 * (j / 2) + 8 * q + 4 * (j % 2);
          for (int r = 0; r < 4; ++r) {  // r0: row g, cols base, +1; r1: row g+8; r2, r3: cols base+2, +3
            const uint32_t pair = tile_register(word, r);
            const int row = row_of(m, order, t, r % 2 ? g + 8 : g), col = base + 2 * (r / 2);
            EXPECT_EQ(std::ldexp(half_to_float(pair & 0xffff), 14), value(m, row, col)) << t << " " << c << " " << lane;
            EXPECT_EQ(std::ldexp(half_to_float(pair >> 16), 14), value(m, row, col + 1)) << t << " " << c << " " << lane;
            checked += 2;
          }
        }
      }
      for (int g = 0; g < 8; ++g)
        for (int k = 0; k < 4; ++k) {
          const int row = row_of(m, order, t, k < 2 ? g : g + 8), block = 2 * c + k % 2;
          const uint8_t want = row < 0 || block * 32 >= m.cols ? 0 : m.scales[size_t(row) * (m.cols / 32) + block];
          EXPECT_EQ(tiles.scales[chunk * kTileChunkScaleBytes + 4 * g + k], want) << t << " " << c << " " << g;
        }
    }
  EXPECT_EQ(checked, count * chunks * 16 * kTileColumns);
}

TEST(ExpertTiles, DownTilesHoldEachRowAndScaleWhereTheKernelsReadThem) {
  check_tiles(random_matrix(48, 128, 1), TileRows::consecutive);
  check_tiles(random_matrix(40, 96, 2), TileRows::consecutive);  // a partial tile and a half chunk, padded
}

TEST(ExpertTiles, GateUpTilesPairEachGateRowWithItsUpRow) {
  check_tiles(random_matrix(32, 64, 3), TileRows::gate_up_pairs);
  check_tiles(random_matrix(2 * 12, 160, 4), TileRows::gate_up_pairs);  // 12 outputs: the second tile half padding
}

TEST(ExpertTiles, RefusesColumnsOffTheBlocksAndUnpairedGateUpRows) {
  Mxfp4Tiles tiles;
  const Mxfp4Matrix odd_rows = random_matrix(15, 64, 5);
  EXPECT_THROW(append_mxfp4_tiles(odd_rows, TileRows::gate_up_pairs, tiles), std::invalid_argument);
  const Mxfp4Matrix odd_cols{16, 48, std::vector<uint8_t>(16 * 24), std::vector<uint8_t>(16)};
  EXPECT_THROW(append_mxfp4_tiles(odd_cols, TileRows::consecutive, tiles), std::invalid_argument);
}

}  // namespace
}  // namespace ultraserve::gpu
