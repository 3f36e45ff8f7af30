// Tokenizer::load: reads a HF tokenizer.json into Tokenizer::Impl, refusing (with a
// ModelError naming the file and the JSON path) everything that would make our ids
// differ from HF's.

#include "model/tokenizer.h"

#include <simdjson.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "model/byte_level.h"
#include "model/tokenizer/impl.h"
#include "model/tokenizer/load_error.h"

namespace ultraserve {

using namespace tokenizer_detail;

namespace {

// ByteLevel's own split (use_regex): GPT-2's pattern.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace dom = simdjson::dom;

// Small accessors that turn every shape problem into "<file>: <where>: <problem>".
class Json {
 public:
  explicit Json(const std::string& file) : file_(file) {}
  const std::string& file() const { return file_; }

  [[noreturn]] void fail_at(std::string_view where, const std::string& problem) const {
    fail(file_, std::string(where) + ": " + problem);
  }

  std::optional<dom::element> field(dom::element obj, std::string_view key) const {
    dom::element v;
    if (obj.at_key(key).get(v) != simdjson::SUCCESS) return std::nullopt;
    return v;
  }
  // Missing and null are the same thing to HF's serde (Option<T>).
  std::optional<dom::element> non_null_field(dom::element obj, std::string_view key) const {
    auto v = field(obj, key);
    if (!v || v->is_null()) return std::nullopt;
    return v;
  }
  dom::object object(dom::element e, std::string_view where) const {
    dom::object o;
    if (e.get(o) != simdjson::SUCCESS) fail_at(where, "expected a JSON object");
    return o;
  }
  dom::array array(dom::element e, std::string_view where) const {
    dom::array a;
    if (e.get(a) != simdjson::SUCCESS) fail_at(where, "expected a JSON array");
    return a;
  }
  std::string_view string(dom::element e, std::string_view where) const {
    std::string_view s;
    if (e.get(s) != simdjson::SUCCESS) fail_at(where, "expected a string");
    return s;
  }
  bool boolean(dom::element obj, std::string_view key, bool dflt, std::string_view where) const {
    auto v = non_null_field(obj, key);
    if (!v) return dflt;
    bool b;
    if (v->get(b) != simdjson::SUCCESS) fail_at(std::string(where) + "." + std::string(key), "expected true or false");
    return b;
  }
  static std::optional<int32_t> try_id(dom::element e) {
    uint64_t u;
    if (e.get(u) != simdjson::SUCCESS || u > uint64_t(kMaxId)) return std::nullopt;
    return int32_t(u);
  }
  int32_t id(dom::element e, std::string_view where) const {
    const std::optional<int32_t> v = try_id(e);
    if (!v) fail_at(where, "expected a token id (an integer from 0 to " + std::to_string(kMaxId) + ")");
    return *v;
  }
  // The "type" tag of a component, or "" when there is none.
  std::string_view type_of(dom::element e, std::string_view where) const {
    auto t = field(e, "type");
    return t ? string(*t, std::string(where) + ".type") : std::string_view();
  }

  // Caps the id range so a corrupt file cannot make us allocate gigabytes for id tables.
  static constexpr int64_t kMaxId = (int64_t(1) << 24) - 1;

