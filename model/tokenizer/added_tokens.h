#pragma once
// Added tokens (HF AddedVocabulary): finding them in text and cutting the text around them.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ultraserve::tokenizer_detail {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

// A byte trie over added-token contents, searched leftmost-longest: the earliest start
// position wins, and among matches starting there the longest. This is the semantics of
// the aho-corasick MatchKind::LeftmostLongest automaton HF builds; with the few dozen
// tokens a tokenizer has, a trie walk from each candidate start is just as fast.
class TokenTrie {
 public:
  void insert(std::string_view s, int32_t token_index);
  bool empty() const { return empty_; }

  struct Match {
    size_t start, end;
    int32_t token_index;
  };
  // The leftmost-longest match starting at or after `from`.
  std::optional<Match> find(std::string_view s, size_t from) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;
    int32_t token = -1;
  };
  std::vector<Node> nodes_{1};
  std::array<bool, 256> first_byte_{};
  bool empty_ = true;
};

// A stretch of text: either one added token (id >= 0) or plain text to tokenize (id -1).
struct Segment {
  size_t start, end;
  int32_t id;
};

// Appends to `out` the segments covering all of `s`: the added tokens `trie` finds in it
// (its token indexes point into `added`) and the plain text between them.
void split_on_added_tokens(std::string_view s, const TokenTrie& trie, std::span<const AddedToken> added,
                           std::vector<Segment>& out);

}  // namespace ultraserve::tokenizer_detail
