#pragma once
// Tokenizer::Impl: the immutable tables load() builds (tokenizer_json.cpp) and encode() /
// decode() read (tokenizer.cpp). Internal to the tokenizer's sources.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "model/error.h"
#include "model/tokenizer.h"
#include "model/tokenizer/added_tokens.h"
#include "model/tokenizer/bpe.h"
#include "model/tokenizer/normalizer.h"
#include "model/tokenizer/onig_regex.h"
#include "model/tokenizer/string_map.h"

namespace ultraserve {
namespace tokenizer_detail {

// Pre-tokenizer steps.

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct SplitStep {
  std::unique_ptr<Regex> regex;  // null: the pattern is the empty string (never matches)
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
};

}  // namespace tokenizer_detail

struct Tokenizer::Impl {
  std::filesystem::path path;
  std::string file;  // path as text, for messages

  // id -> token (stored form), id -> decoded bytes, id -> flags
  std::vector<std::string> tokens;
  std::vector<std::string> bytes;
  enum : uint8_t { kAssigned = 1, kSpecial = 2 };
  std::vector<uint8_t> flags;

  tokenizer_detail::StringMap<int32_t> added_by_content;
  std::vector<tokenizer_detail::AddedToken> added;  // index used by the tries
  tokenizer_detail::TokenTrie raw_trie;             // normalized=false tokens: matched on the raw text
  tokenizer_detail::TokenTrie normalized_trie;      // normalized=true tokens: matched after normalization

  std::vector<tokenizer_detail::NormalForm> normalizers;
  std::vector<tokenizer_detail::SplitStep> splits;
  bool prefix_space = false;                                  // ByteLevel add_prefix_space
  std::unique_ptr<tokenizer_detail::Regex> byte_level_regex;  // ByteLevel use_regex: the GPT-2 pattern

  tokenizer_detail::BpeModel bpe;  // the "model": vocabulary, merges and the word cache

  bool assigned(int32_t id) const {
    return id >= 0 && size_t(id) < flags.size() && (flags[size_t(id)] & kAssigned);
  }
  void check_id(int32_t id) const {
    if (!assigned(id)) {
      throw ModelError(file + ": token id " + std::to_string(id) + " is not in the vocabulary (ids 0.." +
                       std::to_string(int64_t(flags.size()) - 1) + ")");
    }
  }

  // The normalizers applied to `s`: `s` itself when nothing changes (the common case),
  // else a view of `buffer`.
  std::string_view normalize(std::string_view s, std::string& buffer) const {
    return tokenizer_detail::apply_normalizers(normalizers, s, buffer);
  }

  // Per-encode() working memory, reused across the pieces of one text.
  struct Scratch {
    std::vector<tokenizer_detail::Segment> segments, inner_segments;
    std::string normalized;
    std::vector<std::string_view> current, next, words;
    std::deque<std::string> storage;  // pieces that got a prefix space
    std::vector<std::pair<size_t, size_t>> matches;
  };

  void encode_plain(std::string_view normalized, Scratch& scratch, std::vector<int32_t>& ids) const;
  void pre_tokenize(std::string_view s, Scratch& scratch) const;
};

}  // namespace ultraserve
