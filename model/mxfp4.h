#pragma once
// MXFP4 (OCP Microscaling, the format of gpt-oss and of the seeds' FP4 experts): a matrix row
// is cut into blocks of 32 values; each block stores one shared E8M0 scale byte (2^(s-127))
// and 32 E2M1 values (sign, 2 exponent bits, 1 mantissa bit: 0, .5, 1, 1.5, 2, 3, 4, 6),
// two per byte, the even element in the low nibble.
//
// Layout of a [rows, cols] matrix (cols a multiple of 32), as stored in checkpoints and on
// the GPU alike:
//   blocks: uint8 [rows, cols / 2]    row-major, byte j holds elements 2j (low) and 2j+1 (high)
//   scales: uint8 [rows, cols / 32]   row-major, one E8M0 exponent per block of 32
// Checkpoint tensor names: "<weight name without .weight>.blocks" and ".scales", e.g.
//   model.layers.3.mlp.experts.17.gate_proj.blocks / model.layers.3.mlp.experts.17.gate_proj.scales

#include <cstdint>
#include <span>
#include <vector>

namespace ultraserve {

inline constexpr int kMxBlock = 32;

// The 16 E2M1 code points, indexed by nibble (bit 3 is the sign).
inline constexpr float kE2M1Values[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                                          -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

struct Mxfp4Matrix {
  int rows = 0, cols = 0;
  std::vector<uint8_t> blocks;  // rows * cols / 2
  std::vector<uint8_t> scales;  // rows * cols / 32
};

// Quantizes a row-major fp32 matrix: per block, the scale is 2^(floor(log2(amax)) - 2) so the
// largest magnitude maps into [4, 8) and rounds to at most 6; values round to the nearest
// E2M1 code point (ties to the even code), saturating at +-6. An all-zero block gets scale 2^-127.
// The scale byte (exponent + 127) is clamped to [0, 254]. Throws std::invalid_argument unless
// cols is a positive multiple of 32 and values.size() == rows * cols; std::domain_error on
// NaN or infinity (see quantize_mxfp4_rows).
Mxfp4Matrix quantize_mxfp4(std::span<const float> values, int rows, int cols);

// The fp32 matrix the quantized one stands for.
std::vector<float> dequantize_mxfp4(const Mxfp4Matrix& m);

// The same two operations on caller-owned storage, so large matrices can be quantized in row
// ranges on several threads, and dequantized straight from a checkpoint's mmap'ed bytes.
//
// Quantizes values.size() / cols whole rows into blocks (cols / 2 bytes a row) and scales
// (cols / 32 a row). Throws std::domain_error on a NaN or infinite value, which MXFP4 has no
// code for. A value that rounds to zero is stored as +0 (code 0) whatever its sign, so equal
// matrices give equal bytes.
void quantize_mxfp4_rows(std::span<const float> values, int cols, std::span<uint8_t> blocks,
                         std::span<uint8_t> scales);

// Stored MXFP4 bytes, not owned. Scale byte 255 is E8M0's NaN; it dequantizes to NaN.
struct Mxfp4View {
  int rows = 0, cols = 0;
  std::span<const uint8_t> blocks;  // rows * cols / 2
  std::span<const uint8_t> scales;  // rows * cols / 32
};
inline Mxfp4View view_of(const Mxfp4Matrix& m) { return {m.rows, m.cols, m.blocks, m.scales}; }
void dequantize_mxfp4(const Mxfp4View& m, std::span<float> out);  // out: rows * cols

}  // namespace ultraserve