 private:
  const std::string& file_;
};

void load_model(const Json& js, dom::element root, Tokenizer::Impl& im) {
  auto model_el = js.non_null_field(root, "model");
  if (!model_el) js.fail_at("model", "missing; a tokenizer.json must have a \"model\" object");
  const dom::element model = *model_el;
  js.object(model, "model");

  std::string_view type = js.type_of(model, "model");
  if (type.empty()) {
    // Old files omit the tag; HF then recognises the model by its fields.
    if (js.field(model, "merges")) {
      type = "BPE";
    } else {
      js.fail_at("model", "has no \"type\" and no \"merges\": not a BPE model");
    }
  }
  if (type != "BPE") {
    js.fail_at("model.type", "is " + shown(type) +
                                 ": this is a tokenizer.json of another type; only byte-level BPE "
                                 "tokenizers (model.type \"BPE\") are supported");
  }

  // Options that change ids and that we deliberately do not implement.
  if (auto d = js.non_null_field(model, "dropout")) {
    double p = 0;
    if (d->get(p) != simdjson::SUCCESS || p != 0.0)
      js.fail_at("model.dropout", "BPE dropout is not supported (it makes encoding random)");
  }
  for (std::string_view key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (auto v = js.non_null_field(model, key)) {
      if (!js.string(*v, std::string("model.") + std::string(key)).empty())
        js.fail_at(std::string("model.") + std::string(key), "non-empty values are not supported");
    }
  }
  im.bpe.fuse_unk = js.boolean(model, "fuse_unk", false, "model");
  im.bpe.byte_fallback = js.boolean(model, "byte_fallback", false, "model");
  im.bpe.ignore_merges = js.boolean(model, "ignore_merges", false, "model");

  // Vocabulary.
  auto vocab_el = js.non_null_field(model, "vocab");
  if (!vocab_el) js.fail_at("model.vocab", "missing");
  const dom::object vocab = js.object(*vocab_el, "model.vocab");
  // Two passes: ids and sizes first, so that every table is allocated once.
  int64_t max_id = -1;
  size_t key_bytes = 0;
  for (auto [key, value] : vocab) {
    // (Messages are built only on failure: this loop runs 150k times.)
    const std::optional<int32_t> id = Json::try_id(value);
    if (!id) js.id(value, "model.vocab[" + shown(key) + "]");  // throws the message
    max_id = std::max<int64_t>(max_id, *id);
    key_bytes += key.size();
  }
  if (max_id < 0) js.fail_at("model.vocab", "is empty");
  im.bpe.vocab.reserve(vocab.size(), key_bytes);
  im.tokens.assign(size_t(max_id + 1), std::string());
  im.flags.assign(size_t(max_id + 1), 0);
  for (auto [key, value] : vocab) {
    const int32_t id = *Json::try_id(value);
    im.bpe.vocab.insert_or_assign(key, id);
    im.tokens[size_t(id)] = key;
    im.flags[size_t(id)] = Tokenizer::Impl::kAssigned;
  }

  // Merges: ["a", "b"] pairs (tokenizers >= 0.20) or "a b" strings (older files).
  auto merges_el = js.non_null_field(model, "merges");
  if (!merges_el) js.fail_at("model.merges", "missing");
  const dom::array merges = js.array(*merges_el, "model.merges");
  im.bpe.merges.reserve(merges.size());
  std::string joined;
  int32_t rank = 0;
  for (dom::element m : merges) {
    auto where = [&] { return "model.merges[" + std::to_string(rank) + "]"; };
    std::string_view a, b;
    std::string_view line;
    dom::array pair;
    if (m.get(line) == simdjson::SUCCESS) {
      const size_t sp = line.find(' ');
      if (sp == std::string_view::npos || line.find(' ', sp + 1) != std::string_view::npos)
        js.fail_at(where(), shown(line) + " is not of the form \"left right\"");
      a = line.substr(0, sp);
      b = line.substr(sp + 1);
    } else if (m.get(pair) != simdjson::SUCCESS || pair.size() != 2 || pair.at(0).get(a) ||
               pair.at(1).get(b)) {
      js.fail_at(where(), "expected a pair [\"left\", \"right\"] or a string \"left right\"");
    }
    const int32_t ia = im.bpe.vocab.find(a), ib = im.bpe.vocab.find(b);
    if (ia < 0) js.fail_at(where(), "names a token not in model.vocab: " + shown(a));
    if (ib < 0) js.fail_at(where(), "names a token not in model.vocab: " + shown(b));
    joined.assign(a).append(b);
    const int32_t ij = im.bpe.vocab.find(joined);
    if (ij < 0) js.fail_at(where(), "merged token " + shown(joined) + " is not in model.vocab");
    im.bpe.merges.insert_or_assign(MergeTable::key(ia, ib), rank, ij);
    ++rank;
  }

  // Single-byte tokens: the BPE alphabet.
  for (unsigned b = 0; b < 256; ++b) {
    im.bpe.byte_ids[b] = im.bpe.vocab.find(byte_level::byte_to_utf8(uint8_t(b)));
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    im.bpe.fallback_ids[b] = im.bpe.vocab.find(std::string_view(hex));
  }
  if (auto unk = js.non_null_field(model, "unk_token")) {
    const std::string_view u = js.string(*unk, "model.unk_token");
    im.bpe.unk_id = im.bpe.vocab.find(u);
    if (im.bpe.unk_id < 0) js.fail_at("model.unk_token", shown(u) + " is not in model.vocab");
  }
}

// HF re-derives added-token ids on load (AddedVocabulary::add_tokens): a token already in
// the vocabulary keeps that id, a new one gets the next free id after the vocabulary.
// The file's "id" is only checked (HF warns on mismatch); we refuse a mismatch, since
// it means the file and the model's embedding rows may disagree.
void load_added_tokens(const Json& js, dom::element root, Tokenizer::Impl& im) {
  auto list = js.non_null_field(root, "added_tokens");
  if (!list) return;
  const int64_t model_vocab_size = int64_t(im.bpe.vocab.size());
  int64_t max_added = -1;
  size_t index = 0;
  for (dom::element e : js.array(*list, "added_tokens")) {
    const std::string where = "added_tokens[" + std::to_string(index++) + "]";
    js.object(e, where);
    AddedToken t;
    auto content = js.field(e, "content");
    if (!content) js.fail_at(where, "has no \"content\"");
    t.content = std::string(js.string(*content, where + ".content"));
    t.special = js.boolean(e, "special", false, where);
    t.single_word = js.boolean(e, "single_word", false, where);
    t.lstrip = js.boolean(e, "lstrip", false, where);
    t.rstrip = js.boolean(e, "rstrip", false, where);
    t.normalized = js.boolean(e, "normalized", !t.special, where);
    if (t.content.empty()) continue;  // HF ignores empty tokens

    int64_t id;
    if (auto it = im.added_by_content.find(t.content); it != im.added_by_content.end()) {
      id = it->second;
    } else if (const int32_t iv = im.bpe.vocab.find(t.content); iv >= 0) {
      id = iv;
    } else {
      id = (max_added < 0) ? model_vocab_size
                           : (max_added >= model_vocab_size ? max_added + 1 : model_vocab_size);
    }
    if (auto file_id = js.field(e, "id")) {
      const int32_t fid = js.id(*file_id, where + ".id");
      if (fid != id) {
        js.fail_at(where, "token " + shown(t.content) + " has id " + std::to_string(fid) +
                              " but HF tokenizers would assign it id " + std::to_string(id) +
                              " (vocabulary and added tokens disagree)");
      }
    }
    if (id > Json::kMaxId) js.fail_at(where + ".id", "too large");
    max_added = std::max(max_added, id);
    t.id = int32_t(id);

    if (size_t(id) >= im.tokens.size()) {
      im.tokens.resize(size_t(id) + 1);
      im.flags.resize(size_t(id) + 1, 0);
    }
    im.tokens[size_t(id)] = t.content;
    // A token once added as special stays special (HF's special_tokens_set).
    const bool was_special = im.flags[size_t(id)] & Tokenizer::Impl::kSpecial;
    im.flags[size_t(id)] = Tokenizer::Impl::kAssigned |
                           ((t.special || was_special) ? Tokenizer::Impl::kSpecial : 0);
    im.added_by_content.insert_or_assign(t.content, t.id);
    // A repeated content replaces the earlier entry's options (HF updates added_tokens_map_r).
    auto same = std::find_if(im.added.begin(), im.added.end(),
                             [&](const AddedToken& o) { return o.content == t.content; });
    if (same != im.added.end()) {
      *same = t;
    } else {
      im.added.push_back(t);
    }
  }
}

void load_normalizer(const Json& js, dom::element root, Tokenizer::Impl& im) {
  auto n = js.non_null_field(root, "normalizer");
  if (!n) return;
  // Sequence nesting is flattened; each element is applied in order.
  std::function<void(dom::element, const std::string&)> add = [&](dom::element e, const std::string& where) {
    const std::string_view type = js.type_of(e, where);
    if (type == "NFC") {
      im.normalizers.push_back(NormalForm::kNFC);
    } else if (type == "NFD") {
      im.normalizers.push_back(NormalForm::kNFD);
    } else if (type == "NFKC") {
      im.normalizers.push_back(NormalForm::kNFKC);
    } else if (type == "NFKD") {
      im.normalizers.push_back(NormalForm::kNFKD);
    } else if (type == "Sequence") {
      auto list = js.field(e, "normalizers");
      if (!list) js.fail_at(where, "Sequence without \"normalizers\"");
      size_t i = 0;
      for (dom::element sub : js.array(*list, where + ".normalizers"))
        add(sub, where + ".normalizers[" + std::to_string(i++) + "]");
    } else {
      js.fail_at(where + ".type", "normalizer " + shown(type) +
                                      " is not supported (supported: NFC, NFD, NFKC, NFKD, a Sequence "
                                      "of these, or null)");
    }
  };
  add(*n, "normalizer");
}

void load_pre_tokenizer(const Json& js, dom::element root, Tokenizer::Impl& im) {
  auto pt = js.non_null_field(root, "pre_tokenizer");
  if (!pt) {
    js.fail_at("pre_tokenizer", "is null; only byte-level BPE is supported, which needs a ByteLevel "
                                "pre-tokenizer");
  }
  std::vector<std::pair<dom::element, std::string>> steps;
  if (js.type_of(*pt, "pre_tokenizer") == "Sequence") {
    auto list = js.field(*pt, "pretokenizers");
    if (!list) js.fail_at("pre_tokenizer", "Sequence without \"pretokenizers\"");
    size_t i = 0;
    for (dom::element e : js.array(*list, "pre_tokenizer.pretokenizers"))
      steps.emplace_back(e, "pre_tokenizer.pretokenizers[" + std::to_string(i++) + "]");
  } else {
    steps.emplace_back(*pt, "pre_tokenizer");
  }

  bool seen_byte_level = false;
  for (const auto& [e, where] : steps) {
    const std::string_view type = js.type_of(e, where);
    if (seen_byte_level) {
      // Our BPE maps bytes to the byte-level alphabet itself, so ByteLevel must be last.
      js.fail_at(where, "a pre-tokenizer after ByteLevel is not supported");
    }
    if (type == "Split") {
      SplitStep step;
      auto pattern = js.field(e, "pattern");
      if (!pattern) js.fail_at(where, "Split without \"pattern\"");
      bool literal = false;
      std::string_view text;
      if (auto r = js.field(*pattern, "Regex")) {
        text = js.string(*r, where + ".pattern.Regex");
      } else if (auto s = js.field(*pattern, "String")) {
        text = js.string(*s, where + ".pattern.String");
        literal = true;
      } else {
        js.fail_at(where + ".pattern", "expected {\"Regex\": ...} or {\"String\": ...}");
      }
      if (!text.empty()) step.regex = std::make_unique<Regex>(text, literal, js.file(), where + ".pattern");
      auto behavior_el = js.field(e, "behavior");
      const std::string_view behavior = behavior_el ? js.string(*behavior_el, where + ".behavior") : "";
      if (behavior == "Isolated") {
        step.behavior = SplitBehavior::kIsolated;
      } else if (behavior == "Removed") {
        step.behavior = SplitBehavior::kRemoved;
      } else if (behavior == "MergedWithPrevious") {
        step.behavior = SplitBehavior::kMergedWithPrevious;
      } else if (behavior == "MergedWithNext") {
        step.behavior = SplitBehavior::kMergedWithNext;
      } else if (behavior == "Contiguous") {
        step.behavior = SplitBehavior::kContiguous;
      } else {
        js.fail_at(where + ".behavior", "unknown split behavior " + shown(behavior));
      }
      step.invert = js.boolean(e, "invert", false, where);
      im.splits.push_back(std::move(step));
    } else if (type == "ByteLevel") {
      seen_byte_level = true;
      im.prefix_space = js.boolean(e, "add_prefix_space", true, where);
      if (js.boolean(e, "use_regex", true, where)) {
        im.byte_level_regex = std::make_unique<Regex>(kGpt2Pattern, false, js.file(), where);
      }
    } else {
      js.fail_at(where + ".type", "pre-tokenizer " + shown(type) +
                                      " is not supported (supported: ByteLevel, or a Sequence of Split "
                                      "steps ending with ByteLevel)");
    }
  }
  if (!seen_byte_level) {
    js.fail_at("pre_tokenizer", "has no ByteLevel step; only byte-level BPE tokenizers are supported");
  }
}


void load_decoder_and_post_processor(const Json& js, dom::element root) {
  auto dec = js.non_null_field(root, "decoder");
  if (!dec) {
    js.fail_at("decoder", "is null; a byte-level BPE tokenizer needs the ByteLevel decoder (HF would "
                          "join the tokens with spaces)");
  }
  const std::string_view dtype = js.type_of(*dec, "decoder");
  if (dtype != "ByteLevel") {
    js.fail_at("decoder.type", "decoder " + shown(dtype) + " is not supported (only ByteLevel)");
  }
  // The ByteLevel post-processor only adjusts offsets; anything that inserts tokens
  // (TemplateProcessing, RobertaProcessing, ...) would change HF's default encode().
  if (auto pp = js.non_null_field(root, "post_processor")) {
    const std::string_view ptype = js.type_of(*pp, "post_processor");
    if (ptype != "ByteLevel") {
      js.fail_at("post_processor.type", "post-processor " + shown(ptype) +
                                            " is not supported (only ByteLevel or null; others add "
                                            "tokens to encode())");
    }
  }
  // Both would change what encode() returns in HF.
  for (std::string_view key : {"truncation", "padding"}) {
    if (js.non_null_field(root, key)) js.fail_at(key, "must be null (truncation/padding are not supported)");
  }
}

void build_token_bytes(Tokenizer::Impl& im) {
  // HF's ByteLevel decoder maps each token through the byte-level alphabet, or takes its
  // UTF-8 as is when some character is outside the alphabet (typically an added token
  // written in plain text, e.g. a CJK one).
  im.bytes.resize(im.tokens.size());
  for (size_t id = 0; id < im.tokens.size(); ++id) {
    if (!(im.flags[id] & Tokenizer::Impl::kAssigned)) continue;
    std::optional<std::string> b = byte_level::decode(im.tokens[id]);
    im.bytes[id] = b ? std::move(*b) : im.tokens[id];
  }
}

}  // namespace

Tokenizer Tokenizer::load(const std::filesystem::path& tokenizer_json) {
  auto im = std::make_shared<Impl>();
  im->path = tokenizer_json;
  im->file = tokenizer_json.string();
  const std::string& file = im->file;

  std::error_code ec;
  const auto status = std::filesystem::status(tokenizer_json, ec);
  if (ec || !std::filesystem::exists(status)) fail(file, "no such file (expected a HF tokenizer.json)");
  if (std::filesystem::is_directory(status)) fail(file, "is a directory, not a tokenizer.json file");

  simdjson::padded_string text;
  if (auto err = simdjson::padded_string::load(file).get(text)) {
    fail(file, std::string("cannot read the file: ") + simdjson::error_message(err));
  }
  dom::parser parser;
  dom::element root;
  if (auto err = parser.parse(text).get(root)) {
    fail(file, std::string("malformed JSON (") + simdjson::error_message(err) +
                   "); is the file complete?");
  }
  const Json js(file);
  if (!root.is_object()) fail(file, "malformed tokenizer.json: the top level is not a JSON object");
  if (auto v = js.non_null_field(root, "version")) {
    const std::string_view version = js.string(*v, "version");
    if (version != "1.0") js.fail_at("version", "unknown tokenizer.json version " + shown(version));
  }

  load_model(js, root, *im);
  load_added_tokens(js, root, *im);
  load_normalizer(js, root, *im);
  if (std::find(im->normalizers.begin(), im->normalizers.end(), NormalForm::kNFC) != im->normalizers.end())
    build_nfc_inert_table();  // now rather than during the first encode()
  load_pre_tokenizer(js, root, *im);
  load_decoder_and_post_processor(js, root);
  build_token_bytes(*im);

  // Tokens with normalized=true are matched on normalized text, so their patterns are
  // normalized too (HF refresh_added_tokens).
  for (size_t i = 0; i < im->added.size(); ++i) {
    const AddedToken& t = im->added[i];
    if (t.normalized) {
      std::string buffer;
      im->normalized_trie.insert(im->normalize(t.content, buffer), int32_t(i));
    } else {
      im->raw_trie.insert(t.content, int32_t(i));
    }
  }
  return Tokenizer(std::move(im));
}

}  // namespace ultraserve
