// The progress line of `moon train` on stderr: step/total, a bar, ETA, loss, reward (with GRPO), lr,
// products/s and peak memory. Redrawn in place with \r on a terminal, otherwise one line every N seconds.
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace moon::training {

struct ProgressInfo {
  int64_t step = 0, total = 0;     // steps done, steps of the run
  int64_t first_step = 0;          // the step this process started at (ETA counts from there)
  double elapsed_seconds = 0;      // since this process started training
  double loss = 0;
  std::optional<double> reward;    // GRPO's mean reward (absent before GRPO starts)
  double lr = 0;
  double products_per_second = 0;
  double peak_rss_mb = 0;
};

// "step 12/40 [######..............] 30% ETA 1m05s loss 3.2145 reward 0.123 lr 3.00e-04 52.1 prod/s 812 MB".
// A pure function of `info` (bar of `bar_width` cells).
std::string format_progress(const ProgressInfo& info, int bar_width = 20);
// "1m05s", "2h03m", "12s" (whole seconds; "?" for a negative or non-finite value).
std::string format_duration(double seconds);
// The process's peak resident memory in MB (getrusage ru_maxrss).
double peak_rss_mb();

class ProgressPrinter {
 public:
  // enabled = false prints nothing. tty: redraw with \r at most every 0.2 s; else a line every interval.
  ProgressPrinter(bool enabled, bool tty, double interval_seconds = 10.0);
  void update(const ProgressInfo& info, bool force = false);
  void finish(const std::string& summary);  // ends a redrawn line, then prints `summary` on its own line
  void message(const std::string& text);    // a line of its own (always printed), without breaking a redraw

 private:
  using clock = std::chrono::steady_clock;
  bool enabled_, tty_, drawn_ = false;
  double interval_;
  clock::time_point last_;
  bool printed_ = false;
};

}  // namespace moon::training
