// Byte-level BPE as HF tokenizers does it. The encode pipeline (HF: TokenizerImpl::encode):
//   1. added tokens: split the raw text on added tokens with normalized=false
//      (AddedVocabulary::extract_and_normalize, Aho-Corasick leftmost-longest);
//   2. normalizer (NFC for Qwen3) on each remaining piece, then split those on added
//      tokens with normalized=true;
//   3. pre-tokenizer: Split(regex) steps, then ByteLevel (bytes -> GPT-2 alphabet);
//   4. BPE on each word, merges applied lowest rank first, ties leftmost first;
//   5. post-processor: ByteLevel adds nothing to ids.
// Sections below: small Unicode helpers, the regex wrapper, normalizers, the added-token
// matcher, BPE tables and cache, the Impl, encode/decode, and finally load().

#include "model/tokenizer.h"

#include <simdjson.h>
#include <utf8proc.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>
#include <utility>

#include "model/byte_level.h"
#include "model/error.h"
#include "model/utf8_stream.h"

namespace ultraserve {
namespace {

// ---------------------------------------------------------------------------------------
// Unicode helpers. Input to these is always valid UTF-8 (encode() repairs it first).

// Decodes the code point starting at s[i] (valid UTF-8) and advances i.
char32_t next_code_point(std::string_view s, size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  const size_t len = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : 2;
  char32_t c = b0 & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) c = (c << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += len;
  return c;
}

// Start of the code point that ends at s[end - 1].
size_t prev_code_point_start(std::string_view s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return i;
}

// The Unicode White_Space property: what Rust's char::is_whitespace, the Rust regex `\s`
// and Oniguruma's `\s` all match. (PCRE2's UCP `\s` adds U+180E, JavaScript adds U+FEFF
// and drops U+0085, Python's isspace adds U+001C..U+001F - hence this explicit list.)
bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}
// The same set as a PCRE2 class body, for translating `\s`.
constexpr std::string_view kWhiteSpaceClassBody =
    "\\x{09}-\\x{0D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

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

[[noreturn]] void fail(const std::string& file, const std::string& problem) {
  throw ModelError(file + ": " + problem);
}

std::string shown(std::string_view s) {
  constexpr size_t kMax = 60;  // keep messages readable for absurdly long tokens
  std::string out = "\"";
  out.append(s.substr(0, kMax));
  if (s.size() > kMax) out.append("...");
  out.append("\"");
  return out;
}

// ---------------------------------------------------------------------------------------
// Regex: PCRE2 standing in for Oniguruma, the engine HF tokenizers uses (SysRegex).
//
// Tokenizer patterns are written for Oniguruma; the two engines agree on the constructs
// these patterns use (alternation, classes, \p{L}/\p{N}, (?i:...), (?!...)) once PCRE2
// runs with PCRE2_UTF | PCRE2_UCP, except for `\s`, which we rewrite to the explicit
// White_Space class above (Oniguruma's doc/RE: 9-D, 85, Zs, Zl, Zp), and `\h`/`\w`,
// which mean other things in the two engines. Oniguruma's `\uHHHH` becomes PCRE2's
// `\x{HHHH}`, and ^/$ are line anchors in Oniguruma's Ruby syntax, hence PCRE2_MULTILINE.
// Not translated, as no known tokenizer uses them: `\b` (follows PCRE2's \w), negated
// types inside classes, nested classes / `&&`, and Ruby's (?m) (= PCRE2's (?s)).

std::string translate_onig_pattern(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 64);
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      if (e == 's') {
        if (in_class) {
          out.append(kWhiteSpaceClassBody);
        } else {
          out.append("[").append(kWhiteSpaceClassBody).append("]");
        }
        ++i;
        continue;
      }
      if (e == 'S' && !in_class) {  // inside a class PCRE2 cannot subtract; keep its \S
        out.append("[^").append(kWhiteSpaceClassBody).append("]");
        ++i;
        continue;
      }
      // Oniguruma's \h is a hex digit (PCRE2: horizontal space); its Unicode \w is
      // Letter|Mark|Number|Connector_Punctuation (PCRE2 10.42: letters, numbers, "_").
      if (e == 'h' || e == 'H' || e == 'w' || e == 'W') {
        const std::string_view body = (e == 'h' || e == 'H') ? "0-9a-fA-F" : "\\p{L}\\p{M}\\p{N}\\p{Pc}";
        const bool negated = (e == 'H' || e == 'W');
        if (in_class && !negated) {
          out.append(body);
        } else if (!in_class) {
          out.append(negated ? "[^" : "[").append(body).append("]");
        } else {
          out.push_back(c);  // a negated type inside a class: keep PCRE2's own
          out.push_back(e);
        }
        ++i;
        continue;
      }
      if (e == 'u' && i + 6 <= p.size() &&
          std::all_of(p.begin() + i + 2, p.begin() + i + 6,
                      [](char h) { return std::isxdigit(static_cast<unsigned char>(h)); })) {
        out.append("\\x{").append(p.substr(i + 2, 4)).append("}");
        i += 5;
        continue;
      }
      out.push_back(c);
      out.push_back(e);
      ++i;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out.push_back(c);
      // "[^]...]" and "[]...]": a ']' right after the opening is a literal.
      if (i + 1 < p.size() && p[i + 1] == '^') out.push_back(p[++i]);
      if (i + 1 < p.size() && p[i + 1] == ']') out.push_back(p[++i]);
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out.push_back(c);
  }
  return out;
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* md) const { pcre2_match_data_free(md); }
};

// One match-data block per thread, shared by all patterns: we only read group 0, so a
// single ovector pair is enough for any pattern, and no encode() call allocates one.
pcre2_match_data* thread_match_data() {
  thread_local std::unique_ptr<pcre2_match_data, MatchDataDeleter> md(
      pcre2_match_data_create(1, nullptr));
  return md.get();
}

