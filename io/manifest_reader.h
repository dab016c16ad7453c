// Loading a whole manifest: every line parsed and checked (unique ids, optionally existing images), with a
// policy for bad lines (stop at the first, or skip and collect them all), and the summary that
// `moon data validate` prints.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "io/manifest.h"

namespace moon::io {

enum class BadRecords { Skip, Stop };  // what load_manifest does with a bad line

struct ManifestIssue {
  size_t line;         // 1-based line number in the file
  std::string reason;  // what is wrong (without the FILE:LINE prefix)
};

struct LoadOptions {
  std::string split;          // keep only products of this split ("" keeps all)
  bool check_images = false;  // a product whose image file does not exist is a bad line
  size_t limit = 0;           // stop after this many products were kept (0: no limit)
};

struct Manifest {
  std::string path, folder;        // the file and the folder its image paths are relative to
  std::vector<Product> products;   // the good lines (after the split filter), in file order
  std::vector<ManifestIssue> issues;  // the bad lines (BadRecords::Skip)
  size_t lines_read = 0;           // lines looked at, blank ones included
};

// Reads `path`. Blank lines are ignored, a UTF-8 byte-order mark and CRLF line ends are tolerated. A
// duplicate id is a bad line that names the line where the id first appeared. With BadRecords::Stop the
// first bad line throws moon::Error "FILE:LINE: reason"; with Skip every bad line goes to `issues`.
Manifest load_manifest(const std::string& path, BadRecords policy, const LoadOptions& options = {});

// The path of image i of `product`, resolved against the manifest's folder.
std::string image_path(const Manifest& manifest, const Product& product, size_t i);

// What `moon data validate` reports about a loaded manifest.
struct ManifestStats {
  size_t products = 0, images = 0, text_only = 0, image_only = 0, with_queries = 0;
  std::map<std::string, size_t> per_split;     // "" counts products without a split
  std::map<std::string, size_t> per_category;  // top-level category -> products
  size_t leaf_categories = 0;                  // distinct full category paths
};
ManifestStats manifest_stats(const Manifest& manifest);

}  // namespace moon::io
