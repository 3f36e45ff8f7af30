#pragma once
// Adaptive block size for speculative decoding: each round's block is chosen to maximise the
// request's expected tokens per second of step time, from two running measurements:
//   - how often this request's proposals are accepted (alpha, per proposal, decayed counts);
//     a block of B then yields E(B) = 1 + alpha + ... + alpha^(B-1) tokens on average
//   - what a step costs: seconds ~ a + b * tokens, fitted over recent steps (decayed least
//     squares), so a B-token verify is charged a / sequences + b * B
// For a MoE target a bigger block reads many more experts; the fit sees that as a larger b. The
// paper leaves adaptive block size open; this is the simplest policy that follows the measured
// costs. Pure logic: the planner owns one, the scheduler feeds it.

namespace ultraserve {

// One request's acceptance record.
class AcceptanceRate {
 public:
  // A round that offered `proposals` draft tokens and yielded `tokens` (accepted + 1).
  void observe(int proposals, int tokens);
  double rate() const { return (accepted_ + 1) / (trials_ + 2); }  // Laplace: 0.5 before any round

 private:
  double accepted_ = 0, trials_ = 0;
};

class BlockSizePolicy {
 public:
  void observe_step(double seconds, int tokens);
  // The block in [2, max_block] with the most expected tokens per second, or 0 when a plain
  // decode does better; max_block until the cost fit has seen enough steps.
  int choose(double acceptance, int max_block, int sequences) const;
  bool fitted() const { return steps_ >= kMinSteps && variance() > 0; }

 private:
  static constexpr int kMinSteps = 8;
  static constexpr double kDecay = 0.98;  // a step's weight halves after ~35 steps
  double variance() const;
  double n_ = 0, sx_ = 0, sy_ = 0, sxx_ = 0, sxy_ = 0;  // decayed sums over (tokens, seconds)
  int steps_ = 0;
};

}  // namespace ultraserve
