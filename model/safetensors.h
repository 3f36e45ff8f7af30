#pragma once
// Reading and writing the safetensors format: an 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, then the raw bytes.
// Files are mmap'ed; tensors are views into the mapping. Every header is validated against
// the file before any byte is trusted (offsets inside the buffer, sizes matching shape x dtype,
// no overlaps), because a truncated or lying header must give an error, never a crash.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/dtype.h"

namespace ultraserve {

struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::span<const std::byte> bytes;
  const std::string* file;  // for error messages

  int64_t numel() const;
  std::string shape_string() const;
};

class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::string& path() const { return path_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::map<std::string, TensorView> tensors_;
};

// A checkpoint directory's weights: model.safetensors, or the shards that
// model.safetensors.index.json lists. Lookups span all shards.
class CheckpointTensors {
 public:
  static CheckpointTensors open(const std::filesystem::path& dir);

  const TensorView* find(const std::string& name) const;
  std::vector<std::string> names() const;
  // A description of where tensors come from, for error messages ("dir/model.safetensors").
  const std::string& source() const { return source_; }
  // The files themselves: model.safetensors alone, or the shards in index order.
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> index_;
  std::string source_;
};

// Lets the kernel drop the mapped pages that lie wholly inside the tensor's bytes; they are
// read from the file again if touched. For streaming a checkpoint far larger than memory
// through once (quantize), so the process does not keep every page it has read resident.
void drop_cached_pages(const TensorView& tensor);

// Writes one safetensors file, laid out in the order given. The bytes are produced tensor by
// tensor through `fill`, so a checkpoint far larger than memory can be streamed to disk.
struct TensorSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  size_t nbytes() const;
};
using TensorFiller = std::function<void(const TensorSpec&, std::span<std::byte>)>;
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorSpec>& tensors,
                       const TensorFiller& fill, const std::map<std::string, std::string>& metadata = {});

}  // namespace ultraserve
