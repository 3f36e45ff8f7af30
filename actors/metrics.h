#pragma once
// Counters, gauges and histograms in the Prometheus text exposition format (version 0.0.4).
// Plain data owned by the metrics actor: no locking, one writer.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ultraserve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double v);
  // Appends `name_bucket{le=...}`, `name_sum` and `name_count` lines.
  void render(const std::string& name, std::string& out) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative); last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class MetricsRegistry {
 public:
  MetricsRegistry();
  void count(const std::string& name, const std::string& label_value, double by = 1);  // labelled counter
  void add(const std::string& name, double by);                                        // plain counter
  void set(const std::string& name, double value);                                     // gauge
  Histogram& histogram(const std::string& name);
  std::string render() const;

 private:
  struct Family {
    std::string help, type, label;
  };
  std::map<std::string, Family> families_;
  std::map<std::string, std::map<std::string, double>> labelled_;
  std::map<std::string, double> values_;
  std::map<std::string, Histogram> histograms_;
};

}  // namespace ultraserve
