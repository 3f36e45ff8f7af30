#pragma once
// Block-scaled FP8, the format of DeepSeek-V3's and MiMo-V2's published linear weights.
//
// Element: E4M3 ("e4m3fn", torch.float8_e4m3fn): 1 sign bit, 4 exponent bits (bias 7), 3 mantissa
// bits. No infinities; S.1111.111 is NaN, so the largest magnitude is 1.75 x 2^8 = 448. Exponent 0
// holds the subnormals m x 2^-9 (m = 1..7); the smallest normal is 2^-6.
//
// Matrix: a [rows, cols] matrix is cut into blocks of block.rows x block.cols (128 x 128 in every
// published checkpoint; the last block of a row or column may be partial), each with one fp32
// scale, so that
//   w[i][j] = e4m3(codes[i][j]) * scale_inv[i / block.rows][j / block.cols]
//   codes:     uint8 [rows, cols]                                           row-major
//   scale_inv: fp32  [ceil(rows / block.rows), ceil(cols / block.cols)]     row-major
// ("scale_inv" because it undoes the division the quantizer made: codes = w / scale_inv.)
// Checkpoint tensor names are model/fp8_tensors.h's.

#include <array>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

namespace ultraserve {

inline constexpr float kE4M3Max = 448.0f;

// The value of every E4M3 code, indexed by the byte.
inline constexpr std::array<float, 256> kE4M3Values = [] {
  std::array<float, 256> t{};
  for (int c = 0; c < 256; ++c) {
    const int exponent = (c >> 3) & 15, mantissa = c & 7;
    float v;
    if (exponent == 15 && mantissa == 7) {
      v = std::numeric_limits<float>::quiet_NaN();
    } else {
      // (exponent ? 8 + mantissa : mantissa) x 2^(max(exponent, 1) - 10), by exact doublings of 2^-9.
      v = static_cast<float>(exponent ? 8 + mantissa : mantissa) / 512.0f;
      for (int e = 1; e < exponent; ++e) v *= 2.0f;
    }
    t[c] = (c & 0x80) ? -v : v;
  }
  return t;
}();

inline float e4m3_to_f32(uint8_t code) { return kE4M3Values[code]; }

// The nearest E4M3 code, ties to the even code (torch's .to(torch.float8_e4m3fn)); magnitudes
// above 448 (infinities included) saturate to +-448, as DeepSeek's and transformers' quantizers
// clamp before converting. NaN gives the NaN code. The sign is kept, so -0 gives 0x80.
uint8_t f32_to_e4m3(float value);

struct Fp8BlockSize {
  int rows = 128, cols = 128;
  bool operator==(const Fp8BlockSize&) const = default;
};

// The shape of the scale_inv tensor of a [rows, cols] matrix: ceil(rows / block.rows) x ceil(cols / block.cols).
std::array<int64_t, 2> fp8_scale_shape(int64_t rows, int64_t cols, Fp8BlockSize block);

struct Fp8Matrix {
  int rows = 0, cols = 0;
  Fp8BlockSize block;
  std::vector<uint8_t> codes;    // rows * cols
  std::vector<float> scale_inv;  // fp8_scale_shape(rows, cols, block), row-major
};

// Stored FP8 bytes and scales, not owned.
struct Fp8View {
  int rows = 0, cols = 0;
  Fp8BlockSize block;
  std::span<const uint8_t> codes;
  std::span<const float> scale_inv;
};
inline Fp8View view_of(const Fp8Matrix& m) { return {m.rows, m.cols, m.block, m.codes, m.scale_inv}; }

// Quantizes a row-major fp32 matrix: per block, scale_inv = amax / 448 (so the largest magnitude
// maps to 448) and codes = f32_to_e4m3(w / scale_inv); an all-zero block gets scale_inv 1.
// Throws std::invalid_argument when the shapes disagree or a block dimension is not positive,
// std::domain_error on NaN or infinity (a scale cannot be chosen for them).
Fp8Matrix quantize_fp8(std::span<const float> values, int rows, int cols, Fp8BlockSize block = {});

// The same on caller-owned storage, for whole block rows: values.size() / cols rows (a multiple
// of block.rows, except that the matrix's last block row may be short), with their codes and their
// ceil(rows / block.rows) x ceil(cols / block.cols) scales. Lets large matrices be quantized on
// several threads, one range of block rows each.
void quantize_fp8_block_rows(std::span<const float> values, int cols, Fp8BlockSize block, std::span<uint8_t> codes,
                             std::span<float> scale_inv);

// The fp32 matrix the quantized one stands for (out: rows * cols). NaN codes give NaN.
void dequantize_fp8(const Fp8View& m, std::span<float> out);
std::vector<float> dequantize_fp8(const Fp8Matrix& m);

}  // namespace ultraserve
