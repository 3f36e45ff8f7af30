#pragma once
// The browser page served at GET /. Its source is net/page.html; the build embeds it
// (net/embed_page.cmake), so the binary needs no files at run time.

#include <string_view>

namespace ultraserve {

std::string_view static_page_html();

}  // namespace ultraserve
