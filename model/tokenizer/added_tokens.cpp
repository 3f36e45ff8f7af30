#include "model/tokenizer/added_tokens.h"

#include <utf8proc.h>

#include <algorithm>

#include "model/tokenizer/unicode.h"

namespace ultraserve::tokenizer_detail {
namespace {

// Rust regex `\w` (used by HF for single_word added tokens): Alphabetic, marks, decimal
// digits, connector punctuation, ZWNJ/ZWJ. Approximated by general category; it misses
// the few Other_Alphabetic symbols of category So (e.g. circled letters).
bool is_word_char(char32_t c) {
  if (c == 0x200C || c == 0x200D) return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

}  // namespace

void TokenTrie::insert(std::string_view s, int32_t token_index) {
  if (s.empty()) return;
  first_byte_[static_cast<unsigned char>(s[0])] = true;
  int32_t node = 0;
  for (unsigned char b : s) {
    auto& kids = nodes_[node].children;
    auto it = std::find_if(kids.begin(), kids.end(), [b](const auto& kv) { return kv.first == b; });
    if (it == kids.end()) {
      nodes_.push_back({});
      nodes_[node].children.emplace_back(b, int32_t(nodes_.size() - 1));  // nodes_ may have moved
      node = int32_t(nodes_.size() - 1);
    } else {
      node = it->second;
    }
  }
  nodes_[node].token = token_index;
  empty_ = false;
}

std::optional<TokenTrie::Match> TokenTrie::find(std::string_view s, size_t from) const {
  for (size_t i = from; i < s.size(); ++i) {
    if (!first_byte_[static_cast<unsigned char>(s[i])]) continue;
    int32_t node = 0, best = -1;
    size_t best_end = 0;
    for (size_t j = i; j < s.size(); ++j) {
      const auto& kids = nodes_[node].children;
      const auto b = static_cast<unsigned char>(s[j]);
      auto it = std::find_if(kids.begin(), kids.end(), [b](const auto& kv) { return kv.first == b; });
      if (it == kids.end()) break;
      node = it->second;
      if (nodes_[node].token >= 0) {
        best = nodes_[node].token;
        best_end = j + 1;
      }
    }
    if (best >= 0) return Match{i, best_end, best};
  }
  return std::nullopt;
}

// HF AddedVocabulary::find_matches, including the single_word / lstrip / rstrip rules.
void split_on_added_tokens(std::string_view s, const TokenTrie& trie, std::span<const AddedToken> added,
                           std::vector<Segment>& out) {
  size_t start_offset = 0;  // end of the last accepted token (after any rstrip)
  size_t search_from = 0;   // the automaton resumes after the raw match, accepted or not
  if (!trie.empty()) {
    while (auto m = trie.find(s, search_from)) {
      search_from = m->end;
      const AddedToken& tok = added[size_t(m->token_index)];
      size_t start = m->start, stop = m->end;
      if (tok.single_word) {
        // Discard a match glued to a word character on either side (HF: \w$ / ^\w).
        bool word_before = false, word_after = false;
        if (start > 0) {
          size_t i = prev_code_point_start(s, start);
          word_before = is_word_char(next_code_point(s, i));
        }
        if (stop < s.size()) {
          size_t i = stop;
          word_after = is_word_char(next_code_point(s, i));
        }
        if (word_before || word_after) continue;
      }
      if (tok.lstrip) {
        // Swallow the whitespace before the token, but never into the previous token.
        size_t new_start = start;
        while (new_start > 0) {
          size_t i = prev_code_point_start(s, new_start), j = i;
          if (!is_white_space(next_code_point(s, j))) break;
          new_start = i;
        }
        start = std::max(new_start, start_offset);
      }
      if (tok.rstrip) {
        while (stop < s.size()) {
          size_t j = stop;
          if (!is_white_space(next_code_point(s, j))) break;
          stop = j;
        }
      }
      if (start_offset < start) out.push_back({start_offset, start, -1});
      out.push_back({start, stop, tok.id});
      start_offset = stop;
    }
  }
  if (start_offset < s.size()) out.push_back({start_offset, s.size(), -1});
}

}  // namespace ultraserve::tokenizer_detail
