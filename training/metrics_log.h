// The JSONL metrics log of a run (RUN_DIR/metrics.jsonl): one JSON object per line, per step
// ({"step":..,"loss":..}) and per evaluation ({"step":..,"eval":{..}}), appended as training goes and
// fsync'ed at checkpoints. On resume the lines after the checkpoint's step are dropped.
#pragma once
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace moon::training {

class MetricsLog {
 public:
  // Opens `path` for appending. keep_through_step < 0: a fresh log (any old file is replaced); else the
  // lines whose "step" is above keep_through_step are dropped first (atomically), and unreadable lines too.
  MetricsLog(const std::string& path, int64_t keep_through_step);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  void append(const nlohmann::json& record);  // one line, flushed to the kernel
  void sync();                                // fsync (called at checkpoints)
  const std::string& path() const { return path_; }
  // The records kept from before this process (resume): e.g. the evaluation before the first step.
  const std::vector<nlohmann::json>& earlier() const { return earlier_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  std::vector<nlohmann::json> earlier_;
};

// Every record of a metrics file in order (a line that is not a JSON object is an error naming FILE:LINE).
std::vector<nlohmann::json> read_metrics(const std::string& path);

// A double as JSON keeps it: nlohmann prints the shortest text that reads back to the same bits.
// NaN and Inf (not JSON) are written as null.
nlohmann::json finite_or_null(double value);

}  // namespace moon::training
