// The JSONL metrics log: appending, fsync at checkpoints, truncation to a checkpoint's step on resume.
#include "training/metrics_log.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "io/file_util.h"
#include "runtime/error.h"

namespace moon::training {
using nlohmann::json;

namespace {

// The lines of a file without their '\n'; a missing file has none.
std::vector<std::string> file_lines(const std::string& path) {
  std::vector<std::string> lines;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return lines;
  const std::string text = io::read_file_text(path);
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

}  // namespace

json finite_or_null(double value) { return std::isfinite(value) ? json(value) : json(nullptr); }

std::vector<json> read_metrics(const std::string& path) {
  std::vector<json> out;
  const std::vector<std::string> lines = file_lines(path);
  MOON_CHECK(!lines.empty() || std::filesystem::exists(path), path, ": no such metrics file (a RUN_DIR holds metrics.jsonl)");
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].empty()) continue;
    json j = json::parse(lines[i], nullptr, false);
    MOON_CHECK(!j.is_discarded() && j.is_object(), path, ":", i + 1, ": not a JSON object");
    out.push_back(std::move(j));
  }
  return out;
}

MetricsLog::MetricsLog(const std::string& path, int64_t keep_through_step) : path_(path) {
  std::string kept;
  if (keep_through_step >= 0) {
    for (const std::string& line : file_lines(path)) {
      json j = json::parse(line, nullptr, false);
      // a torn last line (a crash mid-write) or a line of a later step is dropped
      if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) continue;
      if (j["step"].get<int64_t>() > keep_through_step) continue;
      kept += line + "\n";
      earlier_.push_back(std::move(j));
    }
  }
  io::write_file_atomic(path, kept);
  file_ = std::fopen(path.c_str(), "ab");
  MOON_CHECK(file_ != nullptr, path, ": cannot open the metrics log for appending");
}

MetricsLog::~MetricsLog() {
  if (file_) std::fclose(file_);
}

void MetricsLog::append(const json& record) {
  const std::string line = record.dump() + "\n";
  MOON_CHECK(std::fwrite(line.data(), 1, line.size(), file_) == line.size() && std::fflush(file_) == 0, path_,
             ": cannot write the metrics log (disk full?)");
}

void MetricsLog::sync() {
  MOON_CHECK(std::fflush(file_) == 0 && ::fsync(fileno(file_)) == 0, path_, ": cannot fsync the metrics log");
}

}  // namespace moon::training
