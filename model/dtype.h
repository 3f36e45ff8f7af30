#pragma once
// Element types of checkpoint tensors and their conversion to the fp32 we compute in.

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace ultraserve {

// F8_E4M3 is FP8 "e4m3fn" (model/fp8.h), one byte; checkpoints pair it with a block scale tensor.
enum class DType { F32, F16, BF16, F8_E4M3, I32, I64, U8 };

std::optional<DType> dtype_from_name(std::string_view safetensors_name);
std::string_view dtype_name(DType t);
size_t dtype_size(DType t);

inline float bf16_to_f32(uint16_t h) { return std::bit_cast<float>(uint32_t{h} << 16); }

// Round to nearest even, as torch does; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float f16_to_f32(uint16_t h);

// Converts `count` elements of a float tensor (F32, F16, BF16, or F8_E4M3 codes, unscaled) to fp32.
void convert_to_f32(DType t, const std::byte* src, size_t count, float* dst);

}  // namespace ultraserve
