#pragma once
// Normalizers (HF normalizers::unicode): the four Unicode normal forms, implemented by
// utf8proc, with a fast path for the common text they provably leave unchanged.

#include <span>
#include <string>
#include <string_view>

namespace ultraserve::tokenizer_detail {

enum class NormalForm { kNFC, kNFD, kNFKC, kNFKD };

// `forms` applied to `s` (valid UTF-8) in order: `s` itself when nothing changes (the
// common case), else a view of `buffer`.
std::string_view apply_normalizers(std::span<const NormalForm> forms, std::string_view s,
                                   std::string& buffer);

// Builds the NFC fast-path table (once per process, a few ms) now rather than during the
// first encode() that needs it.
void build_nfc_inert_table();

}  // namespace ultraserve::tokenizer_detail
