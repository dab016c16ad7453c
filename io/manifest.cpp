// Parsing and writing of manifest lines (see io/manifest.h and docs/manifest.md).
#include "io/manifest.h"

#include <nlohmann/json.hpp>

#include "io/file_util.h"
#include "runtime/error.h"

namespace moon::io {

namespace {

using Json = nlohmann::ordered_json;  // keeps the attributes in the file's order

constexpr int kMaxDepth = 32;  // no manifest field nests deeper than 3; this bounds hostile input

// The deepest nesting of [ and { outside strings, so that hostile input never reaches the JSON parser's
// recursion (and its destructor) with thousands of levels.
int nesting_depth(std::string_view text) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

// "syntax error while parsing value - ...; last read: '...'" and its column, from nlohmann's message.
std::string describe_parse_error(const Json::parse_error& e) {
  std::string what = e.what();
  const size_t column = what.find("column ");
  const size_t colon = column == std::string::npos ? std::string::npos : what.find(": ", column);
  if (colon != std::string::npos) return "invalid JSON at " + what.substr(column, colon - column) + ": " + what.substr(colon + 2);
  return "invalid JSON at byte " + std::to_string(e.byte) + ": " + what;
}

std::string wrong_type(const std::string& field, const char* expected, const Json& value) {
  return "field '" + field + "' must be " + expected + ", found " + value.type_name();
}

// "" when `path` is a safe relative path inside the manifest's folder, else the reason.
std::string check_image_path(const std::string& path, size_t index) {
  const std::string where = "image " + std::to_string(index) + " ('" + path + "')";
  if (path.empty()) return "image " + std::to_string(index) + " is an empty path";
  if (path.find('\0') != std::string::npos) return where + " contains a NUL character";
  if (path[0] == '/' || path[0] == '\\') return where + " is an absolute path; paths are relative to the manifest's folder";
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find_first_of("/\\", start);
    if (end == std::string::npos) end = path.size();
    if (path.compare(start, end - start, "..") == 0 && end - start == 2)
      return where + " leaves the manifest's folder with '..'";
    start = end + 1;
  }
  return "";
}

// Reads an array of strings; "" on success, else the reason.
std::string string_array(const Json& value, const std::string& field, std::vector<std::string>& out) {
  if (!value.is_array()) return wrong_type(field, "an array of strings", value);
  out.clear();
  for (size_t i = 0; i < value.size(); ++i) {
    if (!value[i].is_string()) return wrong_type(field + "[" + std::to_string(i) + "]", "a string", value[i]);
    out.push_back(value[i].get<std::string>());
  }
  return "";
}

// Reads the category path (array of strings, or a string "a/b/c"); "" on success, else the reason.
std::string category_path(const Json& value, std::vector<std::string>& out) {
  out.clear();
  if (value.is_string()) {
    const std::string text = value.get<std::string>();
    size_t start = 0;
    while (start <= text.size()) {
      size_t end = text.find('/', start);
      if (end == std::string::npos) end = text.size();
      if (end > start) out.push_back(text.substr(start, end - start));
      start = end + 1;
    }
    return "";
  }
  if (!value.is_array()) return wrong_type("category", "an array of strings or a string \"a/b/c\"", value);
  if (std::string reason = string_array(value, "category", out); !reason.empty()) return reason;
  for (size_t i = 0; i < out.size(); ++i)
    if (out[i].empty()) return "field 'category[" + std::to_string(i) + "]' is empty";
  return "";
}

// Reads the attributes object; numbers and booleans become text. "" on success, else the reason.
std::string attribute_list(const Json& value, std::vector<std::pair<std::string, std::string>>& out) {
  if (!value.is_object()) return wrong_type("attributes", "an object of string values", value);
  out.clear();
  for (auto it = value.begin(); it != value.end(); ++it) {
    const Json& v = it.value();
    std::string text;
    if (v.is_string()) text = v.get<std::string>();
    else if (v.is_boolean()) text = v.get<bool>() ? "true" : "false";
    else if (v.is_number()) text = v.dump();
    else return wrong_type("attributes." + it.key(), "a string, number or boolean", v);
    out.emplace_back(it.key(), std::move(text));
  }
  return "";
}

// Fills `out` from a parsed JSON object; "" on success, else the reason.
std::string product_from_json(const Json& j, Product& out) {
  if (!j.is_object()) return std::string("a line must be a JSON object, found ") + j.type_name();
  auto id = j.find("id");
  if (id == j.end()) return "missing field 'id'";
  if (!id->is_string()) return wrong_type("id", "a string", *id);
  out.id = id->get<std::string>();
  if (out.id.empty()) return "field 'id' is empty";

  out.images.clear();
  if (auto images = j.find("images"); images != j.end()) {
    if (std::string reason = string_array(*images, "images", out.images); !reason.empty()) return reason;
    for (size_t i = 0; i < out.images.size(); ++i)
      if (std::string reason = check_image_path(out.images[i], i); !reason.empty()) return reason;
  }
  out.title.clear();
  auto title = j.find("title");
  if (title == j.end()) {
    if (out.images.empty()) return "missing field 'title' (a product needs a title, at least one image, or both)";
  } else {
    if (!title->is_string()) return wrong_type("title", "a string", *title);
    out.title = title->get<std::string>();
    if (out.title.empty() && out.images.empty()) return "field 'title' is empty and there are no images";
  }
  out.category.clear();
  if (auto category = j.find("category"); category != j.end())
    if (std::string reason = category_path(*category, out.category); !reason.empty()) return reason;
  out.attributes.clear();
  if (auto attributes = j.find("attributes"); attributes != j.end())
    if (std::string reason = attribute_list(*attributes, out.attributes); !reason.empty()) return reason;
  out.queries.clear();
  if (auto queries = j.find("queries"); queries != j.end())
    if (std::string reason = string_array(*queries, "queries", out.queries); !reason.empty()) return reason;
  out.split.clear();
  if (auto split = j.find("split"); split != j.end()) {
    if (!split->is_string()) return wrong_type("split", "a string", *split);
    out.split = split->get<std::string>();
    if (!is_known_split(out.split)) return "unknown split '" + out.split + "' (expected train, val or test)";
  }
  return "";
}

}  // namespace

