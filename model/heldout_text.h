#pragma once
// Held-out text as the training tools write it (data/train/corpus/heldout.jsonl: one
// {"source": ..., "text": ...} a line), and the prompts measurements take from it.

#include <cstdint>
#include <string>
#include <vector>

#include "model/tokenizer.h"

namespace ultraserve {

// The "text" of every line of a JSONL file; blank lines are skipped. A bad line names FILE:LINE.
std::vector<std::string> read_documents(const std::string& file);

// The first `length` tokens of each of the first `count` documents that have that many: prompts
// as a server sees them, from the start of a document.
std::vector<std::vector<int32_t>> document_start_prompts(const std::vector<std::string>& documents,
                                                         const Tokenizer& tokenizer, size_t count, size_t length);

// `length` tokens from the middle of each of the first `count` documents that have at least twice
// that many: prompts that continue a text, as training's random windows are.
std::vector<std::vector<int32_t>> document_middle_prompts(const std::vector<std::string>& documents,
                                                          const Tokenizer& tokenizer, size_t count, size_t length);

}  // namespace ultraserve
