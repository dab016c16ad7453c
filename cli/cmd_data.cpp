// `moon data`: product manifests and the real data sets behind them.
//   moon data validate MANIFEST [--check-images]      every bad line, then a summary; exit 1 if any
//   moon data stats MANIFEST                          the same summary (bad lines are counted, not listed)
//   moon data import SOURCE --out DIR [--limit N] [--seed S] [--source-dir PATH] [--no-install] [--quiet]
#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "io/file_util.h"
#include "io/importer.h"
#include "io/manifest_reader.h"
#include "runtime/error.h"

namespace moon::cli {

namespace {

const char* const kUsage =
    "usage:\n"
    "  moon data validate MANIFEST [--check-images] [--max-issues N]\n"
    "      Checks every line of a JSONL product manifest (docs/manifest.md): lists each bad line with its\n"
    "      number and reason (the first N, default 1000), then products, bad lines, splits, images and\n"
    "      categories. --check-images also requires every image file to exist. Exit code 0 when no line is\n"
    "      bad, 1 otherwise.\n"
    "  moon data stats MANIFEST [--check-images]\n"
    "      The summary of validate without the list of bad lines.\n"
    "  moon data import SOURCE --out DIR [--limit N] [--seed S] [--source-dir PATH] [--no-install] [--quiet]\n"
    "      Imports a real data set into DIR/images/ and DIR/manifest.jsonl (docs/data.md). SOURCE is\n"
    "      fashion-mnist (Debian dataset-fashion-mnist), openclipart (Debian openclipart-png and\n"
    "      openclipart-svg) or emoji (npm emoji-datasource-google, installed under ${MOON_CACHE:-~/.cache/moon}).\n"
    "      A missing package is installed (apt-get / npm) unless --no-install. --limit N keeps N products\n"
    "      spread across categories; --seed S (default 0) chooses the train/val/test split; --source-dir\n"
    "      reads the raw files from PATH instead of the package's location. Progress goes to stderr unless\n"
    "      --quiet.\n";

void print_stats(const io::Manifest& m) {
  const io::ManifestStats s = io::manifest_stats(m);
  std::printf("%s: %zu products, %zu bad lines, %zu lines\n", m.path.c_str(), s.products, m.issues.size(), m.lines_read);
  std::printf("  splits:");
  for (const auto& [split, n] : s.per_split) std::printf(" %s %zu", split.empty() ? "(none)" : split.c_str(), n);
  std::printf("\n  images: %zu (%zu text-only products, %zu without a title)\n", s.images, s.text_only, s.image_only);
  std::printf("  products with queries: %zu\n", s.with_queries);
  std::printf("  categories: %zu top-level, %zu distinct paths\n", s.per_category.size(), s.leaf_categories);
  for (const auto& [category, n] : s.per_category) std::printf("    %-28s %zu\n", category.c_str(), n);
}

int run_validate(const Args& args, bool list_issues) {
  const std::vector<std::string> pos = positionals(args, {"--max-issues"});
  MOON_CHECK(pos.size() == 2, "expected one MANIFEST (try `moon data --help`)");
  io::LoadOptions options;
  options.check_images = has_flag(args, "--check-images");
  const io::Manifest m = io::load_manifest(pos[1], io::BadRecords::Skip, options);
  const uint64_t max_issues = unsigned_flag(args, "--max-issues", 1000, 0, UINT64_MAX);
  if (list_issues) {
    for (size_t i = 0; i < m.issues.size() && i < max_issues; ++i)
      std::printf("%s:%zu: %s\n", m.path.c_str(), m.issues[i].line, m.issues[i].reason.c_str());
    if (m.issues.size() > max_issues) std::printf("... and %zu more bad lines\n", m.issues.size() - size_t(max_issues));
  }
  print_stats(m);
  return m.issues.empty() ? 0 : 1;
}

int run_import(const Args& args) {
  const std::vector<std::string> pos = positionals(args, {"--out", "--limit", "--seed", "--source-dir"});
  MOON_CHECK(pos.size() == 2, "expected one SOURCE: fashion-mnist, openclipart or emoji (try `moon data --help`)");
  io::ImportOptions options;
  options.out_dir = flag_value(args, "--out", "");
  MOON_CHECK(!options.out_dir.empty(), "moon data import needs --out DIR (the folder for images/ and manifest.jsonl)");
  options.limit = unsigned_flag(args, "--limit", 0, 0, UINT64_MAX);
  options.seed = unsigned_flag(args, "--seed", 0, 0, UINT64_MAX);
  options.source_dir = flag_value(args, "--source-dir", "");
  options.progress = !has_flag(args, "--quiet");
  options.install = !has_flag(args, "--no-install");
  io::make_dirs(options.out_dir);
  const io::ImportSummary summary = io::import_source(pos[1], options);
  std::printf("%s", io::format_summary(summary).c_str());
  return 0;
}

}  // namespace

MOON_COMMAND(data, 45, "product manifests: validate, stats, import fashion-mnist / openclipart / emoji")(const Args& args) {
  if (args.empty() || has_flag(args, "--help") || has_flag(args, "-h")) {
    std::printf("%s", kUsage);
    return args.empty() ? 1 : 0;
  }
  check_flags("data", args, {"--check-images", "--max-issues", "--out", "--limit", "--seed", "--source-dir",
                             "--no-install", "--quiet", "--help"});
  const std::string& action = args[0];
  if (action == "validate") return run_validate(args, true);
  if (action == "stats") return run_validate(args, false);
  if (action == "import") return run_import(args);
  fail("unknown action '", action, "' (expected validate, stats or import; try `moon data --help`)");
}

}  // namespace moon::cli
