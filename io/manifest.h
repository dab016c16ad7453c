// Product manifests: the JSONL format in which every data set reaches moon (one product per line), with the
// parser and writer of a single line and the atomic writer of a whole file. docs/manifest.md describes the
// format; io/manifest_reader.h loads a whole file with a bad-record policy.
//
//   {"id":"fmnist-train-00001","title":"classic ankle boot","images":["images/train/00001.png"],
//    "category":["fashion","footwear","ankle boot"],"attributes":{"colour":"greyscale"},"split":"train"}
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moon::io {

// One product of a catalogue: what a line of a manifest holds.
struct Product {
  std::string id, title;
  std::vector<std::string> images;    // paths relative to the manifest's folder
  std::vector<std::string> category;  // path from the root, e.g. {"apparel", "footwear", "sneaker"}
  std::vector<std::pair<std::string, std::string>> attributes;  // in the file's order
  std::vector<std::string> queries;   // search queries that should retrieve this product
  std::string split;                  // "", "train", "val" or "test"
  size_t line = 0;                    // 1-based line in the manifest it came from (0: not from a file)
};

// Parses one manifest line. Throws moon::Error "FILE:LINE: <reason>" on invalid JSON (with the parser's
// position), a missing field, a field of the wrong type (naming the field and the type found), an unknown
// split, or an image path that is absolute or leaves the manifest's folder.
Product parse_product(std::string_view line, const std::string& file, size_t line_no);

// The same check without exceptions: "" when `line` is a valid product (stored in `out`), else the reason
// (without the FILE:LINE prefix).
std::string try_parse_product(std::string_view line, Product& out);

// One line of JSON (no newline) that parse_product reads back to the same product; keys in the order
// id, title, images, category, attributes, queries (if any), split (if set).
std::string to_json_line(const Product& product);

// Writes every product as one line, atomically (a temporary file renamed over `path`).
void write_manifest(const std::string& path, const std::vector<Product>& products);

// True for "train", "val" and "test".
bool is_known_split(std::string_view split);

}  // namespace moon::io
