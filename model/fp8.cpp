#include "model/fp8.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace ultraserve {
namespace {

constexpr float kMinNormal = 0.015625f;  // 2^-6

std::string shape_text(size_t rows, size_t cols) {
  return "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
}

void check_block(Fp8BlockSize block) {
  if (block.rows <= 0 || block.cols <= 0)
    throw std::invalid_argument("FP8 block size " + shape_text(block.rows, block.cols) + " must be positive");
}

}  // namespace

uint8_t f32_to_e4m3(float value) {
  const uint8_t sign = std::signbit(value) ? 0x80 : 0x00;
  const float a = std::fabs(value);
  if (std::isnan(a)) return sign | 0x7f;
  if (a >= kE4M3Max) return sign | 0x7e;
  // The binade's exponent e (a in [2^e, 2^(e+1))); below 2^-6 the subnormals continue the
  // steps of 2^-9 that binade -6 has, so they are handled as e = -6 with a leading 0.
  int exp = 0;
  std::frexp(a, &exp);
  const int e = a < kMinNormal ? -6 : exp - 1;
  // a in steps of 2^(e-3): [8, 16) for a normal, [0, 8) for a subnormal. Scaling by a power of
  // two is exact, so nearbyint (ties to even, the default rounding mode) rounds the true value;
  // an even step count is an even code. A carry to 16 lands on the next binade's first code.
  const int steps = static_cast<int>(std::nearbyint(std::ldexp(a, 3 - e)));
  return static_cast<uint8_t>(sign | (((e + 6) << 3) + steps));
}

std::array<int64_t, 2> fp8_scale_shape(int64_t rows, int64_t cols, Fp8BlockSize block) {
  check_block(block);
  return {(rows + block.rows - 1) / block.rows, (cols + block.cols - 1) / block.cols};
}

void quantize_fp8_block_rows(std::span<const float> values, int cols, Fp8BlockSize block, std::span<uint8_t> codes,
                             std::span<float> scale_inv) {
  check_block(block);
  if (cols <= 0 || values.size() % size_t(cols) != 0)
    throw std::invalid_argument("FP8: " + std::to_string(values.size()) + " values are not rows of " +
                                std::to_string(cols));
  const int rows = static_cast<int>(values.size() / size_t(cols));
  const auto [scale_rows, scale_cols] = fp8_scale_shape(rows, cols, block);
  if (codes.size() != values.size() || scale_inv.size() != size_t(scale_rows * scale_cols))
    throw std::invalid_argument("FP8 storage does not match " + shape_text(rows, cols));
  for (int br = 0; br < scale_rows; ++br) {
    const int r0 = br * block.rows, r1 = std::min(rows, r0 + block.rows);
    for (int bc = 0; bc < scale_cols; ++bc) {
      const int c0 = bc * block.cols, c1 = std::min(cols, c0 + block.cols);
      float amax = 0.0f;
      for (int i = r0; i < r1; ++i)
        for (int j = c0; j < c1; ++j) {
          const float v = values[size_t(i) * cols + j];
          if (!std::isfinite(v)) throw std::domain_error("FP8 cannot scale " + std::to_string(v));
          amax = std::max(amax, std::fabs(v));
        }
      // An all-zero block (or one so small that amax / 448 underflows) gets scale 1: its
      // values round to 0 either way, and a zero scale would make the division meaningless.
      const float scale = amax / kE4M3Max > 0.0f ? amax / kE4M3Max : 1.0f;
      scale_inv[size_t(br) * scale_cols + bc] = scale;
      for (int i = r0; i < r1; ++i)
        for (int j = c0; j < c1; ++j) codes[size_t(i) * cols + j] = f32_to_e4m3(values[size_t(i) * cols + j] / scale);
    }
  }
}

Fp8Matrix quantize_fp8(std::span<const float> values, int rows, int cols, Fp8BlockSize block) {
  if (rows < 0 || cols <= 0 || values.size() != size_t(rows) * size_t(cols))
    throw std::invalid_argument("FP8: " + std::to_string(values.size()) + " values as " + shape_text(rows, cols));
  const auto [scale_rows, scale_cols] = fp8_scale_shape(rows, cols, block);
  Fp8Matrix m{rows, cols, block, std::vector<uint8_t>(values.size()),
              std::vector<float>(size_t(scale_rows * scale_cols))};
  quantize_fp8_block_rows(values, cols, block, m.codes, m.scale_inv);
  return m;
}

void dequantize_fp8(const Fp8View& m, std::span<float> out) {
  const auto [scale_rows, scale_cols] = fp8_scale_shape(m.rows, m.cols, m.block);
  const size_t n = size_t(m.rows) * size_t(m.cols);
  if (m.rows < 0 || m.cols < 0 || out.size() != n || m.codes.size() != n ||
      m.scale_inv.size() != size_t(scale_rows * scale_cols))
    throw std::invalid_argument("FP8 storage does not match " + shape_text(m.rows, m.cols));
  for (int i = 0; i < m.rows; ++i) {
    const float* scales = m.scale_inv.data() + size_t(i / m.block.rows) * scale_cols;
    const uint8_t* codes = m.codes.data() + size_t(i) * m.cols;
    float* o = out.data() + size_t(i) * m.cols;
    for (int j0 = 0, b = 0; j0 < m.cols; j0 += m.block.cols, ++b)
      for (int j = j0; j < std::min(m.cols, j0 + m.block.cols); ++j) o[j] = kE4M3Values[codes[j]] * scales[b];
  }
}

std::vector<float> dequantize_fp8(const Fp8Matrix& m) {
  std::vector<float> out(m.codes.size());
  dequantize_fp8(view_of(m), out);
  return out;
}

}  // namespace ultraserve
