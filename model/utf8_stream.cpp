#include "model/utf8_stream.h"

#include "model/tokenizer.h"

namespace ultraserve {
namespace utf8 {

Step next(std::string_view s) {
  const auto b0 = static_cast<unsigned char>(s[0]);
  if (b0 < 0x80) return {Kind::kValid, 1};

  // Table 3-7 of the Unicode standard: the lead byte fixes the length and the allowed
  // range of the *second* byte (this is what excludes overlongs, surrogates and values
  // above U+10FFFF); every later byte is a plain continuation byte 80..BF.
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // no overlongs
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;  // no overlongs
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {Kind::kInvalid, 1};  // a stray continuation byte, C0, C1 or F5..FF
  }

  for (size_t i = 1; i < len; ++i) {
    if (i == s.size()) return {Kind::kIncomplete, i};
    const auto b = static_cast<unsigned char>(s[i]);
    const bool ok = (i == 1) ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    // The maximal subpart is what was accepted so far; the offending byte starts anew.
    if (!ok) return {Kind::kInvalid, i};
  }
  return {Kind::kValid, len};
}

bool is_valid(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    // ASCII fast path: the bulk of prompts.
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const Step st = next(s.substr(i));
    if (st.kind != Kind::kValid) return false;
    i += st.len;
  }
  return true;
}

void append_lossy(std::string& out, std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t run = i;  // copy runs of ASCII in one append
    while (run < s.size() && static_cast<unsigned char>(s[run]) < 0x80) ++run;
    out.append(s.data() + i, run - i);
    i = run;
    if (i == s.size()) break;
    const Step st = next(s.substr(i));
    if (st.kind == Kind::kValid) {
      out.append(s.data() + i, st.len);
    } else {
      // An ill-formed subpart and a truncated character at the end both count as one.
      out.append(kReplacementChar);
    }
    i += st.len;
  }
}

}  // namespace utf8

std::string StreamingDetokenizer::push(int32_t id) {
  // token_bytes() validates the id, so a bad id throws even when it would be skipped.
  const std::string_view bytes = tokenizer_.token_bytes(id);
  if (skip_special_tokens_ && tokenizer_.is_special(id)) return {};
  pending_.append(bytes);

  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    const utf8::Step st = utf8::next(std::string_view(pending_).substr(i));
    // An incomplete tail may still be completed by the next token: hold it. This is the
    // only place where the streaming and the one-shot decode could differ, and they do
    // not: the maximal-subpart rule never needs to look past the end of a character.
    if (st.kind == utf8::Kind::kIncomplete) break;
    if (st.kind == utf8::Kind::kValid) {
      out.append(pending_, i, st.len);
    } else {
      out.append(utf8::kReplacementChar);
    }
    i += st.len;
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamingDetokenizer::flush() {
  std::string out;
  utf8::append_lossy(out, pending_);
  pending_.clear();
  return out;
}

}  // namespace ultraserve
