#pragma once
// Regex: PCRE2 standing in for Oniguruma, the engine HF tokenizers uses (SysRegex).
//
// Tokenizer patterns are written for Oniguruma; the two engines agree on the constructs
// these patterns use (alternation, classes, \p{L}/\p{N}, (?i:...), (?!...)) once PCRE2
// runs with PCRE2_UTF | PCRE2_UCP, except for `\s`, which we rewrite to the explicit
// White_Space class of unicode.h (Oniguruma's doc/RE: 9-D, 85, Zs, Zl, Zp), and `\h`/`\w`,
// which mean other things in the two engines. Oniguruma's `\uHHHH` becomes PCRE2's
// `\x{HHHH}`, and ^/$ are line anchors in Oniguruma's Ruby syntax, hence PCRE2_MULTILINE.
// Not translated, as no known tokenizer uses them: `\b` (follows PCRE2's \w), negated
// types inside classes, nested classes / `&&`, and Ruby's (?m) (= PCRE2's (?s)).

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// The types pcre2.h names pcre2_code and pcre2_match_context when PCRE2_CODE_UNIT_WIDTH
// is 8; declared here so that only onig_regex.cpp includes pcre2.h.
struct pcre2_real_code_8;
struct pcre2_real_match_context_8;

namespace ultraserve::tokenizer_detail {

class Regex {
 public:
  // `literal`: match `pattern` as a plain string (HF's Split with {"String": ...}).
  // Throws ModelError ("<file>: <where>: invalid regex ...") when PCRE2 cannot compile it.
  Regex(std::string_view pattern, bool literal, const std::string& file, std::string_view where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends every match as [start, end), iterating like the Rust `onig` crate's
  // find_iter (which HF uses): after a match the search resumes at its end, and an empty
  // match right where the previous match ended is skipped by advancing one character.
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const;

 private:
  pcre2_real_code_8* code_ = nullptr;
  pcre2_real_match_context_8* mctx_ = nullptr;
};

}  // namespace ultraserve::tokenizer_detail