class Regex {
 public:
  // `literal`: match `pattern` as a plain string (HF's Split with {"String": ...}).
  Regex(std::string_view pattern, bool literal, const std::string& file, std::string_view where) {
    const std::string translated = literal ? std::string(pattern) : translate_onig_pattern(pattern);
    // (PCRE2_LITERAL admits PCRE2_UTF but not PCRE2_UCP, which it would not need anyway.)
    const uint32_t options = literal ? (PCRE2_UTF | PCRE2_LITERAL) : (PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE);
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(), options,
                          &error, &offset, nullptr);
    if (code_ == nullptr) {
      std::array<PCRE2_UCHAR, 256> msg{};
      pcre2_get_error_message(error, msg.data(), msg.size());
      fail(file, std::string(where) + ": invalid regex " + shown(pattern) + " (PCRE2: " +
                     reinterpret_cast<const char*>(msg.data()) + " at offset " + std::to_string(offset) +
                     " of the translated pattern)");
    }
    // JIT is a large speed-up; where it is unavailable the interpreter gives the same
    // results, so a failure here is not an error.
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
    // The default match limit (10 million backtracking steps) can be reached by patterns
    // like \s*[\r\n]+ on multi-megabyte whitespace runs; the work is still linear, so lift it.
    mctx_ = pcre2_match_context_create(nullptr);
    pcre2_set_match_limit(mctx_, std::numeric_limits<uint32_t>::max());
  }
  ~Regex() {
    pcre2_match_context_free(mctx_);
    pcre2_code_free(code_);
  }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends every match as [start, end), iterating like the Rust `onig` crate's
  // find_iter (which HF uses): after a match the search resumes at its end, and an empty
  // match right where the previous match ended is skipped by advancing one character.
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
    pcre2_match_data* md = thread_match_data();
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    size_t search_from = 0;
    std::optional<size_t> last_match_end;
    while (search_from <= s.size()) {
      int rc = pcre2_match(code_, subject, s.size(), search_from, PCRE2_NO_UTF_CHECK, md, mctx_);
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
        // The JIT's 32 KiB stack ran out on a pathological input: the interpreter keeps
        // its backtracking state on the heap and finds the same match.
        rc = pcre2_match(code_, subject, s.size(), search_from, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md,
                         mctx_);
      }
      if (rc == PCRE2_ERROR_NOMATCH) return;
      if (rc < 0) {
        std::array<PCRE2_UCHAR, 256> msg{};
        pcre2_get_error_message(rc, msg.data(), msg.size());
        throw ModelError(std::string("tokenizer: regex matching failed: ") +
                         reinterpret_cast<const char*>(msg.data()));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      const size_t start = ov[0], end = ov[1];
      if (start == end && last_match_end == end) {
        if (search_from >= s.size()) return;
        size_t i = search_from;
        next_code_point(s, i);
        search_from = i;
        continue;
      }
      out.emplace_back(start, end);
      search_from = end;
      last_match_end = end;
    }
  }

 private:
  pcre2_code* code_ = nullptr;
  pcre2_match_context* mctx_ = nullptr;
};

// ---------------------------------------------------------------------------------------
// Normalizers (HF normalizers::unicode). utf8proc implements the four Unicode forms.

enum class NormalForm { kNFC, kNFD, kNFKC, kNFKD };

std::string utf8proc_normal_form(NormalForm form, std::string_view s) {
  int options = UTF8PROC_STABLE;
  switch (form) {
    case NormalForm::kNFC: options |= UTF8PROC_COMPOSE; break;
    case NormalForm::kNFD: options |= UTF8PROC_DECOMPOSE; break;
    case NormalForm::kNFKC: options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    case NormalForm::kNFKD: options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
  }
  utf8proc_uint8_t* dst = nullptr;
  // An explicit length (no UTF8PROC_NULLTERM) keeps embedded U+0000 characters.
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                          static_cast<utf8proc_ssize_t>(s.size()), &dst,
                                          static_cast<utf8proc_option_t>(options));
  if (n < 0) {
    // Cannot happen for valid UTF-8 (the only input we pass); keep the text unchanged
    // rather than lose it.
    return std::string(s);
  }
  std::string out(reinterpret_cast<const char*>(dst), static_cast<size_t>(n));
  std::free(dst);
  return out;
}

// utf8proc 2.8 composes an LV Hangul syllable with a following U+11A7 (HANGUL JUNGSEONG
// O-YAE) and drops the U+11A7 - the T-jamo range starts one past U+11A7. U+11A7 is a
// starter that composes with nothing, so normalising the text on each side of it
// separately is exact and sidesteps the bug.
constexpr std::string_view kJungseongOYae = "\xE1\x86\xA7";

std::string apply_normal_form(NormalForm form, std::string_view s) {
  const bool composes = form == NormalForm::kNFC || form == NormalForm::kNFKC;
  if (!composes || s.find(kJungseongOYae) == std::string_view::npos) return utf8proc_normal_form(form, s);
  std::string out;
  for (size_t start = 0;;) {
    const size_t hit = s.find(kJungseongOYae, start);
    out += utf8proc_normal_form(form, s.substr(start, hit == std::string_view::npos ? hit : hit - start));
    if (hit == std::string_view::npos) return out;
    out += kJungseongOYae;
    start = hit + kJungseongOYae.size();
  }
}

