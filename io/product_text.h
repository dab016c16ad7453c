// The text side of a product: how its title, attributes and category become the one string the tokenizer
// sees. One function, so that training, evaluation and `moon embed` describe a product the same way.
#pragma once

#include <string>

#include "io/manifest.h"

namespace moon::io {

struct ProductTextOptions {
  bool attributes = true;  // append "key: value" pairs after the title
  bool category = false;   // append the category path ("category: a > b > c")
};

// "Classic ankle boot | garment: ankle boot; type: footwear". Empty when the product has no text.
std::string product_text(const Product& product, const ProductTextOptions& options = {});

}  // namespace moon::io
