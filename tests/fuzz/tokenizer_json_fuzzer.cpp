// Fuzz target: tokenizer.json loading (model/tokenizer.h, Tokenizer::load: vocab, merges,
// added tokens, normalizers, Split regexes translated to PCRE2, decoder checks). The input
// is written to a file and loaded; a file that loads is then used on a few short texts,
// since what load() accepts must be safe to encode and decode with.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "model/error.h"
#include "model/tokenizer.h"
#include "model/utf8_stream.h"
#include "tests/fuzz/fuzz_support.h"

using namespace ultraserve;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static fuzz::ScratchFile file("tokenizer.json");
  const auto& path = file.write(data, size);
  std::optional<Tokenizer> t;
  try {
    t.emplace(Tokenizer::load(path));
  } catch (const ModelError&) {
    return 0;
  }
  static const std::string_view kTexts[] = {
      "Hello world", "it's 123 ab", "caf\xc3\xa9 e\xcc\x81", "<|im_start|>user\nhi<|im_end|>",
      " \n\n\t  x", "\xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80", "\xff\xc0 bad", "",
  };
  for (std::string_view text : kTexts) {
    std::vector<int32_t> ids;
    try {
      ids = t->encode(text);
    } catch (const ModelError&) {
      continue;  // e.g. a pattern PCRE2 gives up on; reported, not a crash
    }
    for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < t->vocab_size());
    // encode() only emits assigned ids, so decoding them must not throw.
    const std::string decoded = t->decode(ids);
    FUZZ_CHECK(utf8::is_valid(decoded));
    StreamingDetokenizer stream(*t);
    std::string streamed;
    for (int32_t id : ids) streamed += stream.push(id);
    streamed += stream.flush();
    FUZZ_CHECK(streamed == decoded);
  }
  for (int32_t id = 0; id < t->vocab_size() && id < 4096; ++id) {
    (void)t->is_special(id);
    try {
      (void)t->token_bytes(id);
      FUZZ_CHECK(t->token_to_id(t->id_to_token(id)).has_value());
    } catch (const ModelError&) {
    }
  }
  return 0;
}
