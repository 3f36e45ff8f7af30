#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

#include <simdjson.h>

#include "model/error.h"
#include "model/model_config.h"

namespace ultraserve {
namespace {

// A header larger than this is not a real checkpoint (HF's reader uses the same bound).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

[[noreturn]] void fail(const std::string& file, const std::string& problem) {
  throw ModelError(file + ": " + problem);
}

}  // namespace

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorView::shape_string() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

size_t TensorSpec::nbytes() const {
  size_t n = dtype_size(dtype);
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile);
  f->path_ = path.string();
  const std::string& name = f->path_;

  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(name, "cannot open (missing or unreadable)");
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(name, "not a regular file");
  }
  size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    fail(name, "truncated: " + std::to_string(size) + " bytes, too short for a safetensors header");
  }
  void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) fail(name, "mmap failed");
  f->map_ = map;
  f->map_size_ = size;
  const auto* base = static_cast<const std::byte*>(map);

  uint64_t header_len = 0;
  std::memcpy(&header_len, base, 8);  // little-endian on every host we run on
  if (header_len > kMaxHeaderBytes) fail(name, "header length " + std::to_string(header_len) + " is implausible");
  if (8 + header_len > size)
    fail(name, "truncated: header claims " + std::to_string(header_len) + " bytes but the file has " +
                   std::to_string(size));
  const size_t data_start = 8 + header_len;
  const size_t data_size = size - data_start;

  simdjson::dom::parser parser;
  simdjson::padded_string header(reinterpret_cast<const char*>(base + 8), header_len);
  simdjson::dom::object root;
  if (auto err = parser.parse(header).get(root))
    fail(name, std::string("malformed header JSON (") + simdjson::error_message(err) + ")");

  struct Span { size_t begin, end; const std::string* name; };
  std::vector<Span> spans;
  for (auto [key, value] : root) {
    if (key == "__metadata__") continue;
    std::string tname(key);
    simdjson::dom::object t;
    if (value.get(t)) fail(name, "tensor '" + tname + "': entry is not an object");
    std::string_view dtype_str;
    if (t["dtype"].get(dtype_str)) fail(name, "tensor '" + tname + "': missing dtype");
    auto dtype = dtype_from_name(dtype_str);
    if (!dtype) fail(name, "tensor '" + tname + "': unsupported dtype '" + std::string(dtype_str) + "'");
    simdjson::dom::array shape_arr, off_arr;
    if (t["shape"].get(shape_arr)) fail(name, "tensor '" + tname + "': missing shape");
    if (t["data_offsets"].get(off_arr) || off_arr.size() != 2)
      fail(name, "tensor '" + tname + "': data_offsets must be [begin, end]");
    TensorView view{tname, *dtype, {}, {}, &f->path_};
    size_t expected = dtype_size(*dtype);
    for (auto d : shape_arr) {
      int64_t dim;
      if (d.get(dim) || dim < 0) fail(name, "tensor '" + tname + "': shape must hold non-negative integers");
      if (dim > 0 && expected > (size_t{1} << 62) / static_cast<size_t>(dim))
        fail(name, "tensor '" + tname + "': shape overflows");
      expected *= static_cast<size_t>(dim);
      view.shape.push_back(dim);
    }
    uint64_t b, e;
    if (off_arr.at(0).get(b) || off_arr.at(1).get(e)) fail(name, "tensor '" + tname + "': bad data_offsets");
    if (b > e || e > data_size)
      fail(name, "tensor '" + tname + "': data_offsets [" + std::to_string(b) + ", " + std::to_string(e) +
                     ") lie outside the " + std::to_string(data_size) + "-byte data section (truncated file?)");
    if (e - b != expected)
      fail(name, "tensor '" + tname + "': " + std::to_string(e - b) + " bytes do not match shape " +
                     view.shape_string() + " of " + std::string(dtype_str) + " (" + std::to_string(expected) +
                     " bytes)");
    view.bytes = {base + data_start + b, e - b};
    auto [it, inserted] = f->tensors_.emplace(tname, std::move(view));
    if (!inserted) fail(name, "tensor '" + tname + "' appears twice");
    spans.push_back({b, e, &it->first});
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].begin < spans[i - 1].end)
      fail(name, "tensors '" + *spans[i - 1].name + "' and '" + *spans[i].name + "' overlap");
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) munmap(map_, map_size_);
}

