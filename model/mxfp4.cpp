#include "model/mxfp4.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace ultraserve {
namespace {

constexpr int kBlockBytes = kMxBlock / 2;

// The E2M1 magnitude code nearest to v >= 0 (a value already divided by its block's scale),
// saturating at 6 (code 7). kMidpoints[i] lies between codes i and i + 1; a tie must go to the
// even one, which is code i below an even i (so only a larger v moves up) and code i + 1 above
// an odd i (so the tie itself moves up).
uint8_t nearest_e2m1(float v) {
  static constexpr float kMidpoints[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
  uint8_t code = 0;
  for (int i = 0; i < 7; ++i) code += (i % 2 == 0) ? (v > kMidpoints[i]) : (v >= kMidpoints[i]);
  return code;
}

// OCP MX: the shared exponent is floor(log2(amax)) minus E2M1's largest exponent (2), so amax
// lands in [4, 8) and every element fits the code points' range up to saturation.
uint8_t scale_byte(float amax) {
  if (amax == 0.0f) return 0;
  int exp = 0;
  std::frexp(amax, &exp);  // amax = m * 2^exp with m in [0.5, 1): floor(log2(amax)) = exp - 1
  return static_cast<uint8_t>(std::clamp(exp - 1 - 2 + 127, 0, 254));
}

void quantize_block(const float* x, uint8_t* blocks, uint8_t* scale) {
  float amax = 0.0f;
  for (int i = 0; i < kMxBlock; ++i) {
    if (!std::isfinite(x[i])) throw std::domain_error("MXFP4 cannot represent " + std::to_string(x[i]));
    amax = std::max(amax, std::fabs(x[i]));
  }
  *scale = scale_byte(amax);
  // Dividing by a power of two is exact, so the rounding below sees the true scaled value.
  const float inverse = std::ldexp(1.0f, 127 - *scale);
  for (int j = 0; j < kBlockBytes; ++j) {
    uint8_t nibbles[2];
    for (int h = 0; h < 2; ++h) {
      const float v = x[2 * j + h];
      const uint8_t code = nearest_e2m1(std::fabs(v) * inverse);
      nibbles[h] = code | ((v < 0 && code != 0) ? 8 : 0);
    }
    blocks[j] = static_cast<uint8_t>(nibbles[0] | (nibbles[1] << 4));
  }
}

void check_shape(size_t values, int rows, int cols, size_t blocks, size_t scales) {
  if (rows < 0 || cols <= 0 || cols % kMxBlock != 0)
    throw std::invalid_argument("MXFP4 needs a positive number of columns divisible by 32, got [" +
                                std::to_string(rows) + ", " + std::to_string(cols) + "]");
  const size_t n = size_t(rows) * size_t(cols);
  if (values != n || blocks != n / 2 || scales != n / kMxBlock)
    throw std::invalid_argument("MXFP4 storage does not match [" + std::to_string(rows) + ", " +
                                std::to_string(cols) + "]");
}

}  // namespace

void quantize_mxfp4_rows(std::span<const float> values, int cols, std::span<uint8_t> blocks,
                         std::span<uint8_t> scales) {
  const int rows = cols > 0 ? static_cast<int>(values.size() / size_t(cols)) : 0;
  check_shape(values.size(), rows, cols, blocks.size(), scales.size());
  for (size_t b = 0; b < scales.size(); ++b)
    quantize_block(values.data() + b * kMxBlock, blocks.data() + b * kBlockBytes, scales.data() + b);
}

Mxfp4Matrix quantize_mxfp4(std::span<const float> values, int rows, int cols) {
  check_shape(values.size(), rows, cols, values.size() / 2, values.size() / kMxBlock);
  Mxfp4Matrix m{rows, cols, std::vector<uint8_t>(values.size() / 2), std::vector<uint8_t>(values.size() / kMxBlock)};
  quantize_mxfp4_rows(values, cols, m.blocks, m.scales);
  return m;
}

void dequantize_mxfp4(const Mxfp4View& m, std::span<float> out) {
  check_shape(out.size(), m.rows, m.cols, m.blocks.size(), m.scales.size());
  for (size_t b = 0; b < m.scales.size(); ++b) {
    const float scale = m.scales[b] == 255 ? std::numeric_limits<float>::quiet_NaN()
                                           : std::ldexp(1.0f, int(m.scales[b]) - 127);
    const uint8_t* in = m.blocks.data() + b * kBlockBytes;
    float* o = out.data() + b * kMxBlock;
    for (int j = 0; j < kBlockBytes; ++j) {
      o[2 * j] = kE2M1Values[in[j] & 0xf] * scale;
      o[2 * j + 1] = kE2M1Values[in[j] >> 4] * scale;
    }
  }
}

std::vector<float> dequantize_mxfp4(const Mxfp4Matrix& m) {
  std::vector<float> out(m.blocks.size() * 2);
  dequantize_mxfp4(view_of(m), out);
  return out;
}

}  // namespace ultraserve
