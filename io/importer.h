// The importers behind `moon data import SOURCE --out DIR`: each turns a real data set into DIR/images/...
// and DIR/manifest.jsonl (every product with its split). This header also holds their shared machinery:
// finding (or installing) the package that ships the data, spreading a --limit across categories,
// copying or hard-linking images, progress lines, and writing the manifest with a summary.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/manifest.h"

namespace moon::io {

struct ImportOptions {
  std::string out_dir;     // DIR: receives images/ and manifest.jsonl
  size_t limit = 0;        // keep only this many products, spread across categories (0: all)
  uint64_t seed = 0;       // split seed (and the order in which --limit picks products)
  std::string source_dir;  // where the raw data is read from ("" : the package's installed location)
  bool progress = true;    // progress lines on stderr during long imports
  bool install = true;     // install a missing package (apt-get / npm) instead of failing
};

struct ImportSummary {
  std::string source, manifest_path;
  size_t products = 0, images = 0;
  std::map<std::string, size_t> per_split;     // "train"/"val"/"test" -> products
  std::map<std::string, size_t> per_category;  // category prefix -> products, at the first level that differs
  size_t category_paths = 0;                   // distinct full category paths
  std::map<std::string, size_t> skipped;       // reason -> count of source items left out
  double seconds = 0;
};

// The sources `moon data import` knows, in the order `--help` lists them.
std::vector<std::string> import_sources();

// Runs the importer of `source` ("fashion-mnist", "openclipart" or "emoji").
ImportSummary import_source(const std::string& source, const ImportOptions& options);
ImportSummary import_fashion_mnist(const ImportOptions& options);
ImportSummary import_openclipart(const ImportOptions& options);
ImportSummary import_emoji(const ImportOptions& options);

// The summary as the lines that `moon data import` prints.
std::string format_summary(const ImportSummary& summary);

// ---- shared machinery

// ${MOON_CACHE:-$HOME/.cache/moon}
std::string moon_cache_dir();

// Makes sure `probe` (a file that Debian package `package` installs) exists: if it does not, installs the
// package with apt-get (as root, or through sudo; `apt-get update` then a second try if the first fails),
// saying so on stderr. Throws moon::Error with the command to run when it cannot.
void ensure_apt_package(const std::string& package, const std::string& probe, bool install);

// The folder of npm package `name` at exactly `version` under ${MOON_CACHE}/npm, installed with
// `npm install --prefix` when missing (or another version is there). `probe` is a file inside the package
// that must exist. Throws moon::Error with the command to run when npm is missing or the install fails.
std::string ensure_npm_package(const std::string& name, const std::string& version, const std::string& probe,
                               bool install);

// The order in which --limit takes items: round-robin over the categories (sorted), and within each
// category by a hash of (id, seed). Taking the first N of this order spreads N across the categories.
std::vector<size_t> spread_order(const std::vector<std::string>& ids, const std::vector<std::string>& categories,
                                 uint64_t seed);

// Hard-links `from` to `to` (replacing `to`), or copies it when a link is impossible (another filesystem,
// no permission). Throws naming both paths on failure.
void link_or_copy(const std::string& from, const std::string& to);

// Writes bytes to `path` (not atomic: images are re-creatable; the manifest is written atomically).
void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes);

// Progress on stderr: at most one line every few seconds, and a last line from finish().
class Progress {
 public:
  Progress(std::string what, size_t total, bool enabled);
  void update(size_t done);
  void finish(size_t done);

 private:
  std::string what_;
  size_t total_;
  bool enabled_;
  double start_, last_;
};

// Seconds on a monotonic clock.
double now_seconds();

// Writes `products` (in the given order) to DIR/manifest.jsonl atomically and fills the summary's counts
// (products, images, splits, categories, seconds since `start`).
void finish_import(const ImportOptions& options, const std::vector<Product>& products, double start,
                   ImportSummary& summary);

}  // namespace moon::io
