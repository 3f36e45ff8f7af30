#include "model/heldout_text.h"

#include <simdjson.h>

#include <sstream>
#include <stdexcept>

#include "model/model_config.h"

namespace ultraserve {

std::vector<std::string> read_documents(const std::string& file) {
  std::istringstream lines(read_text_file(file));
  simdjson::dom::parser parser;
  std::vector<std::string> documents;
  std::string line;
  for (int number = 1; std::getline(lines, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = file + ":" + std::to_string(number) + ": ";
    simdjson::dom::object document;
    std::string_view text;
    if (auto err = parser.parse(line).get(document))
      throw std::runtime_error(where + "malformed JSON (" + simdjson::error_message(err) + ")");
    if (document["text"].get(text)) throw std::runtime_error(where + "no string field \"text\"");
    documents.emplace_back(text);
  }
  if (documents.empty()) throw std::runtime_error(file + ": no documents");
  return documents;
}

std::vector<std::vector<int32_t>> document_start_prompts(const std::vector<std::string>& documents,
                                                         const Tokenizer& tokenizer, size_t count, size_t length) {
  std::vector<std::vector<int32_t>> prompts;
  for (size_t i = 0; i < documents.size() && prompts.size() < count; ++i) {
    std::vector<int32_t> ids = tokenizer.encode(documents[i]);
    if (ids.size() >= length) prompts.emplace_back(ids.begin(), ids.begin() + length);
  }
  return prompts;
}

std::vector<std::vector<int32_t>> document_middle_prompts(const std::vector<std::string>& documents,
                                                          const Tokenizer& tokenizer, size_t count, size_t length) {
  std::vector<std::vector<int32_t>> prompts;
  for (size_t i = 0; i < documents.size() && prompts.size() < count; ++i) {
    const std::vector<int32_t> ids = tokenizer.encode(documents[i]);
    if (ids.size() < 2 * length) continue;
    const size_t begin = ids.size() / 2 - length / 2;
    prompts.emplace_back(ids.begin() + begin, ids.begin() + begin + length);
  }
  return prompts;
}

}  // namespace ultraserve
