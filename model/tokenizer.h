#pragma once
// A byte-level BPE tokenizer that reads a Hugging Face `tokenizer.json` and produces the
// same ids as HF `tokenizers` (Tokenizer.from_file(...).encode(text).ids) and the same
// text as its decode(). Built for Qwen3's tokenizer, but it handles the byte-level BPE
// family in general (GPT-2 style ByteLevel pre-tokenizer, or Split(regex) + ByteLevel).
// docs/tokenizer.md lists what is supported and how each step mirrors HF.
//
// Files of any other kind (WordPiece, Unigram, SentencePiece-style BPE with Metaspace,
// post-processors that add tokens, truncation/padding, ...) are refused at load with a
// ModelError naming the file and the unsupported part, rather than silently tokenizing
// differently from HF.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ultraserve {

class Tokenizer {
 public:
  // Parses and validates the file. Throws ModelError ("<path>: <problem>") for a missing or
  // unreadable file, malformed JSON, a non-BPE model, unsupported normalizer /
  // pre-tokenizer / post-processor / decoder, missing vocab or merges, merges naming
  // unknown tokens, or a regex PCRE2 cannot compile.
  static Tokenizer load(const std::filesystem::path& tokenizer_json);

  // HF encode() with default options. Added tokens (e.g. "<|im_start|>") are recognised
  // anywhere in `text`. Invalid UTF-8 is not an error: each ill-formed subsequence is
  // replaced by U+FFFD first (like Rust's String::from_utf8_lossy), then encoded.
  // Thread safe: may be called concurrently on one Tokenizer.
  std::vector<int32_t> encode(std::string_view text) const;

  // HF decode(ids, skip_special_tokens): the tokens' bytes are concatenated and turned
  // into UTF-8 with every ill-formed subsequence replaced by U+FFFD. Throws ModelError for
  // an id that names no token (HF silently drops those; we would rather know).
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  // Largest id + 1, added tokens included (Qwen3: 151669). Ids below it may still be
  // unassigned in some files; decode() and id_to_token() reject those.
  int32_t vocab_size() const;

  // Added tokens first, then the model vocabulary (as HF). Tokens are in their stored
  // form: byte-level characters for vocabulary tokens ("Ġhello"), verbatim for added ones.
  std::optional<int32_t> token_to_id(std::string_view token) const;

  // The stored form of a token. Throws ModelError for an unassigned id.
  std::string_view id_to_token(int32_t id) const;

  // True for added tokens marked "special" (skipped by decode(ids, true)); false for
  // anything else, unassigned ids included.
  bool is_special(int32_t id) const;

  // The raw bytes one token contributes to decode() (possibly a fragment of a UTF-8
  // character). Throws ModelError for an unassigned id. Used by StreamingDetokenizer.
  std::string_view token_bytes(int32_t id) const;

  // The file's normalizer (e.g. NFC) applied to `text` after U+FFFD repair, as encode()
  // does for the text between added tokens.
  std::string normalize(std::string_view text) const;

  const std::filesystem::path& path() const;

  // Cheap to copy: copies share the immutable tables and the (thread-safe) word cache.
  Tokenizer(const Tokenizer&) = default;
  Tokenizer(Tokenizer&&) noexcept = default;
  Tokenizer& operator=(const Tokenizer&) = default;
  Tokenizer& operator=(Tokenizer&&) noexcept = default;
  ~Tokenizer();

  struct Impl;  // defined in tokenizer/impl.h; keeps simdjson/PCRE2/utf8proc out of this header

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace ultraserve
