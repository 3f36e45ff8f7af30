// The MXFP4 format (model/mxfp4.h) by hand-worked vectors: OCP MX scale choice, E2M1
// rounding with ties to the even code, saturation, zero and tiny blocks, the nibble order, and
// the error it gives on Gaussian weights.

#include <cmath>
#include <random>

#include "model/mxfp4.h"
#include "model/quantized_writer.h"
#include "model/quantization_error.h"
#include "tests/test_support.h"

namespace ultraserve {
namespace {

// One 32-value block: `head` then zeros.
std::vector<float> block(std::vector<float> head) {
  head.resize(kMxBlock, 0.0f);
  return head;
}

uint8_t nibble(const Mxfp4Matrix& m, size_t i) { return (m.blocks[i / 2] >> (4 * (i % 2))) & 0xf; }

std::vector<float> gaussian(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

TEST(Mxfp4, EveryCodePointRoundTripsAtAnyScale) {
  for (int k : {-120, -10, 0, 1, 20, 120}) {
    SCOPED_TRACE("scale 2^" + std::to_string(k));
    std::vector<float> values;
    for (int rep = 0; rep < 2; ++rep)
      for (float v : kE2M1Values) values.push_back(std::ldexp(v, k));
    const Mxfp4Matrix q = quantize_mxfp4(values, 1, kMxBlock);
    ASSERT_EQ(q.scales.size(), 1u);
    EXPECT_EQ(q.scales[0], 127 + k);  // amax 6 * 2^k: floor(log2) - 2 = k
    for (size_t i = 0; i < values.size(); ++i)
      EXPECT_EQ(nibble(q, i), i % 16 == 8 ? 0 : i % 16) << i;  // -0 is stored as +0
    EXPECT_EQ(dequantize_mxfp4(q), values);
  }
}

TEST(Mxfp4, EvenElementInTheLowNibble) {
  const Mxfp4Matrix q = quantize_mxfp4(block({1.0f, -6.0f, 0.5f}), 1, kMxBlock);
  EXPECT_EQ(q.blocks[0], 0xf2);  // element 0: 1.0 = code 2 (low); element 1: -6 = code 15 (high)
  EXPECT_EQ(q.blocks[1], 0x01);
}

TEST(Mxfp4, TiesRoundToTheEvenCode) {
  // amax 6 keeps the scale at 2^0, so these are the midpoints between code points.
  const std::vector<float> ties = {6.0f, 0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f,
                                   -0.25f, -0.75f, -1.25f, -1.75f, -2.5f, -3.5f, -5.0f};
  const std::vector<float> even = {6.0f, 0.0f, 1.0f, 1.0f, 2.0f, 2.0f, 4.0f, 4.0f,
                                   0.0f, -1.0f, -1.0f, -2.0f, -2.0f, -4.0f, -4.0f};
  EXPECT_EQ(dequantize_mxfp4(quantize_mxfp4(block(ties), 1, kMxBlock)), block(even));
  // Just past a midpoint rounds to the nearer code, even when that code is odd.
  const std::vector<float> past = {6.0f, 0.2501f, 1.2501f, 2.5001f, 4.9999f, 5.0001f, 0.7499f};
  const std::vector<float> nearest = {6.0f, 0.5f, 1.5f, 3.0f, 4.0f, 6.0f, 0.5f};
  EXPECT_EQ(dequantize_mxfp4(quantize_mxfp4(block(past), 1, kMxBlock)), block(nearest));
}

TEST(Mxfp4, LargestMagnitudeSaturatesAtSix) {
  // amax 7.9: floor(log2(7.9)) - 2 = 0, so the scale stays 1 and 7.9 and 7 clip to 6.
  Mxfp4Matrix q = quantize_mxfp4(block({7.9f, -7.0f, 1.0f}), 1, kMxBlock);
  EXPECT_EQ(q.scales[0], 127);
  EXPECT_EQ(dequantize_mxfp4(q), block({6.0f, -6.0f, 1.0f}));
  // amax 8 moves to the next scale, where it is exact.
  q = quantize_mxfp4(block({8.0f, 1.0f, 0.9f}), 1, kMxBlock);
  EXPECT_EQ(q.scales[0], 128);
  EXPECT_EQ(dequantize_mxfp4(q), block({8.0f, 1.0f, 1.0f}));
}

TEST(Mxfp4, ZeroBlockGetsScaleByteZero) {
  std::vector<float> values(2 * kMxBlock, 0.0f);
  values[5] = -0.0f;
  values[kMxBlock + 3] = 3.0f;  // the second block: amax 3, floor(log2(3)) - 2 = -1
  const Mxfp4Matrix q = quantize_mxfp4(values, 1, 2 * kMxBlock);
  EXPECT_EQ(q.scales, (std::vector<uint8_t>{0, 126}));
  EXPECT_EQ(std::vector<uint8_t>(q.blocks.begin(), q.blocks.begin() + 16), std::vector<uint8_t>(16, 0));
  EXPECT_EQ(dequantize_mxfp4(q), values);
}

TEST(Mxfp4, TinyValuesUseTheSmallestScaleAndFlushBelowIt) {
  // amax 2^-125: exponent -127 is the smallest E8M0 scale (byte 0); 2^-125 = 4 * 2^-127 is exact.
  Mxfp4Matrix q = quantize_mxfp4(block({std::ldexp(1.0f, -125), std::ldexp(1.0f, -128)}), 1, kMxBlock);
  EXPECT_EQ(q.scales[0], 0);
  EXPECT_EQ(dequantize_mxfp4(q), block({std::ldexp(1.0f, -125), std::ldexp(1.0f, -128)}));
  // Below that the scale clamps at byte 0, and values under a quarter of it round to zero;
  // subnormal inputs are no special case.
  q = quantize_mxfp4(block({std::ldexp(1.0f, -130), -std::ldexp(3.0f, -128), 1e-40f}), 1, kMxBlock);
  EXPECT_EQ(q.scales[0], 0);
  EXPECT_EQ(dequantize_mxfp4(q), block({0.0f, -std::ldexp(1.5f, -127), 0.0f}));
  // The largest floats fit too: floor(log2(3e38)) - 2 = 125.
  q = quantize_mxfp4(block({3e38f}), 1, kMxBlock);
  EXPECT_EQ(q.scales[0], 127 + 125);
  EXPECT_EQ(dequantize_mxfp4(q)[0], std::ldexp(1.0f, 127) * 1.5f);
}

TEST(Mxfp4, RefusesWhatItCannotRepresent) {
  EXPECT_THROW(quantize_mxfp4(block({NAN}), 1, kMxBlock), std::domain_error);
  EXPECT_THROW(quantize_mxfp4(block({1.0f, -INFINITY}), 1, kMxBlock), std::domain_error);
  EXPECT_THROW(quantize_mxfp4(std::vector<float>(48), 1, 48), std::invalid_argument);
  EXPECT_THROW(quantize_mxfp4(std::vector<float>(64), 3, 32), std::invalid_argument);
  // E8M0's NaN scale dequantizes to NaN.
  Mxfp4Matrix q = quantize_mxfp4(block({1.0f}), 1, kMxBlock);
  q.scales[0] = 255;
  EXPECT_TRUE(std::isnan(dequantize_mxfp4(q)[0]));
}

TEST(Mxfp4, GaussianWeightsLoseAboutOneNinthRms) {
  const int rows = 256, cols = 1024;
  const std::vector<float> values = gaussian(size_t(rows) * cols, 7);
  const Mxfp4Matrix q = quantize_mxfp4(values, rows, cols);
  const std::vector<float> back = dequantize_mxfp4(q);
  QuantizationError e;
  e.add_matrix(values, back);
  // Measured: relative RMS error 0.1148, max abs error 0.994 (a block whose amax is just under
  // 4 gets scale 0.5, where 3.99 saturates to 3).
  EXPECT_GT(e.relative_rms(), 0.10);
  EXPECT_LT(e.relative_rms(), 0.13);
  // Per element: within half the widest step (scale) where it fits, within 2 * scale where it
  // saturates (amax < 8 * scale).
  for (size_t i = 0; i < values.size(); ++i) {
    const float scale = std::ldexp(1.0f, int(q.scales[i / kMxBlock]) - 127);
    ASSERT_LE(std::fabs(values[i] - back[i]), (std::fabs(values[i]) <= 6 * scale ? 1 : 2) * scale) << i;
  }
}

TEST(Mxfp4, ThreadedQuantizationAndRequantizationGiveTheSameBytes) {
  const int rows = 37, cols = 96;
  const std::vector<float> values = gaussian(size_t(rows) * cols, 3);
  const Mxfp4Matrix q = quantize_mxfp4(values, rows, cols);
  ThreadPool pool(3);
  const Mxfp4Matrix threaded = quantize_mxfp4(pool, values, rows, cols);
  EXPECT_EQ(threaded.blocks, q.blocks);
  EXPECT_EQ(threaded.scales, q.scales);
  // Quantizing the dequantized matrix again is lossless: a GPU loader may take the fp32
  // experts of an MXFP4 checkpoint and get the stored bytes back.
  const Mxfp4Matrix again = quantize_mxfp4(dequantize_mxfp4(q), rows, cols);
  EXPECT_EQ(again.blocks, q.blocks);
  EXPECT_EQ(again.scales, q.scales);
  EXPECT_THROW(quantize_mxfp4(pool, block({NAN}), 1, kMxBlock), std::domain_error);
}

}  // namespace
}  // namespace ultraserve