// Code points that NFC provably leaves alone when every character of the text is one of
// them: combining class 0, never the second half of a canonical composition, and either
// without canonical decomposition or recomposing to itself (é, が, 가). That covers
// nearly all prompt text (CJK, Hangul syllables, precomposed Latin, emoji), letting
// encode() skip utf8proc. Derived from utf8proc's own tables once per process (a few ms)
// and checked exhaustively against utf8proc over the BMP when it was written.
class NfcInertTable {
 public:
  NfcInertTable() : bits_((0x110000 + 63) / 64, 0) {
    std::vector<bool> second(0x110000, false);
    std::array<utf8proc_int32_t, 32> d{};
    auto canonical_decomposition = [&](utf8proc_int32_t c) -> utf8proc_ssize_t {
      const utf8proc_property_t* p = utf8proc_get_property(c);
      if (p->decomp_seqindex == UINT16_MAX || p->decomp_type != 0) return 0;  // none, or compat only
      int last_boundclass = 0;
      return utf8proc_decompose_char(c, d.data(), utf8proc_ssize_t(d.size()), UTF8PROC_DECOMPOSE,
                                     &last_boundclass);
    };
    for (utf8proc_int32_t c = 0; c < 0x110000; ++c) {
      if (c >= 0xD800 && c <= 0xDFFF) continue;
      if (utf8proc_get_property(c)->comp_exclusion) continue;
      const utf8proc_ssize_t n = canonical_decomposition(c);
      for (utf8proc_ssize_t k = 1; k < n; ++k) second[size_t(d[size_t(k)])] = true;  // conservative
    }
    for (char32_t c = 0x1161; c <= 0x1175; ++c) second[c] = true;  // Hangul V (algorithmic)
    for (char32_t c = 0x11A8; c <= 0x11C2; ++c) second[c] = true;  // Hangul T
    for (utf8proc_int32_t c = 0; c < 0x110000; ++c) {
      if (c >= 0xD800 && c <= 0xDFFF) continue;
      if (utf8proc_get_property(c)->combining_class != 0 || second[size_t(c)]) continue;
      const utf8proc_ssize_t n = canonical_decomposition(c);
      if (n > 0) {
        if (second[size_t(d[0])]) continue;
        std::array<utf8proc_uint8_t, 4> b{};
        const utf8proc_ssize_t len = utf8proc_encode_char(c, b.data());
        const std::string_view self(reinterpret_cast<const char*>(b.data()), size_t(len));
        if (utf8proc_normal_form(NormalForm::kNFC, self) != self) continue;
      }
      bits_[size_t(c) >> 6] |= uint64_t(1) << (c & 63);
    }
  }
  bool inert(char32_t c) const { return (bits_[c >> 6] >> (c & 63)) & 1; }

 private:
  std::vector<uint64_t> bits_;
};

const NfcInertTable& nfc_inert_table() {
  static const NfcInertTable table;  // magic static: built once, thread-safely
  return table;
}

