#include "io/product_text.h"

namespace moon::io {

std::string product_text(const Product& product, const ProductTextOptions& options) {
  std::string text = product.title;
  std::string details;
  auto add = [&](const std::string& key, const std::string& value) {
    if (value.empty()) return;
    details += details.empty() ? "" : "; ";
    details += key + ": " + value;
  };
  if (options.attributes)
    for (const auto& [key, value] : product.attributes) add(key, value);
  if (options.category && !product.category.empty()) {
    std::string path;
    for (const auto& part : product.category) path += (path.empty() ? "" : " > ") + part;
    add("category", path);
  }
  if (!details.empty()) text += (text.empty() ? "" : " | ") + details;
  return text;
}

}  // namespace moon::io
