// The safetensors reader must accept what HF writes and refuse, with a message naming the
// file, anything truncated or inconsistent.

#include <cstring>

#include "model/safetensors.h"
#include "tests/test_support.h"

namespace ultraserve {
namespace {

using testing::ScratchDir;

std::string with_header(const std::string& header, const std::string& data) {
  uint64_t len = header.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &len, 8);
  return out + header + data;
}

TEST(Safetensors, WritesAndReadsBack) {
  ScratchDir dir;
  std::vector<TensorSpec> specs{{"a", DType::F32, {2, 3}}, {"b", DType::BF16, {4}}, {"c", DType::I32, {}}};
  write_safetensors(dir / "x.safetensors", specs, [](const TensorSpec& s, std::span<std::byte> out) {
    for (size_t i = 0; i < out.size(); ++i) out[i] = std::byte(i + s.name[0]);
  }, {{"format", "pt"}});
  auto f = SafetensorsFile::open(dir / "x.safetensors");
  ASSERT_EQ(f->tensors().size(), 3u);
  const TensorView& a = f->tensors().at("a");
  EXPECT_EQ(a.dtype, DType::F32);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.bytes.size(), 24u);
  EXPECT_EQ(a.bytes[5], std::byte(5 + 'a'));
  EXPECT_EQ(f->tensors().at("c").bytes.size(), 4u);  // a scalar holds one element
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.bytes.data()) % 8, 0u) << "data must stay 8-byte aligned";
}

TEST(Safetensors, ConvertsFloatTypesToF32) {
  const uint16_t bf16_one_and_half = 0x3fc0, f16_minus_two = 0xc000, f16_subnormal = 0x0001;
  float out[3];
  convert_to_f32(DType::BF16, reinterpret_cast<const std::byte*>(&bf16_one_and_half), 1, out);
  convert_to_f32(DType::F16, reinterpret_cast<const std::byte*>(&f16_minus_two), 1, out + 1);
  convert_to_f32(DType::F16, reinterpret_cast<const std::byte*>(&f16_subnormal), 1, out + 2);
  EXPECT_EQ(out[0], 1.5f);
  EXPECT_EQ(out[1], -2.0f);
  EXPECT_EQ(out[2], 5.9604644775390625e-08f);
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);  // ties round to even
  EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);
}

struct BadFile {
  const char* what;
  std::string bytes;
  const char* expected;
};

TEST(Safetensors, RefusesBadFilesWithClearErrors) {
  const std::string ok_entry = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::vector<BadFile> cases{
      {"empty file", "", "truncated"},
      {"header longer than the file", with_header("{" + ok_entry + "}", "").substr(0, 20), "truncated"},
      {"implausible header length", std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + "{}", "implausible"},
      {"malformed JSON", with_header("{\"t\":", ""), "malformed header JSON"},
      {"data shorter than offsets", with_header("{" + ok_entry + "}", "1234"), "outside"},
      {"size not matching shape", with_header(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", "12345678"),
       "do not match shape"},
      {"unknown dtype", with_header(R"({"t":{"dtype":"F8_E9","shape":[1],"data_offsets":[0,1]}})", "1"),
       "unsupported dtype 'F8_E9'"},
      {"missing shape", with_header(R"({"t":{"dtype":"F32","data_offsets":[0,4]}})", "1234"), "missing shape"},
      {"negative dimension", with_header(R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "1234"),
       "non-negative"},
      {"reversed offsets", with_header(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", "12345678"),
       "outside"},
      {"overlapping tensors",
       with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                   "12345678"),
       "overlap"},
      {"entry not an object", with_header(R"({"t":5})", ""), "not an object"},
  };
  ScratchDir dir;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const auto path = dir / "bad.safetensors";
    testing::write_file(path, c.bytes);
    EXPECT_THROW_WITH(SafetensorsFile::open(path), path.string().c_str(), c.expected);
  }
  EXPECT_THROW_WITH(SafetensorsFile::open(dir / "absent.safetensors"), "absent.safetensors", "cannot open");
}

TEST(Safetensors, ShardedIndexMustMatchItsShards) {
  ScratchDir dir;
  auto zero = [](const TensorSpec&, std::span<std::byte> out) { std::fill(out.begin(), out.end(), std::byte{0}); };
  write_safetensors(dir / "s1.safetensors", {{"a", DType::F32, {1}}}, zero);
  write_safetensors(dir / "s2.safetensors", {{"b", DType::F32, {1}}}, zero);
  testing::write_file(dir / "model.safetensors.index.json",
                      R"({"metadata":{},"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}})");
  auto ck = CheckpointTensors::open(dir.path());
  EXPECT_NE(ck.find("a"), nullptr);
  EXPECT_NE(ck.find("b"), nullptr);
  EXPECT_EQ(ck.find("c"), nullptr);

  testing::write_file(dir / "model.safetensors.index.json", R"({"weight_map":{"a":"s2.safetensors"}})");
  EXPECT_THROW_WITH(CheckpointTensors::open(dir.path()), "index.json", "'a'", "does not hold it");
  testing::write_file(dir / "model.safetensors.index.json", R"({"weight_map":{"a":"missing.safetensors"}})");
  EXPECT_THROW_WITH(CheckpointTensors::open(dir.path()), "missing.safetensors", "cannot open");
  testing::write_file(dir / "model.safetensors.index.json", R"({"weight_map":{"a":"../etc/passwd"}})");
  EXPECT_THROW_WITH(CheckpointTensors::open(dir.path()), "plain file name");
  testing::write_file(dir / "model.safetensors.index.json", R"({"weight_map": [)");
  EXPECT_THROW_WITH(CheckpointTensors::open(dir.path()), "index.json", "malformed JSON");

  ScratchDir empty;
  EXPECT_THROW_WITH(CheckpointTensors::open(empty.path()), "no model.safetensors");
}

}  // namespace
}  // namespace ultraserve
