#include "model/tokenizer/onig_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>

#include "model/error.h"
#include "model/tokenizer/load_error.h"
#include "model/tokenizer/unicode.h"

namespace ultraserve::tokenizer_detail {
namespace {

// Oniguruma syntax -> PCRE2 syntax, as described in onig_regex.h.
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

}  // namespace

Regex::Regex(std::string_view pattern, bool literal, const std::string& file, std::string_view where) {
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

Regex::~Regex() {
  pcre2_match_context_free(mctx_);
  pcre2_code_free(code_);
}

void Regex::find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
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

}  // namespace ultraserve::tokenizer_detail
