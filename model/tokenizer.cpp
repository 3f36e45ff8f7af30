// Byte-level BPE as HF tokenizers does it. The encode pipeline (HF: TokenizerImpl::encode):
//   1. added tokens: split the raw text on added tokens with normalized=false
//      (AddedVocabulary::extract_and_normalize, Aho-Corasick leftmost-longest);
//   2. normalizer (NFC for Qwen3) on each remaining piece, then split those on added
//      tokens with normalized=true;
//   3. pre-tokenizer: Split(regex) steps, then ByteLevel (bytes -> GPT-2 alphabet);
//   4. BPE on each word, merges applied lowest rank first, ties leftmost first;
//   5. post-processor: ByteLevel adds nothing to ids.
// This file runs that pipeline and holds the public API; the parts live in
// model/tokenizer/: added_tokens (step 1), normalizer (2), onig_regex (the regex engine
// of 3), bpe (4), impl.h (the tables), and tokenizer_json.cpp (load()).

#include "model/tokenizer.h"

#include <simdjson.h>

#include <string>
#include <utility>
#include <vector>

#include "model/tokenizer/impl.h"
#include "model/utf8_stream.h"

namespace ultraserve {

using namespace tokenizer_detail;

// ---------------------------------------------------------------------------------------
// Pre-tokenizer and the encode pipeline.

namespace {

// HF's Split: the matches and the text between them, flagged, covering all of `s`
// (Pattern::find_matches), then combined according to the behavior (NormalizedString::split).
void apply_split(const SplitStep& step, std::string_view s, std::vector<std::string_view>& out) {
  if (s.empty()) return;
  thread_local std::vector<std::pair<size_t, size_t>> matches;
  struct Part {
    size_t start, end;
    bool is_match;
  };
  thread_local std::vector<Part> parts;
  matches.clear();
  parts.clear();
  if (step.regex) step.regex->find_all(s, matches);
  size_t prev = 0;
  for (auto [start, end] : matches) {
    if (prev != start) parts.push_back({prev, start, step.invert});
    parts.push_back({start, end, !step.invert});
    prev = end;
  }
  if (prev != s.size()) parts.push_back({prev, s.size(), step.invert});

  auto emit = [&](size_t start, size_t end) {
    if (end > start) out.push_back(s.substr(start, end - start));  // HF drops empty splits
  };
  switch (step.behavior) {
    case SplitBehavior::kIsolated:
      for (const Part& p : parts) emit(p.start, p.end);
      break;
    case SplitBehavior::kRemoved:
      for (const Part& p : parts)
        if (!p.is_match) emit(p.start, p.end);
      break;
    case SplitBehavior::kMergedWithPrevious: {
      // A match is glued to the end of the piece before it.
      std::vector<std::pair<size_t, size_t>> acc;
      bool previous_match = false;
      for (const Part& p : parts) {
        if (p.is_match && !previous_match && !acc.empty()) {
          acc.back().second = p.end;
        } else {
          acc.emplace_back(p.start, p.end);
        }
        previous_match = p.is_match;
      }
      for (auto [a, b] : acc) emit(a, b);
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      // A match is glued to the start of the piece after it (HF folds from the right).
      std::vector<std::pair<size_t, size_t>> acc;
      bool previous_match = false;
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->is_match && !previous_match && !acc.empty()) {
          acc.back().first = it->start;
        } else {
          acc.emplace_back(it->start, it->end);
        }
        previous_match = it->is_match;
      }
      for (auto it = acc.rbegin(); it != acc.rend(); ++it) emit(it->first, it->second);
      break;
    }
    case SplitBehavior::kContiguous: {
      // Consecutive parts of the same kind (match / non-match) are joined.
      std::vector<std::pair<size_t, size_t>> acc;
      bool previous_match = false;
      for (const Part& p : parts) {
        if (p.is_match == previous_match && !acc.empty()) {
          acc.back().second = p.end;
        } else {
          acc.emplace_back(p.start, p.end);
        }
        previous_match = p.is_match;
      }
      for (auto [a, b] : acc) emit(a, b);
      break;
    }
  }
}

}  // namespace