// Whether `form` can change `s` (valid UTF-8). ASCII is invariant under every form;
// for NFC, text made only of inert code points is too.
bool may_change(NormalForm form, std::string_view s) {
  size_t i = 0;
  while (i < s.size() && static_cast<unsigned char>(s[i]) < 0x80) ++i;
  if (i == s.size()) return false;
  if (form != NormalForm::kNFC) return true;
  const NfcInertTable& table = nfc_inert_table();
  while (i < s.size()) {
    if (!table.inert(next_code_point(s, i))) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------
// Added tokens.

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
  void insert(std::string_view s, int32_t token_index) {
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
  bool empty() const { return empty_; }

  struct Match {
    size_t start, end;
    int32_t token_index;
  };
  // The leftmost-longest match starting at or after `from`.
  std::optional<Match> find(std::string_view s, size_t from) const {
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

// ---------------------------------------------------------------------------------------
// BPE tables.

// (left id, right id) -> (rank, merged id), open addressing with linear probing. The hot
// loop of BPE is this lookup; a flat table is several times faster than unordered_map.
class MergeTable {
 public:
  struct Entry {
    uint64_t key;
    int32_t rank;
    int32_t merged;
  };
  static uint64_t key(int32_t left, int32_t right) {
    return (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
  }
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    slots_.assign(cap, Entry{kEmpty, 0, 0});
    mask_ = cap - 1;
  }
  // A later duplicate overwrites an earlier one, as HF's HashMap collect() does.
  void insert_or_assign(uint64_t k, int32_t rank, int32_t merged) {
    for (size_t i = hash(k) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == kEmpty || slots_[i].key == k) {
        slots_[i] = Entry{k, rank, merged};
        return;
      }
    }
  }
  const Entry* find(uint64_t k) const {
    for (size_t i = hash(k) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == k) return &slots_[i];
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t(0);  // ids are non-negative: never a key
  static size_t hash(uint64_t k) {  // splitmix64 finaliser
    k ^= k >> 30;
    k *= 0xbf58476d1ce4e5b9ULL;
    k ^= k >> 27;
    k *= 0x94d049bb133111ebULL;
    k ^= k >> 31;
    return size_t(k);
  }
  std::vector<Entry> slots_;
  size_t mask_ = 0;
};

// The model vocabulary, token string -> id: open addressing over keys kept in one arena
// string. An unordered_map<std::string, int> costs 150k node allocations (tens of ms)
// at load; this costs two. Like HF's HashMap, a repeated key keeps its last id.
class VocabIndex {
 public:
  void reserve(size_t keys, size_t key_bytes) {
    size_t cap = 16;
    while (cap < 2 * keys) cap <<= 1;
    slots_.assign(cap, Slot{0, 0, -1});
    mask_ = cap - 1;
    arena_.reserve(key_bytes);
  }
  void insert_or_assign(std::string_view key, int32_t id) {
    for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      Slot& slot = slots_[i];
      if (slot.id < 0) {
        slot = Slot{uint32_t(arena_.size()), uint32_t(key.size()), id};
        arena_.append(key);
        ++size_;
        return;
      }
      if (key_of(slot) == key) {
        slot.id = id;
        return;
      }
    }
  }
  int32_t find(std::string_view key) const {  // -1 when absent
    if (slots_.empty()) return -1;
    for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      const Slot& slot = slots_[i];
      if (slot.id < 0) return -1;
      if (key_of(slot) == key) return slot.id;
    }
  }
  size_t size() const { return size_; }

 private:
  struct Slot {
    uint32_t offset, length;
    int32_t id;  // -1: empty
  };
  static size_t hash(std::string_view s) { return std::hash<std::string_view>{}(s); }
  std::string_view key_of(const Slot& slot) const { return std::string_view(arena_).substr(slot.offset, slot.length); }
  std::vector<Slot> slots_;
  size_t mask_ = 0, size_ = 0;
  std::string arena_;
};

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <class V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

// Word -> ids cache shared by all threads calling encode(). Sharded so that concurrent
// encodes rarely wait on one another; a full shard is simply cleared (HF's cache instead
// stops accepting entries - either way only speed is affected, never results).
class WordCache {
 public:
  static constexpr size_t kMaxWordBytes = 255;  // HF does not cache words of 256+ bytes

  bool lookup(std::string_view word, std::vector<int32_t>& out) const {
    Shard& sh = shard(word);
    std::lock_guard lock(sh.mu);
    auto it = sh.map.find(word);
    if (it == sh.map.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }
  void store(std::string_view word, std::span<const int32_t> ids) const {
    Shard& sh = shard(word);
    std::lock_guard lock(sh.mu);
    if (sh.map.size() >= kEntriesPerShard) sh.map.clear();
    sh.map.try_emplace(std::string(word), ids.begin(), ids.end());
  }

 private:
  static constexpr size_t kShards = 32;
  static constexpr size_t kEntriesPerShard = 2048;
  struct Shard {
    std::mutex mu;
    StringMap<std::vector<int32_t>> map;
  };
  Shard& shard(std::string_view word) const { return shards_[StringHash{}(word) % kShards]; }
  mutable std::array<Shard, kShards> shards_;
};

// ---------------------------------------------------------------------------------------
// Pre-tokenizer steps.

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct SplitStep {
  std::unique_ptr<Regex> regex;  // null: the pattern is the empty string (never matches)
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
};

constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

}  // namespace

// ---------------------------------------------------------------------------------------

struct Tokenizer::Impl {
  std::filesystem::path path;
  std::string file;  // path as text, for messages

  // id -> token (stored form), id -> decoded bytes, id -> flags
  std::vector<std::string> tokens;
  std::vector<std::string> bytes;
  enum : uint8_t { kAssigned = 1, kSpecial = 2 };
  std::vector<uint8_t> flags;

  VocabIndex vocab;                // the model's vocabulary
  StringMap<int32_t> added_by_content;
  std::vector<AddedToken> added;   // index used by the tries
  TokenTrie raw_trie;              // normalized=false tokens: matched on the raw text
  TokenTrie normalized_trie;       // normalized=true tokens: matched after normalization

  std::vector<NormalForm> normalizers;
  std::vector<SplitStep> splits;
  bool prefix_space = false;               // ByteLevel add_prefix_space
  std::unique_ptr<Regex> byte_level_regex;  // ByteLevel use_regex: the GPT-2 pattern

  MergeTable merges;
  std::array<int32_t, 256> byte_ids{};  // id of the single-character token of each byte, or -1
  int32_t unk_id = -1;
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  std::array<int32_t, 256> fallback_ids{};  // "<0xAB>" tokens for byte_fallback, or -1

  WordCache cache;

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
    for (NormalForm f : normalizers) {
      if (!may_change(f, s)) continue;
      buffer = apply_normal_form(f, s);
      s = buffer;
    }
    return s;
  }

  // Per-encode() working memory, reused across the pieces of one text.
  struct Scratch {
    std::vector<Segment> segments, inner_segments;
    std::string normalized;
    std::vector<std::string_view> current, next, words;
    std::deque<std::string> storage;  // pieces that got a prefix space
    std::vector<std::pair<size_t, size_t>> matches;
  };

  void split_added(std::string_view s, const TokenTrie& trie, std::vector<Segment>& out) const;
  void encode_plain(std::string_view normalized, Scratch& scratch, std::vector<int32_t>& ids) const;
  void pre_tokenize(std::string_view s, Scratch& scratch) const;
  void bpe(std::string_view word, std::vector<int32_t>& ids) const;
  void bpe_uncached(std::string_view word, std::vector<int32_t>& ids) const;
};

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

// HF AddedVocabulary::find_matches, including the single_word / lstrip / rstrip rules.
void Tokenizer::Impl::split_added(std::string_view s, const TokenTrie& trie,
                                  std::vector<Segment>& out) const {
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

// BPE on one pre-tokenized word, given as raw bytes: the ByteLevel step maps byte b to
// the character byte_level::byte_to_utf8(b), and since that map is one-to-one the initial
// BPE symbols are simply byte_ids[b] - no need to build the mapped string.
void Tokenizer::Impl::bpe(std::string_view word, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  if (word.size() == 1 && !ignore_merges && byte_ids[static_cast<unsigned char>(word[0])] >= 0) {
    ids.push_back(byte_ids[static_cast<unsigned char>(word[0])]);
    return;
  }
  if (ignore_merges) {
    // HF looks the whole (byte-level) word up first and skips BPE when it is a token.
    if (const int32_t id = vocab.find(byte_level::encode(word)); id >= 0) {
      ids.push_back(id);
      return;
    }
  }
  const bool cacheable = word.size() <= WordCache::kMaxWordBytes;
  if (cacheable && cache.lookup(word, ids)) return;
  const size_t before = ids.size();
  bpe_uncached(word, ids);
  if (cacheable) cache.store(word, std::span<const int32_t>(ids).subspan(before));
}

void Tokenizer::Impl::bpe_uncached(std::string_view word, std::vector<int32_t>& ids) const {
  // HF models::bpe::Word: a doubly linked list over a vector; merged-away symbols get
  // len 0. Queue entries are (rank, position), smallest first, so equal ranks merge left
  // to right; an entry is stale if its pair no longer maps to the same merged id.
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    uint32_t len;
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t merged;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  // Per-thread buffers: no allocation per word once they have grown.
  thread_local std::vector<Symbol> sym;
  thread_local std::vector<Candidate> heap;
  sym.clear();
  heap.clear();
  const std::greater<> later;  // min-heap: smallest (rank, pos) on top
  auto push = [&](const Candidate& c) {
    heap.push_back(c);
    std::push_heap(heap.begin(), heap.end(), later);
  };

  auto add = [&](int32_t id, uint32_t len) {
    const int32_t n = int32_t(sym.size());
    sym.push_back({id, n - 1, -1, len});
    if (n > 0) sym[size_t(n - 1)].next = n;
  };

  // Initial symbols, with HF's handling of characters missing from the vocabulary:
  // byte_fallback tokens, else unk (consecutive ones fused when fuse_unk), else dropped.
  int32_t pending_unk_len = 0;
  for (unsigned char b : word) {
    if (byte_ids[b] >= 0) {
      if (pending_unk_len > 0) {
        add(unk_id, uint32_t(pending_unk_len));
        pending_unk_len = 0;
      }
      add(byte_ids[b], 1);
      continue;
    }
    if (byte_fallback) {
      // The fallback covers the UTF-8 bytes of the byte-level *character*.
      const std::string_view ch = byte_level::byte_to_utf8(b);
      bool all = true;
      for (unsigned char cb : ch) all = all && fallback_ids[cb] >= 0;
      if (all) {
        // HF does not flush a pending unk here either: it lands after these tokens.
        for (unsigned char cb : ch) add(fallback_ids[cb], 1);
        continue;
      }
    }
    if (unk_id >= 0) {
      if (pending_unk_len > 0 && !fuse_unk) {
        add(unk_id, uint32_t(pending_unk_len));
        pending_unk_len = 0;
      }
      pending_unk_len += 1;
    }
  }
  if (pending_unk_len > 0) add(unk_id, uint32_t(pending_unk_len));

  for (size_t i = 0; i + 1 < sym.size(); ++i) {
    if (const MergeTable::Entry* e = merges.find(MergeTable::key(sym[i].id, sym[i + 1].id)))
      push({e->rank, int32_t(i), e->merged});
  }
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = sym[size_t(top.pos)];
    if (left.len == 0 || left.next < 0) continue;
    const int32_t right_pos = left.next;
    const Symbol right = sym[size_t(right_pos)];
    const MergeTable::Entry* e = merges.find(MergeTable::key(left.id, right.id));
    if (e == nullptr || e->merged != top.merged) continue;  // stale entry

    left.id = top.merged;
    left.len += right.len;
    left.next = right.next;
    sym[size_t(right_pos)].len = 0;
    if (right.next >= 0) sym[size_t(right.next)].prev = top.pos;

    if (left.prev >= 0) {
      const Symbol& p = sym[size_t(left.prev)];
      if (const MergeTable::Entry* pe = merges.find(MergeTable::key(p.id, left.id)))
        push({pe->rank, left.prev, pe->merged});
    }
    if (left.next >= 0) {
      const Symbol& n = sym[size_t(left.next)];
      if (const MergeTable::Entry* ne = merges.find(MergeTable::key(left.id, n.id)))
        push({ne->rank, top.pos, ne->merged});
    }
  }
  for (const Symbol& s : sym)
    if (s.len > 0) ids.push_back(s.id);
}

// Normalized text between added tokens -> ids.
void Tokenizer::Impl::encode_plain(std::string_view normalized, Scratch& scratch,
                                   std::vector<int32_t>& ids) const {
  std::vector<Segment>& segments = scratch.inner_segments;
  segments.clear();
  split_added(normalized, normalized_trie, segments);
  for (const Segment& seg : segments) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
      continue;
    }
    pre_tokenize(normalized.substr(seg.start, seg.end - seg.start), scratch);
    for (std::string_view w : scratch.words) bpe(w, ids);
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
  im.split_added(text, im.raw_trie, scratch.segments);
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
  if (const int32_t id = impl_->vocab.find(token); id >= 0) return id;
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

// ---------------------------------------------------------------------------------------
// Loading tokenizer.json.

namespace {

namespace dom = simdjson::dom;

// Small accessors that turn every shape problem into "<file>: <where>: <problem>".
class Json {
 public:
  explicit Json(const std::string& file) : file_(file) {}
  const std::string& file() const { return file_; }

  [[noreturn]] void fail_at(std::string_view where, const std::string& problem) const {
    fail(file_, std::string(where) + ": " + problem);
  }

  std::optional<dom::element> field(dom::element obj, std::string_view key) const {
    dom::element v;
    if (obj.at_key(key).get(v) != simdjson::SUCCESS) return std::nullopt;
    return v;
  }
  // Missing and null are the same thing to HF's serde (Option<T>).
  std::optional<dom::element> non_null_field(dom::element obj, std::string_view key) const {
    auto v = field(obj, key);
    if (!v || v->is_null()) return std::nullopt;
    return v;
  }
  dom::object object(dom::element e, std::string_view where) const {
    dom::object o;
    if (e.get(o) != simdjson::SUCCESS) fail_at(where, "expected a JSON object");
    return o;
  }
  dom::array array(dom::element e, std::string_view where) const {
    dom::array a;
    if (e.get(a) != simdjson::SUCCESS) fail_at(where, "expected a JSON array");
    return a;
  }
  std::string_view string(dom::element e, std::string_view where) const {
    std::string_view s;
    if (e.get(s) != simdjson::SUCCESS) fail_at(where, "expected a string");
    return s;
  }
  bool boolean(dom::element obj, std::string_view key, bool dflt, std::string_view where) const {
    auto v = non_null_field(obj, key);
    if (!v) return dflt;
    bool b;
    if (v->get(b) != simdjson::SUCCESS) fail_at(std::string(where) + "." + std::string(key), "expected true or false");
    return b;
  }
  static std::optional<int32_t> try_id(dom::element e) {
    uint64_t u;
    if (e.get(u) != simdjson::SUCCESS || u > uint64_t(kMaxId)) return std::nullopt;
    return int32_t(u);
  }
  int32_t id(dom::element e, std::string_view where) const {
    const std::optional<int32_t> v = try_id(e);
    if (!v) fail_at(where, "expected a token id (an integer from 0 to " + std::to_string(kMaxId) + ")");
    return *v;
  }
  // The "type" tag of a component, or "" when there is none.
  std::string_view type_of(dom::element e, std::string_view where) const {
    auto t = field(e, "type");
    return t ? string(*t, std::string(where) + ".type") : std::string_view();
  }

  // Caps the id range so a corrupt file cannot make us allocate gigabytes for id tables.
  static constexpr int64_t kMaxId = (int64_t(1) << 24) - 1;

 private:
  const std::string& file_;
};

void load_model(const Json& js, dom::element root, Tokenizer::Impl& im) {
  auto model_el = js.non_null_field(root, "model");
  if (!model_el) js.fail_at("model", "missing; a tokenizer.json must have a \"model\" object");
  const dom::element model = *model_el;
  js.object(model, "model");

  std::string_view type = js.type_of(model, "model");
  if (type.empty()) {
    // Old files omit the tag; HF then recognises the model by its fields.
    if (js.field(model, "merges")) {
      type = "BPE";
    } else {
      js.fail_at("model", "has no \"type\" and no \"merges\": not a BPE model");
    }
  }
  if (type != "BPE") {
    js.fail_at("model.type", "is " + shown(type) +
                                 ": this is a tokenizer.json of another type; only byte-level BPE "
                                 "tokenizers (model.type \"BPE\") are supported");
  }

  // Options that change ids and that we deliberately do not implement.
  if (auto d = js.non_null_field(model, "dropout")) {
    double p = 0;
    if (d->get(p) != simdjson::SUCCESS || p != 0.0)
      js.fail_at("model.dropout", "BPE dropout is not supported (it makes encoding random)");
  }
  for (std::string_view key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (auto v = js.non_null_field(model, key)) {
      if (!js.string(*v, std::string("model.") + std::string(key)).empty())
        js.fail_at(std::string("model.") + std::string(key), "non-empty values are not supported");
    }
  }
  im.fuse_unk = js.boolean(model, "fuse_unk", false, "model");
  im.byte_fallback = js.boolean(model, "byte_fallback", false, "model");
  im.ignore_merges = js.boolean(model, "ignore_merges", false, "model");

  // Vocabulary.
  auto vocab_el = js.non_null_field(model, "vocab");
  if (!vocab_el) js.fail_at("model.vocab", "missing");
  const dom::object vocab = js.object(*vocab_el, "model.vocab");
  // Two passes: ids and sizes first, so that every table is allocated once.
  int64_t max_id = -1;
  size_t key_bytes = 0;
  for (auto [key, value] : vocab) {
    // (Messages are built only on failure: this loop runs 150k times.)
    const std::optional<int32_t> id = Json::try_id(value);
    if (!id) js.id(value, "model.vocab[" + shown(key) + "]");  // throws the message
    max_id = std::max<int64_t>(max_id, *id);
    key_bytes += key.size();
  }
  if (max_id < 0) js.fail_at("model.vocab", "is empty");
  im.vocab.reserve(vocab.size(), key_bytes);
  im.tokens.assign(size_t(max_id + 1), std::string());
  im.flags.assign(size_t(max_id + 1), 0);
  for (auto [key, value] : vocab) {
    const int32_t id = *Json::try_id(value);
    im.vocab.insert_or_assign(key, id);
    im.tokens[size_t(id)] = key;
    im.flags[size_t(id)] = Tokenizer::Impl::kAssigned;
  }

  // Merges: ["a", "b"] pairs (tokenizers >= 0.20) or "a b" strings (older files).
  auto merges_el = js.non_null_field(model, "merges");
  if (!merges_el) js.fail_at("model.merges", "missing");
  const dom::array merges = js.array(*merges_el, "model.merges");
  im.merges.reserve(merges.size());
  std::string joined;
  int32_t rank = 0;
  for (dom::element m : merges) {
    auto where = [&] { return "model.merges[" + std::to_string(rank) + "]"; };
    std::string_view a, b;
    std::string_view line;
    dom::array pair;
    if (m.get(line) == simdjson::SUCCESS) {
      const size_t sp = line.find(' ');
      if (sp == std::string_view::npos || line.find(' ', sp + 1) != std::string_view::npos)
        js.fail_at(where(), shown(line) + " is not of the form \"left right\"");
      a = line.substr(0, sp);
      b = line.substr(sp + 1);
    } else if (m.get(pair) != simdjson::SUCCESS || pair.size() != 2 || pair.at(0).get(a) ||
               pair.at(1).get(b)) {
      js.fail_at(where(), "expected a pair [\"left\", \"right\"] or a string \"left right\"");
    }
    const int32_t ia = im.vocab.find(a), ib = im.vocab.find(b);
    if (ia < 0) js.fail_at(where(), "names a token not in model.vocab: " + shown(a));
    if (ib < 0) js.fail_at(where(), "names a token not in model.vocab: " + shown(b));
    joined.assign(a).append(b);
    const int32_t ij = im.vocab.find(joined);
    if (ij < 0) js.fail_at(where(), "merged token " + shown(joined) + " is not in model.vocab");
    im.merges.insert_or_assign(MergeTable::key(ia, ib), rank, ij);
    ++rank;
  }

  // Single-byte tokens: the BPE alphabet.
  for (unsigned b = 0; b < 256; ++b) {
    im.byte_ids[b] = im.vocab.find(byte_level::byte_to_utf8(uint8_t(b)));
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    im.fallback_ids[b] = im.vocab.find(std::string_view(hex));
  }
  if (auto unk = js.non_null_field(model, "unk_token")) {
    const std::string_view u = js.string(*unk, "model.unk_token");
    im.unk_id = im.vocab.find(u);
    if (im.unk_id < 0) js.fail_at("model.unk_token", shown(u) + " is not in model.vocab");
  }
}

// HF re-derives added-token ids on load (AddedVocabulary::add_tokens): a token already in
// the vocabulary keeps that id, a new one gets the next free id after the vocabulary.
// The file's "id" is only checked (HF warns on mismatch); we refuse a mismatch, since
// it means the file and the model's embedding rows may disagree.
void load_added_tokens(const Json& js, dom::element root, Tokenizer::Impl& im) {
  auto list = js.non_null_field(root, "added_tokens");
  if (!list) return;
  const int64_t model_vocab_size = int64_t(im.vocab.size());
  int64_t max_added = -1;
  size_t index = 0;
  for (dom::element e : js.array(*list, "added_tokens")) {
    const std::string where = "added_tokens[" + std::to_string(index++) + "]";
    js.object(e, where);
    AddedToken t;
    auto content = js.field(e, "content");
    if (!content) js.fail_at(where, "has no \"content\"");
    t.content = std::string(js.string(*content, where + ".content"));
    t.special = js.boolean(e, "special", false, where);
    t.single_word = js.boolean(e, "single_word", false, where);
    t.lstrip = js.boolean(e, "lstrip", false, where);
    t.rstrip = js.boolean(e, "rstrip", false, where);
    t.normalized = js.boolean(e, "normalized", !t.special, where);
    if (t.content.empty()) continue;  // HF ignores empty tokens

    int64_t id;
    if (auto it = im.added_by_content.find(t.content); it != im.added_by_content.end()) {
      id = it->second;
    } else if (const int32_t iv = im.vocab.find(t.content); iv >= 0) {
      id = iv;
    } else {
      id = (max_added < 0) ? model_vocab_size
                           : (max_added >= model_vocab_size ? max_added + 1 : model_vocab_size);
    }
    if (auto file_id = js.field(e, "id")) {
      const int32_t fid = js.id(*file_id, where + ".id");
      if (fid != id) {
        js.fail_at(where, "token " + shown(t.content) + " has id " + std::to_string(fid) +
                              " but HF tokenizers would assign it id " + std::to_string(id) +
                              " (vocabulary and added tokens disagree)");
      }
    }
    if (id > Json::kMaxId) js.fail_at(where + ".id", "too large");
    max_added = std::max(max_added, id);
    t.id = int32_t(id);

    if (size_t(id) >= im.tokens.size()) {
      im.tokens.resize(size_t(id) + 1);
      im.flags.resize(size_t(id) + 1, 0);
    }
    im.tokens[size_t(id)] = t.content;
    // A token once added as special stays special (HF's special_tokens_set).
    const bool was_special = im.flags[size_t(id)] & Tokenizer::Impl::kSpecial;
    im.flags[size_t(id)] = Tokenizer::Impl::kAssigned |
                           ((t.special || was_special) ? Tokenizer::Impl::kSpecial : 0);
    im.added_by_content.insert_or_assign(t.content, t.id);
    // A repeated content replaces the earlier entry's options (HF updates added_tokens_map_r).
    auto same = std::find_if(im.added.begin(), im.added.end(),
                             [&](const AddedToken& o) { return o.content == t.content; });
    if (same != im.added.end()) {
      *same = t;
    } else {
      im.added.push_back(t);
    }
  }
}

void load_normalizer(const Json& js, dom::element root, Tokenizer::Impl& im) {
  auto n = js.non_null_field(root, "normalizer");
  if (!n) return;
  // Sequence nesting is flattened; each element is applied in order.
  std::function<void(dom::element, const std::string&)> add = [&](dom::element e, const std::string& where) {
    const std::string_view type = js.type_of(e, where);
    if (type == "NFC") {
      im.normalizers.push_back(NormalForm::kNFC);
    } else if (type == "NFD") {
      im.normalizers.push_back(NormalForm::kNFD);
    } else if (type == "NFKC") {
      im.normalizers.push_back(NormalForm::kNFKC);
    } else if (type == "NFKD") {
      im.normalizers.push_back(NormalForm::kNFKD);
    } else if (type == "Sequence") {
      auto list = js.field(e, "normalizers");
      if (!list) js.fail_at(where, "Sequence without \"normalizers\"");
      size_t i = 0;
      for (dom::element sub : js.array(*list, where + ".normalizers"))
        add(sub, where + ".normalizers[" + std::to_string(i++) + "]");
    } else {
      js.fail_at(where + ".type", "normalizer " + shown(type) +
                                      " is not supported (supported: NFC, NFD, NFKC, NFKD, a Sequence "
                                      "of these, or null)");
    }
  };
  add(*n, "normalizer");
}

void load_pre_tokenizer(const Json& js, dom::element root, Tokenizer::Impl& im) {
  auto pt = js.non_null_field(root, "pre_tokenizer");
  if (!pt) {
    js.fail_at("pre_tokenizer", "is null; only byte-level BPE is supported, which needs a ByteLevel "
                                "pre-tokenizer");
  }
  std::vector<std::pair<dom::element, std::string>> steps;
  if (js.type_of(*pt, "pre_tokenizer") == "Sequence") {
    auto list = js.field(*pt, "pretokenizers");
    if (!list) js.fail_at("pre_tokenizer", "Sequence without \"pretokenizers\"");
    size_t i = 0;
    for (dom::element e : js.array(*list, "pre_tokenizer.pretokenizers"))
      steps.emplace_back(e, "pre_tokenizer.pretokenizers[" + std::to_string(i++) + "]");
  } else {
    steps.emplace_back(*pt, "pre_tokenizer");
  }

  bool seen_byte_level = false;
  for (const auto& [e, where] : steps) {
    const std::string_view type = js.type_of(e, where);
    if (seen_byte_level) {
      // Our BPE maps bytes to the byte-level alphabet itself, so ByteLevel must be last.
      js.fail_at(where, "a pre-tokenizer after ByteLevel is not supported");
    }
    if (type == "Split") {
      SplitStep step;
      auto pattern = js.field(e, "pattern");
      if (!pattern) js.fail_at(where, "Split without \"pattern\"");
      bool literal = false;
      std::string_view text;
      if (auto r = js.field(*pattern, "Regex")) {
        text = js.string(*r, where + ".pattern.Regex");
      } else if (auto s = js.field(*pattern, "String")) {
        text = js.string(*s, where + ".pattern.String");
        literal = true;
      } else {
        js.fail_at(where + ".pattern", "expected {\"Regex\": ...} or {\"String\": ...}");
      }
      if (!text.empty()) step.regex = std::make_unique<Regex>(text, literal, js.file(), where + ".pattern");
      auto behavior_el = js.field(e, "behavior");
      const std::string_view behavior = behavior_el ? js.string(*behavior_el, where + ".behavior") : "";
      if (behavior == "Isolated") {
        step.behavior = SplitBehavior::kIsolated;
      } else if (behavior == "Removed") {
        step.behavior = SplitBehavior::kRemoved;
      } else if (behavior == "MergedWithPrevious") {
        step.behavior = SplitBehavior::kMergedWithPrevious;
      } else if (behavior == "MergedWithNext") {
        step.behavior = SplitBehavior::kMergedWithNext;
      } else if (behavior == "Contiguous") {
        step.behavior = SplitBehavior::kContiguous;
      } else {
        js.fail_at(where + ".behavior", "unknown split behavior " + shown(behavior));
      }
      step.invert = js.boolean(e, "invert", false, where);
      im.splits.push_back(std::move(step));
    } else if (type == "ByteLevel") {
      seen_byte_level = true;
      im.prefix_space = js.boolean(e, "add_prefix_space", true, where);
      if (js.boolean(e, "use_regex", true, where)) {
        im.byte_level_regex = std::make_unique<Regex>(kGpt2Pattern, false, js.file(), where);
      }
    } else {
      js.fail_at(where + ".type", "pre-tokenizer " + shown(type) +
                                      " is not supported (supported: ByteLevel, or a Sequence of Split "
                                      "steps ending with ByteLevel)");
    }
  }
  if (!seen_byte_level) {
    js.fail_at("pre_tokenizer", "has no ByteLevel step; only byte-level BPE tokenizers are supported");
  }
}


void load_decoder_and_post_processor(const Json& js, dom::element root) {
  auto dec = js.non_null_field(root, "decoder");
  if (!dec) {
    js.fail_at("decoder", "is null; a byte-level BPE tokenizer needs the ByteLevel decoder (HF would "
                          "join the tokens with spaces)");
  }
  const std::string_view dtype = js.type_of(*dec, "decoder");
  if (dtype != "ByteLevel") {
    js.fail_at("decoder.type", "decoder " + shown(dtype) + " is not supported (only ByteLevel)");
  }
  // The ByteLevel post-processor only adjusts offsets; anything that inserts tokens
  // (TemplateProcessing, RobertaProcessing, ...) would change HF's default encode().
  if (auto pp = js.non_null_field(root, "post_processor")) {
    const std::string_view ptype = js.type_of(*pp, "post_processor");
    if (ptype != "ByteLevel") {
      js.fail_at("post_processor.type", "post-processor " + shown(ptype) +
                                            " is not supported (only ByteLevel or null; others add "
                                            "tokens to encode())");
    }
  }
  // Both would change what encode() returns in HF.
  for (std::string_view key : {"truncation", "padding"}) {
    if (js.non_null_field(root, key)) js.fail_at(key, "must be null (truncation/padding are not supported)");
  }
}

void build_token_bytes(Tokenizer::Impl& im) {
  // HF's ByteLevel decoder maps each token through the byte-level alphabet, or takes its
  // UTF-8 as is when some character is outside the alphabet (typically an added token
  // written in plain text, e.g. a CJK one).
  im.bytes.resize(im.tokens.size());
  for (size_t id = 0; id < im.tokens.size(); ++id) {
    if (!(im.flags[id] & Tokenizer::Impl::kAssigned)) continue;
    std::optional<std::string> b = byte_level::decode(im.tokens[id]);
    im.bytes[id] = b ? std::move(*b) : im.tokens[id];
  }
}

}  // namespace

Tokenizer Tokenizer::load(const std::filesystem::path& tokenizer_json) {
  auto im = std::make_shared<Impl>();
  im->path = tokenizer_json;
  im->file = tokenizer_json.string();
  const std::string& file = im->file;

  std::error_code ec;
  const auto status = std::filesystem::status(tokenizer_json, ec);
  if (ec || !std::filesystem::exists(status)) fail(file, "no such file (expected a HF tokenizer.json)");
  if (std::filesystem::is_directory(status)) fail(file, "is a directory, not a tokenizer.json file");

  simdjson::padded_string text;
  if (auto err = simdjson::padded_string::load(file).get(text)) {
    fail(file, std::string("cannot read the file: ") + simdjson::error_message(err));
  }
  dom::parser parser;
  dom::element root;
  if (auto err = parser.parse(text).get(root)) {
    fail(file, std::string("malformed JSON (") + simdjson::error_message(err) +
                   "); is the file complete?");
  }
  const Json js(file);
  if (!root.is_object()) fail(file, "malformed tokenizer.json: the top level is not a JSON object");
  if (auto v = js.non_null_field(root, "version")) {
    const std::string_view version = js.string(*v, "version");
    if (version != "1.0") js.fail_at("version", "unknown tokenizer.json version " + shown(version));
  }

  load_model(js, root, *im);
  load_added_tokens(js, root, *im);
  load_normalizer(js, root, *im);
  if (std::find(im->normalizers.begin(), im->normalizers.end(), NormalForm::kNFC) != im->normalizers.end())
    nfc_inert_table();  // build it now rather than during the first encode()
  load_pre_tokenizer(js, root, *im);
  load_decoder_and_post_processor(js, root);
  build_token_bytes(*im);

  // Tokens with normalized=true are matched on normalized text, so their patterns are
  // normalized too (HF refresh_added_tokens).
  for (size_t i = 0; i < im->added.size(); ++i) {
    const AddedToken& t = im->added[i];
    if (t.normalized) {
      std::string buffer;
      im->normalized_trie.insert(im->normalize(t.content, buffer), int32_t(i));
    } else {
      im->raw_trie.insert(t.content, int32_t(i));
    }
  }
  return Tokenizer(std::move(im));
}

}  // namespace ultraserve
