#include "model/heldout_text.h"

#include <simdjson.h>

#include <sstream>
#include <stdexcept>

#include "model/model_config.h"

namespace ultraserve {

std::vector<HeldoutDocument> read_documents(const std::string& file) {
  std::istringstream lines(read_text_file(file));
  simdjson::dom::parser parser;
  std::vector<HeldoutDocument> documents;
  std::string line;
  for (int number = 1; std::getline(lines, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = file + ":" + std::to_string(number) + ": ";
    simdjson::dom::object document;
    std::string_view text, source;
    if (auto err = parser.parse(line).get(document))
      throw std::runtime_error(where + "malformed JSON (" + simdjson::error_message(err) + ")");
    if (document["text"].get(text)) throw std::runtime_error(where + "no string field \"text\"");
    if (document["source"].get(source)) source = {};
    documents.push_back({std::string(source), std::string(text)});
  }
  if (documents.empty()) throw std::runtime_error(file + ": no documents");
  return documents;
}

std::vector<HeldoutPrompt> heldout_prompts(const std::vector<HeldoutDocument>& documents, const Tokenizer& tokenizer,
                                           size_t count, size_t length, PromptPlace place) {
  const size_t needed = place == PromptPlace::start ? length : 2 * length;
  std::vector<HeldoutPrompt> candidates;
  for (const HeldoutDocument& d : documents) {
    const std::vector<int32_t> ids = tokenizer.encode(d.text);
    if (ids.size() < needed) continue;
    const size_t begin = place == PromptPlace::start ? 0 : ids.size() / 2 - length / 2;
    candidates.push_back({d.source, {ids.begin() + begin, ids.begin() + begin + length}});
  }
  if (candidates.size() <= count) return candidates;
  std::vector<HeldoutPrompt> prompts;
  for (size_t k = 0; k < count; ++k) prompts.push_back(std::move(candidates[k * candidates.size() / count]));
  return prompts;
}

}  // namespace ultraserve