bool is_known_split(std::string_view split) { return split == "train" || split == "val" || split == "test"; }

std::string try_parse_product(std::string_view line, Product& out) {
  if (nesting_depth(line) > kMaxDepth) return "invalid JSON: nested deeper than " + std::to_string(kMaxDepth) + " levels";
  Json j;
  try {
    j = Json::parse(line.begin(), line.end());
  } catch (const Json::parse_error& e) {
    return describe_parse_error(e);
  } catch (const Json::exception& e) {
    return std::string("invalid JSON: ") + e.what();
  }
  return product_from_json(j, out);
}

Product parse_product(std::string_view line, const std::string& file, size_t line_no) {
  Product product;
  const std::string reason = try_parse_product(line, product);
  MOON_CHECK(reason.empty(), file, ":", line_no, ": ", reason);
  product.line = line_no;
  return product;
}

std::string to_json_line(const Product& p) {
  Json j = Json::object();
  j["id"] = p.id;
  j["title"] = p.title;
  j["images"] = p.images;
  j["category"] = p.category;
  Json attributes = Json::object();
  for (const auto& [key, value] : p.attributes) attributes[key] = value;
  j["attributes"] = std::move(attributes);
  if (!p.queries.empty()) j["queries"] = p.queries;
  if (!p.split.empty()) j["split"] = p.split;
  // Invalid UTF-8 (say, a Latin-1 title) becomes U+FFFD rather than an exception while writing.
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

void write_manifest(const std::string& path, const std::vector<Product>& products) {
  write_file_atomic(path, [&](const ByteSink& sink) {
    for (const Product& p : products) {
      const std::string line = to_json_line(p) + "\n";
      sink(line.data(), line.size());
    }
  });
}

}  // namespace moon::io
