#pragma once
// UTF-8 repair and incremental detokenization.
//
// Byte-level BPE tokens are byte strings, not characters: "中" (E4 B8 AD) may be split over
// two or three tokens, and a model can emit byte sequences that are never valid UTF-8.
// HF tokenizers decodes by concatenating all token bytes and running Rust's
// String::from_utf8_lossy, which replaces each *maximal subpart* of an ill-formed sequence
// (Unicode ch. 3, "U+FFFD substitution of maximal subparts"; the WHATWG decoder does the
// same) with one U+FFFD. Everything here follows that rule, so that streaming output,
// whole-sequence decode() and HF agree byte for byte.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ultraserve {

class Tokenizer;

namespace utf8 {

enum class Kind {
  kValid,       // a complete, well-formed character of `len` bytes
  kInvalid,     // an ill-formed maximal subpart of `len` (>= 1) bytes: one U+FFFD
  kIncomplete,  // the whole rest (`len` bytes) is a proper prefix of a well-formed character
};

struct Step {
  Kind kind;
  size_t len;
};

// Classifies the character that starts at s[0]. `s` must not be empty.
Step next(std::string_view s);

// True when `s` is well-formed UTF-8 (no surrogates, no overlongs, nothing above U+10FFFF).
bool is_valid(std::string_view s);

// Appends `s` to `out` with every ill-formed maximal subpart, including a truncated
// character at the very end, replaced by U+FFFD ("\xEF\xBF\xBD").
void append_lossy(std::string& out, std::string_view s);

inline std::string lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  append_lossy(out, s);
  return out;
}

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

}  // namespace utf8

// Turns a stream of generated token ids into text, one push() per token.
//
// push() returns only completed characters: trailing bytes that could still become a valid
// character are held back until the next token completes them (or proves them invalid, in
// which case they come out as U+FFFD). flush() emits whatever is held, as U+FFFD.
// Invariant (tested): the concatenation of all push() results and flush() equals
// tokenizer.decode(all ids, skip_special_tokens) - the same lossy rule applied at once.
//
// Not thread safe (one instance per generation stream); the Tokenizer must outlive it.
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens = false)
      : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

  // Throws ModelError for an id the tokenizer does not know (like decode()).
  std::string push(int32_t id);

  // Emits the held bytes (a truncated character becomes one U+FFFD) and resets the state.
  std::string flush();

  // Bytes currently held back because they may be the start of a character.
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;  // at most 3 bytes: a proper prefix of a 4-byte character
};

}  // namespace ultraserve
