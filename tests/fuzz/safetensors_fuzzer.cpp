// Fuzz target: the safetensors reader (model/safetensors.h, SafetensorsFile::open). The input
// is written to a file and opened the way a checkpoint is: length prefix, JSON header, data.
// Open must either throw ModelError or give tensors whose views lie inside the file and
// match shape x dtype; the float tensors are then converted as the weight loader does.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/dtype.h"
#include "model/error.h"
#include "model/safetensors.h"
#include "tests/fuzz/fuzz_support.h"

using namespace ultraserve;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static fuzz::ScratchFile file("model.safetensors");
  const auto& path = file.write(data, size);
  std::unique_ptr<SafetensorsFile> f;
  try {
    f = SafetensorsFile::open(path);
  } catch (const ModelError&) {
    return 0;
  }
  std::vector<float> out;
  size_t total = 0;
  for (const auto& [name, t] : f->tensors()) {
    FUZZ_CHECK(name == t.name);
    FUZZ_CHECK(t.numel() >= 0);
    FUZZ_CHECK(static_cast<size_t>(t.numel()) * dtype_size(t.dtype) == t.bytes.size());
    total += t.bytes.size();
    FUZZ_CHECK(total <= size);  // views never overlap, so they fit in the file together
    (void)t.shape_string();
    if (t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16) {
      out.resize(static_cast<size_t>(t.numel()));
      convert_to_f32(t.dtype, t.bytes.data(), out.size(), out.data());
    } else if (!t.bytes.empty()) {
      // Touch the first and last byte: both must be mapped.
      volatile std::byte b = t.bytes.front();
      b = t.bytes.back();
      (void)b;
    }
  }
  return 0;
}
