#include "actors/metrics.h"

#include <cstdio>
#include <stdexcept>

namespace ultraserve {
namespace {

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

const std::vector<double> kLatencyBuckets{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += v;
  ++count_;
}

void Histogram::render(const std::string& name, std::string& out) const {
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + (i < bounds_.size() ? number(bounds_[i]) : "+Inf") + "\"} " +
           std::to_string(cumulative) + "\n";
  }
  out += name + "_sum " + number(sum_) + "\n" + name + "_count " + std::to_string(count_) + "\n";
}

MetricsRegistry::MetricsRegistry() {
  auto family = [&](const char* name, const char* type, const char* help, const char* label = "") {
    families_[name] = {help, type, label};
  };
  family("ultraserve_requests_total", "counter", "Requests by outcome (finish reason or error code).", "outcome");
  family("ultraserve_prompt_tokens_total", "counter", "Prompt tokens of finished requests.");
  family("ultraserve_generated_tokens_total", "counter", "Tokens generated.");
  family("ultraserve_time_to_first_token_seconds", "histogram", "Submit to first token.");
  family("ultraserve_inter_token_latency_seconds", "histogram", "Time between consecutive tokens of a request.");
  family("ultraserve_step_seconds", "histogram", "Worker time per batched step.");
  family("ultraserve_batch_size", "histogram", "Sequences per step.");
  family("ultraserve_kv_blocks_used", "gauge", "KV cache blocks held by requests.");
  family("ultraserve_kv_blocks_free", "gauge", "KV cache blocks free.");
  family("ultraserve_queue_depth", "gauge", "Requests waiting for admission.");
  family("ultraserve_open_connections", "gauge", "Open client connections.");
  family("ultraserve_speculative_acceptance_length", "histogram",
         "Tokens each DFlash verify round gave (tau: accepted proposals + the target's own).");
  family("ultraserve_draft_seconds", "histogram", "DFlash draft time per step (steps with speculative rounds).");
  family("ultraserve_verify_seconds", "histogram", "Target time per step with speculative rounds (the verify pass).");
  histograms_.emplace("ultraserve_time_to_first_token_seconds", Histogram(kLatencyBuckets));
  histograms_.emplace("ultraserve_inter_token_latency_seconds", Histogram(kLatencyBuckets));
  histograms_.emplace("ultraserve_step_seconds", Histogram(kLatencyBuckets));
  histograms_.emplace("ultraserve_batch_size", Histogram({1, 2, 4, 8, 16, 32, 64, 128, 256, 512}));
  histograms_.emplace("ultraserve_speculative_acceptance_length", Histogram({1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16}));
  histograms_.emplace("ultraserve_draft_seconds", Histogram(kLatencyBuckets));
  histograms_.emplace("ultraserve_verify_seconds", Histogram(kLatencyBuckets));
  for (const char* gauge : {"ultraserve_prompt_tokens_total", "ultraserve_generated_tokens_total",
                            "ultraserve_kv_blocks_used", "ultraserve_kv_blocks_free", "ultraserve_queue_depth",
                            "ultraserve_open_connections"})
    values_[gauge] = 0;
}

void MetricsRegistry::count(const std::string& name, const std::string& label_value, double by) {
  labelled_[name][label_value] += by;
}
void MetricsRegistry::add(const std::string& name, double by) { values_[name] += by; }
void MetricsRegistry::set(const std::string& name, double value) { values_[name] = value; }

Histogram& MetricsRegistry::histogram(const std::string& name) {
  auto it = histograms_.find(name);
  if (it == histograms_.end()) throw std::logic_error("no histogram " + name);
  return it->second;
}

std::string MetricsRegistry::render() const {
  std::string out;
  for (const auto& [name, f] : families_) {
    out += "# HELP " + name + " " + f.help + "\n# TYPE " + name + " " + f.type + "\n";
    if (auto h = histograms_.find(name); h != histograms_.end()) {
      h->second.render(name, out);
    } else if (auto l = labelled_.find(name); l != labelled_.end()) {
      for (const auto& [value, n] : l->second) out += name + "{" + f.label + "=\"" + value + "\"} " + number(n) + "\n";
    } else if (auto v = values_.find(name); v != values_.end()) {
      out += name + " " + number(v->second) + "\n";
    }
  }
  return out;
}

}  // namespace ultraserve
