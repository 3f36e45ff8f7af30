#pragma once
// How far a quantized matrix is from the values it came from: relative RMS error
// sqrt(sum (x - q)^2 / sum x^2) and the largest |x - q|, accumulated over any number of matrices.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>

namespace ultraserve {

struct QuantizationError {
  double sum_squared_error = 0, sum_squared_value = 0, max_abs_error = 0;
  uint64_t values = 0;
  int matrices = 0;

  void add_matrix(std::span<const float> original, std::span<const float> quantized) {
    for (size_t i = 0; i < original.size(); ++i) {
      const double e = double(original[i]) - double(quantized[i]);
      sum_squared_error += e * e;
      sum_squared_value += double(original[i]) * double(original[i]);
      max_abs_error = std::max(max_abs_error, std::fabs(e));
    }
    values += original.size();
    ++matrices;
  }
  void merge(const QuantizationError& o) {
    sum_squared_error += o.sum_squared_error;
    sum_squared_value += o.sum_squared_value;
    max_abs_error = std::max(max_abs_error, o.max_abs_error);
    values += o.values;
    matrices += o.matrices;
  }
  double relative_rms() const { return sum_squared_value > 0 ? std::sqrt(sum_squared_error / sum_squared_value) : 0; }
};

}  // namespace ultraserve
