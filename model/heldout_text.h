#pragma once
// Held-out text as the training tools write it (data/train/corpus/heldout.jsonl: one
// {"source": ..., "text": ...} a line), and the prompts measurements take from it.

#include <cstdint>
#include <string>
#include <vector>

#include "model/tokenizer.h"

namespace ultraserve {

struct HeldoutDocument {
  std::string source;  // the package it came from ("" when the line names none)
  std::string text;
};

// Every line of a JSONL file; blank lines are skipped. A bad line names FILE:LINE.
std::vector<HeldoutDocument> read_documents(const std::string& file);

// Where in a document a prompt is taken: its first tokens (as a server sees a fresh request), or
// the middle of a document at least twice the prompt's length (continuing a text, as training's
// random windows do).
enum class PromptPlace { start, middle };

struct HeldoutPrompt {
  std::string source;
  std::vector<int32_t> ids;
};

// `count` prompts of `length` tokens, from documents spread evenly over those long enough. The
// file is grouped by source, so a spread takes each source about as often as the held-out set
// holds it; the first `count` documents would all be one source (the Bible, in ours).
std::vector<HeldoutPrompt> heldout_prompts(const std::vector<HeldoutDocument>& documents, const Tokenizer& tokenizer,
                                           size_t count, size_t length, PromptPlace place);

}  // namespace ultraserve
