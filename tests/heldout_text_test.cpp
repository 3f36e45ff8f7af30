// Held-out prompts (model/heldout_text): the measurements' prompts come from documents spread
// over the file, so a file grouped by source gives every source its share, not the first
// source's documents only.

#include "model/heldout_text.h"

#include <gtest/gtest.h>

#include <map>

#include "tests/test_support.h"

namespace ultraserve {
namespace {

const Tokenizer& shipped_tokenizer() {
  static const Tokenizer t = Tokenizer::load(testing::source_dir() / "models/default/tokenizer.json");
  return t;
}

// Ten documents from each of three sources, grouped as build_corpus.py writes them; the third
// source's lines name none.
std::filesystem::path grouped_file(const testing::ScratchDir& dir) {
  std::string lines;
  for (const char* source : {"bible", "dictionary", ""})
    for (int i = 0; i < 10; ++i) {
      const std::string text = std::string(source) + " document " + std::to_string(i) +
                               " says the same few words again and again, so that it is long enough";
      lines += *source ? "{\"source\": \"" + std::string(source) + "\", \"text\": \"" + text + "\"}\n"
                       : "{\"text\": \"" + text + "\"}\n\n";
    }
  testing::write_file(dir / "heldout.jsonl", lines);
  return dir / "heldout.jsonl";
}

TEST(HeldoutText, ReadsSourceAndText) {
  testing::ScratchDir dir;
  const auto documents = read_documents(grouped_file(dir));
  ASSERT_EQ(documents.size(), 30u);  // blank lines skipped
  EXPECT_EQ(documents[0].source, "bible");
  EXPECT_EQ(documents[29].source, "");
  EXPECT_EQ(documents[12].text.rfind("dictionary document 2 ", 0), 0u);
}

TEST(HeldoutText, PromptsAreSpreadOverTheSources) {
  testing::ScratchDir dir;
  const auto documents = read_documents(grouped_file(dir));
  const auto prompts = heldout_prompts(documents, shipped_tokenizer(), 6, 5, PromptPlace::start);
  ASSERT_EQ(prompts.size(), 6u);
  std::map<std::string, int> per_source;
  for (const auto& p : prompts) {
    ++per_source[p.source];
    EXPECT_EQ(p.ids.size(), 5u);
  }
  EXPECT_EQ(per_source, (std::map<std::string, int>{{"", 2}, {"bible", 2}, {"dictionary", 2}}));
  // A start prompt is the document's first tokens.
  const std::vector<int32_t> first = shipped_tokenizer().encode(documents[0].text);
  EXPECT_EQ(prompts[0].ids, std::vector<int32_t>(first.begin(), first.begin() + 5));
}

TEST(HeldoutText, MiddlePromptsSkipShortDocumentsAndTakeTheMiddle) {
  testing::ScratchDir dir;
  testing::write_file(dir / "h.jsonl", "{\"source\": \"a\", \"text\": \"short\"}\n"
                                       "{\"source\": \"b\", \"text\": \"one two three four five six seven eight nine ten\"}\n");
  const auto documents = read_documents(dir / "h.jsonl");
  const auto prompts = heldout_prompts(documents, shipped_tokenizer(), 5, 3, PromptPlace::middle);
  ASSERT_EQ(prompts.size(), 1u);  // fewer long documents than asked: all of them
  EXPECT_EQ(prompts[0].source, "b");
  const std::vector<int32_t> ids = shipped_tokenizer().encode(documents[1].text);
  const size_t begin = ids.size() / 2 - 1;
  EXPECT_EQ(prompts[0].ids, std::vector<int32_t>(ids.begin() + begin, ids.begin() + begin + 3));
}

TEST(HeldoutText, BadLinesNameTheirPlace) {
  testing::ScratchDir dir;
  testing::write_file(dir / "bad.jsonl", "{\"text\": \"fine\"}\n{\"source\": \"x\"}\n");
  try {
    read_documents(dir / "bad.jsonl");
    FAIL() << "a line without text was read";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl:2:"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ultraserve
