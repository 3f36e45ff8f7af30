// Fuzz target: the real Qwen3 tokenizer on arbitrary bytes. encode() (added-token split, UTF-8
// repair, NFC, the pre-tokenizer regexes, BPE), decode() of the ids, and the streaming
// detokenizer must agree with each other:
//   - every id is in the vocabulary and decode(encode(s)) is valid UTF-8;
//   - for valid, already-normalized text, decode(encode(s)) == s (byte-level BPE is lossless);
//   - pushing the ids one by one through StreamingDetokenizer gives exactly decode(ids),
//     also for arbitrary id sequences made from the input bytes (broken UTF-8 across tokens).
// The tokenizer is loaded once: $ULTRASERVE_TOKENIZER_JSON, default
// data/qwen3-tokenizer/tokenizer.json in the source tree (scripts/setup.sh fetches it).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/error.h"
#include "model/tokenizer.h"
#include "model/utf8_stream.h"
#include "tests/fuzz/fuzz_support.h"

using namespace ultraserve;

namespace {

const Tokenizer* tokenizer = nullptr;

void check_streaming(const Tokenizer& t, std::span<const int32_t> ids, bool skip_special) {
  const std::string decoded = t.decode(ids, skip_special);
  FUZZ_CHECK(utf8::is_valid(decoded));
  StreamingDetokenizer stream(t, skip_special);
  std::string streamed;
  for (int32_t id : ids) {
    streamed += stream.push(id);
    FUZZ_CHECK(stream.pending_bytes() <= 3);
  }
  streamed += stream.flush();
  FUZZ_CHECK(streamed == decoded);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* env = std::getenv("ULTRASERVE_TOKENIZER_JSON");
  const std::string path = env ? env : ULTRASERVE_SOURCE_DIR "/data/qwen3-tokenizer/tokenizer.json";
  try {
    tokenizer = new Tokenizer(Tokenizer::load(path));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tokenizer_fuzzer: %s (run scripts/setup.sh, or set ULTRASERVE_TOKENIZER_JSON)\n", e.what());
    std::exit(1);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Tokenizer& t = *tokenizer;
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  const std::vector<int32_t> ids = t.encode(text);
  for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < t.vocab_size());
  const std::string decoded = t.decode(ids);
  FUZZ_CHECK(utf8::is_valid(decoded));
  if (utf8::is_valid(text) && t.normalize(text) == text) FUZZ_CHECK(decoded == text);
  check_streaming(t, ids, false);
  check_streaming(t, ids, true);

  // The same bytes read as token ids (3 bytes each, modulo the vocabulary size): the model
  // may emit any sequence, and the tokens' bytes need not join into UTF-8.
  std::vector<int32_t> raw;
  for (size_t i = 0; i + 2 < size; i += 3) {
    const uint32_t v = uint32_t(data[i]) | uint32_t(data[i + 1]) << 8 | uint32_t(data[i + 2]) << 16;
    raw.push_back(int32_t(v % uint32_t(t.vocab_size())));
  }
  try {
    check_streaming(t, raw, false);
    check_streaming(t, raw, true);
  } catch (const ModelError&) {
    // An unassigned id: decode() and push() both refuse it, which is the contract.
  }
  return 0;
}