CheckpointTensors CheckpointTensors::open(const std::filesystem::path& dir) {
  CheckpointTensors ck;
  const auto single = dir / "model.safetensors";
  const auto index = dir / "model.safetensors.index.json";
  std::vector<std::filesystem::path> shards;
  if (std::filesystem::exists(index)) {
    ck.source_ = index.string();
    std::string text = read_text_file(index);
    simdjson::dom::parser parser;
    simdjson::padded_string padded(text);
    simdjson::dom::object root, map;
    if (auto err = parser.parse(padded).get(root))
      fail(ck.source_, std::string("malformed JSON (") + simdjson::error_message(err) + ")");
    if (root["weight_map"].get(map)) fail(ck.source_, "missing object 'weight_map'");
    std::map<std::string, std::string> tensor_to_shard;
    for (auto [key, value] : map) {
      std::string_view shard;
      if (value.get(shard)) fail(ck.source_, "weight_map['" + std::string(key) + "'] is not a string");
      if (shard.find('/') != std::string_view::npos || shard == ".." )
        fail(ck.source_, "shard name '" + std::string(shard) + "' must be a plain file name");
      tensor_to_shard[std::string(key)] = std::string(shard);
      if (std::find(shards.begin(), shards.end(), dir / shard) == shards.end()) shards.push_back(dir / shard);
    }
    for (const auto& s : shards) ck.files_.push_back(SafetensorsFile::open(s));
    for (const auto& file : ck.files_)
      for (const auto& [tname, view] : file->tensors()) ck.index_.emplace(tname, &view);
    for (const auto& [tname, shard] : tensor_to_shard) {
      auto it = ck.index_.find(tname);
      if (it == ck.index_.end() || std::filesystem::path(*it->second->file).filename() != shard)
        fail(ck.source_, "lists tensor '" + tname + "' in " + shard + ", which does not hold it");
    }
  } else if (std::filesystem::exists(single)) {
    ck.source_ = single.string();
    ck.files_.push_back(SafetensorsFile::open(single));
    for (const auto& [tname, view] : ck.files_.back()->tensors()) ck.index_.emplace(tname, &view);
  } else {
    fail(dir.string(), "no model.safetensors or model.safetensors.index.json");
  }
  return ck;
}

const TensorView* CheckpointTensors::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

std::vector<std::string> CheckpointTensors::names() const {
  std::vector<std::string> out;
  for (const auto& [n, _] : index_) out.push_back(n);
  return out;
}

void drop_cached_pages(const TensorView& tensor) {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<uintptr_t>(tensor.bytes.data());
  const uintptr_t first = (begin + page - 1) / page * page, last = (begin + tensor.bytes.size()) / page * page;
  // Pages shared with a neighbouring tensor stay; the mapping is read-only, so dropping loses nothing.
  if (first < last) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

namespace {
std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}
}  // namespace

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorSpec>& tensors,
                       const TensorFiller& fill, const std::map<std::string, std::string>& metadata) {
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      header += (first ? "" : ",") + ("\"" + json_escape(k) + "\":\"" + json_escape(v) + "\"");
      first = false;
    }
    header += "},";
  }
  size_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    std::string shape;
    for (size_t d = 0; d < t.shape.size(); ++d) shape += (d ? "," : "") + std::to_string(t.shape[d]);
    size_t n = t.nbytes();
    header += (i ? "," : "") + ("\"" + json_escape(t.name) + "\":{\"dtype\":\"" + std::string(dtype_name(t.dtype)) +
                                "\",\"shape\":[" + shape + "],\"data_offsets\":[" + std::to_string(offset) + "," +
                                std::to_string(offset + n) + "]}");
    offset += n;
  }
  header += "}";
  while ((header.size() + 8) % 8 != 0) header += ' ';  // keep the data 8-byte aligned, as HF does

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail(path.string(), "cannot create");
  uint64_t len = header.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  std::vector<std::byte> buffer;
  for (const auto& t : tensors) {
    buffer.assign(t.nbytes(), std::byte{0});
    fill(t, buffer);
    out.write(reinterpret_cast<const char*>(buffer.data()), static_cast<std::streamsize>(buffer.size()));
  }
  if (!out.flush()) fail(path.string(), "write failed (disk full?)");
}

}  // namespace ultraserve