// Pre-tokenizer: the Split steps in order, then ByteLevel's own prefix space and regex.
// The words end up in scratch.words.
void Tokenizer::Impl::pre_tokenize(std::string_view s, Scratch& scratch) const {
  std::vector<std::string_view>& current = scratch.current;
  std::vector<std::string_view>& next = scratch.next;
  current.assign(1, s);
  for (const SplitStep& step : splits) {
    next.clear();
    for (std::string_view piece : current) apply_split(step, piece, next);
    current.swap(next);
  }
  std::vector<std::string_view>& words = scratch.words;
  words.clear();
  for (std::string_view piece : current) {
    if (piece.empty()) continue;
    if (prefix_space && piece.front() != ' ') {
      // HF prepends the space to every piece reaching ByteLevel, not just the first.
      scratch.storage.push_back(std::string(" ").append(piece));
      piece = scratch.storage.back();
    }
    if (byte_level_regex) {
      // ByteLevel's own split, with Isolated behaviour.
      scratch.matches.clear();
      byte_level_regex->find_all(piece, scratch.matches);
      size_t prev = 0;
      for (auto [a, b] : scratch.matches) {
        if (prev < a) words.push_back(piece.substr(prev, a - prev));
        if (b > a) words.push_back(piece.substr(a, b - a));
        prev = b;
      }
      if (prev < piece.size()) words.push_back(piece.substr(prev));
    } else {
      words.push_back(piece);
    }
  }
}

// Normalized text between added tokens -> ids.
void Tokenizer::Impl::encode_plain(std::string_view normalized, Scratch& scratch,
                                   std::vector<int32_t>& ids) const {
  std::vector<Segment>& segments = scratch.inner_segments;
  segments.clear();
  split_on_added_tokens(normalized, normalized_trie, added, segments);
  for (const Segment& seg : segments) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
      continue;
    }
    pre_tokenize(normalized.substr(seg.start, seg.end - seg.start), scratch);
    for (std::string_view w : scratch.words) bpe.encode_word(w, ids);
  }
}

// ---------------------------------------------------------------------------------------
// Public API.

Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  const Impl& im = *impl_;
  // HF only ever sees valid UTF-8 (Rust Strings). Repair invalid input the way
  // String::from_utf8_lossy / Python's errors="replace" would; see docs/tokenizer.md.
  std::string repaired;
  if (!simdjson::validate_utf8(text.data(), text.size())) {
    repaired = utf8::lossy(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  Impl::Scratch scratch;
  split_on_added_tokens(text, im.raw_trie, im.added, scratch.segments);
  for (const Segment& seg : scratch.segments) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
      continue;
    }
    const std::string_view piece = text.substr(seg.start, seg.end - seg.start);
    im.encode_plain(im.normalize(piece, scratch.normalized), scratch, ids);
  }
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  const Impl& im = *impl_;
  std::string raw;
  raw.reserve(ids.size() * 4);
  for (int32_t id : ids) {
    im.check_id(id);
    if (skip_special_tokens && (im.flags[size_t(id)] & Impl::kSpecial)) continue;
    raw.append(im.bytes[size_t(id)]);
  }
  // Bytes of all tokens are joined before the UTF-8 repair, as HF's ByteLevel decoder
  // does, so a character split across tokens comes out whole.
  if (utf8::is_valid(raw)) return raw;
  return utf8::lossy(raw);
}

int32_t Tokenizer::vocab_size() const { return int32_t(impl_->flags.size()); }

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto it = impl_->added_by_content.find(token); it != impl_->added_by_content.end()) return it->second;
  if (const int32_t id = impl_->bpe.vocab.find(token); id >= 0) return id;
  return std::nullopt;
}

std::string_view Tokenizer::id_to_token(int32_t id) const {
  impl_->check_id(id);
  return impl_->tokens[size_t(id)];
}

bool Tokenizer::is_special(int32_t id) const {
  return impl_->assigned(id) && (impl_->flags[size_t(id)] & Impl::kSpecial);
}

std::string_view Tokenizer::token_bytes(int32_t id) const {
  impl_->check_id(id);
  return impl_->bytes[size_t(id)];
}

std::string Tokenizer::normalize(std::string_view text) const {
  std::string repaired, buffer;
  if (!utf8::is_valid(text)) {
    repaired = utf8::lossy(text);
    text = repaired;
  }
  return std::string(impl_->normalize(text, buffer));
}

const std::filesystem::path& Tokenizer::path() const { return impl_->path; }

}  // namespace ultraserve
