// The progress line: formatting (pure), peak memory and the throttled printer.
#include "training/progress.h"

#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace moon::training {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long long s = std::llround(seconds);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, (s % 3600) / 60);
  else if (s >= 60)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%llds", s);
  return buf;
}

std::string format_progress(const ProgressInfo& info, int bar_width) {
  const double fraction = info.total > 0 ? std::clamp(static_cast<double>(info.step) / info.total, 0.0, 1.0) : 0.0;
  const int filled = static_cast<int>(std::floor(fraction * bar_width));
  std::string bar(static_cast<size_t>(filled), '#');
  bar.append(static_cast<size_t>(bar_width - filled), '.');
  const int64_t done_here = info.step - info.first_step;
  const double eta = done_here > 0 ? info.elapsed_seconds / done_here * static_cast<double>(info.total - info.step) : -1;
  char head[160];
  std::snprintf(head, sizeof head, "step %lld/%lld [%s] %3d%% ETA %s loss %.4f", static_cast<long long>(info.step),
                static_cast<long long>(info.total), bar.c_str(), static_cast<int>(std::floor(fraction * 100)),
                format_duration(eta).c_str(), info.loss);
  std::string line = head;
  char part[96];
  if (info.reward) {
    std::snprintf(part, sizeof part, " reward %.3f", *info.reward);
    line += part;
  }
  std::snprintf(part, sizeof part, " lr %.2e %.1f prod/s %.0f MB", info.lr, info.products_per_second, info.peak_rss_mb);
  return line + part;
}

double peak_rss_mb() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // Linux: kilobytes
}

ProgressPrinter::ProgressPrinter(bool enabled, bool tty, double interval_seconds)
    : enabled_(enabled), tty_(tty), interval_(interval_seconds), last_(clock::now()) {}

void ProgressPrinter::update(const ProgressInfo& info, bool force) {
  if (!enabled_) return;
  const auto now = clock::now();
  const double since = std::chrono::duration<double>(now - last_).count();
  if (!force && printed_ && since < (tty_ ? 0.2 : interval_)) return;
  last_ = now;
  printed_ = true;
  const std::string line = format_progress(info);
  if (tty_) {
    std::fprintf(stderr, "\r%s\033[K", line.c_str());
    drawn_ = true;
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

void ProgressPrinter::finish(const std::string& summary) {
  if (!enabled_) return;
  if (drawn_) std::fprintf(stderr, "\n");
  drawn_ = false;
  std::fprintf(stderr, "%s\n", summary.c_str());
  std::fflush(stderr);
}

void ProgressPrinter::message(const std::string& text) {
  if (drawn_) std::fprintf(stderr, "\n");
  drawn_ = false;
  std::fprintf(stderr, "%s\n", text.c_str());
  std::fflush(stderr);
}

}  // namespace moon::training
