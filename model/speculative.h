#pragma once
// Speculative decoding of one request on the CPU: a proposer drafts a block after the newest
// token, the target verifies the whole block in one pass, and the longest agreeing prefix is
// kept (plus the target's own token where they part, or one past the block when all agree).
// Lossless: greedy output is the target's greedy output token for token, and sampled output
// has the target's distribution (Sampler::verify). The server's scheduler runs the same round
// per request inside its batches.

#include <functional>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "model/dflash.h"
#include "model/generate.h"
#include "model/sampler.h"

namespace ultraserve {

// Where a round's block comes from. The target reports, after each pass, the tapped hidden
// states of the tokens it committed (the draft's context grows by those).
class Proposer {
 public:
  virtual ~Proposer() = default;
  virtual void on_committed(std::span<const float> taps) = 0;
  // `count` tokens for the positions after `anchor` (the newest token, not yet committed).
  virtual std::vector<int32_t> propose(int32_t anchor, int count) = 0;
};

// A DFlash draft with its own context cache for one sequence.
class DFlashProposer : public Proposer {
 public:
  DFlashProposer(DFlashDraft& draft, int max_context);
  void on_committed(std::span<const float> taps) override;
  std::vector<int32_t> propose(int32_t anchor, int count) override;

 private:
  DFlashDraft& draft_;
  PagedKvCache cache_;
  KvSequence seq_;
};

// The tokens a verified block [anchor, p_1 .. p_{B-1}] yields. Row i of the target's pass rules
// on p_{i+1} (`judge`); proposals are kept while they pass, then the target's own token follows:
// the judge's replacement where one fails, or draw(B - 1), one past the block, when all pass.
// 1..B tokens, all but the last of them accepted proposals. Every engine's rounds end here.
std::vector<int32_t> accept_block(std::span<const int32_t> block,
                                  const std::function<Sampler::Verdict(size_t row, int32_t proposal)>& judge,
                                  const std::function<int32_t(size_t row)>& draw);

struct SpeculativeStats : GenerationStats {
  int rounds = 0;                   // verify passes
  int tokens_gained() const;        // by the rounds: all but the prefill's token, the stop token included
  double mean_acceptance() const;   // tau: tokens gained per round (accepted + the target's own), >= 1
};

// The target must tap the layers the proposer reads (CpuModel::set_taps). Same errors as generate().
SpeculativeStats speculative_generate(CpuModel& target, Proposer& proposer, const Tokenizer& tokenizer,
                                      const GenerationRequest& request, int block_size,
                                      const std::function<void(std::string_view)>& on_text);

}  // namespace ultraserve
