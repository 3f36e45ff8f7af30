#include "model/tokenizer/normalizer.h"

#include <utf8proc.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "model/tokenizer/unicode.h"

namespace ultraserve::tokenizer_detail {
namespace {

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

}  // namespace

std::string_view apply_normalizers(std::span<const NormalForm> forms, std::string_view s,
                                   std::string& buffer) {
  for (NormalForm f : forms) {
    if (!may_change(f, s)) continue;
    buffer = apply_normal_form(f, s);
    s = buffer;
  }
  return s;
}

void build_nfc_inert_table() { nfc_inert_table(); }

}  // namespace ultraserve::tokenizer_detail
