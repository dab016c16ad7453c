// The SVG metadata scanner (see io/svg_metadata.h).
#include "io/svg_metadata.h"

#include <algorithm>
#include <optional>

#include "io/unicode_class.h"
#include "runtime/error.h"

namespace moon::io {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

bool starts_with_at(std::string_view s, size_t pos, std::string_view prefix) {
  return pos <= s.size() && s.substr(pos, prefix.size()) == prefix;
}

// The code point of a numeric entity body ("#65" or "#x41"), or nullopt if it is not a valid one.
std::optional<uint32_t> numeric_entity(std::string_view body) {
  const bool hex = body.size() >= 2 && (body[1] == 'x' || body[1] == 'X');
  const size_t first = hex ? 2 : 1;
  if (body.size() <= first) return std::nullopt;
  uint32_t cp = 0;
  for (size_t i = first; i < body.size(); ++i) {
    const char c = body[i];
    uint32_t digit;
    if (c >= '0' && c <= '9') digit = c - '0';
    else if (hex && c >= 'a' && c <= 'f') digit = c - 'a' + 10;
    else if (hex && c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    else return std::nullopt;
    cp = cp * (hex ? 16 : 10) + digit;
    if (cp > 0x10FFFF) return std::nullopt;
  }
  if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF)) return std::nullopt;
  return cp;
}

// Collapses runs of white space into one space and trims both ends.
std::string collapse_spaces(std::string_view text) {
  std::string out;
  bool pending_space = false;
  for (char c : text) {
    if (is_space(c)) {
      pending_space = !out.empty();
    } else {
      if (pending_space) out += ' ';
      pending_space = false;
      out += c;
    }
  }
  return out;
}

// The element being captured: the work's title or description, or a keyword.
enum class Field { Title, Description, Keyword };
struct Capture {
  Field field;
  size_t depth;  // stack size with the element pushed; its text and its descendants' text count
  std::string text;
};

// Where the metadata starts: <metadata ...>, <svg:metadata ...> or a bare <rdf:RDF ...>; npos if none.
size_t metadata_start(std::string_view svg) {
  for (std::string_view tag : {"<metadata", "<svg:metadata", "<rdf:RDF"}) {
    size_t pos = 0;
    while ((pos = svg.find(tag, pos)) != std::string_view::npos) {
      const size_t after = pos + tag.size();
      if (after < svg.size() && (is_space(svg[after]) || svg[after] == '>' || svg[after] == '/')) return pos;
      pos = after;
    }
  }
  return std::string_view::npos;
}

// The end of the tag whose '<' is at `pos` (the index of its '>'), skipping quoted attribute values.
size_t tag_end(std::string_view s, size_t pos) {
  char quote = 0;
  for (size_t i = pos + 1; i < s.size(); ++i) {
    const char c = s[i];
    if (quote) {
      if (c == quote) quote = 0;
    } else if (c == '"' || c == '\'') {
      quote = c;
    } else if (c == '>') {
      return i;
    }
  }
  return std::string_view::npos;
}

}  // namespace

std::string decode_xml_entities(std::string_view text, const std::string& name) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t amp = text.find('&', pos);
    if (amp == std::string_view::npos) {
      out.append(text.substr(pos));
      break;
    }
    out.append(text.substr(pos, amp - pos));
    const size_t semi = text.find(';', amp);
    MOON_CHECK(semi != std::string_view::npos && semi - amp <= 12, name, ": '&' without a matching ';' in \"",
               text.substr(amp, std::min<size_t>(16, text.size() - amp)), "\" (write & as &amp;)");
    const std::string_view body = text.substr(amp + 1, semi - amp - 1);
    if (body == "amp") out += '&';
    else if (body == "lt") out += '<';
    else if (body == "gt") out += '>';
    else if (body == "quot") out += '"';
    else if (body == "apos") out += '\'';
    else if (!body.empty() && body[0] == '#') {
      const std::optional<uint32_t> cp = numeric_entity(body);
      MOON_CHECK(cp.has_value(), name, ": invalid character reference '&", body, ";'");
      append_utf8(*cp, out);
    } else {
      fail(name, ": unknown entity '&", body, ";' (XML knows &amp; &lt; &gt; &quot; &apos; and &#N;)");
    }
    pos = semi + 1;
  }
  return out;
}

SvgMetadata parse_svg_metadata(std::string_view svg, const std::string& name) {
  SvgMetadata meta;
  const size_t start = metadata_start(svg);
  if (start == std::string_view::npos) return meta;
  meta.found = true;
  std::vector<std::string> stack;  // open elements, outermost first
  std::optional<Capture> capture;
  bool have_title = false, have_description = false;

  // Stores a finished capture into `meta`.
  auto finish = [&](Capture& c) {
    std::string text = collapse_spaces(c.text);
    if (c.field == Field::Title && !have_title) {
      meta.title = std::move(text);
      have_title = true;
    } else if (c.field == Field::Description && !have_description) {
      meta.description = std::move(text);
      have_description = true;
    } else if (c.field == Field::Keyword && !text.empty() &&
               std::find(meta.keywords.begin(), meta.keywords.end(), text) == meta.keywords.end()) {
      meta.keywords.push_back(std::move(text));
    }
  };

  size_t pos = start;
  while (true) {
    MOON_CHECK(pos < svg.size(), name, ": the metadata ends before its <", stack.empty() ? "metadata" : stack.front(),
               "> element is closed");
    if (svg[pos] != '<') {  // text up to the next tag
      size_t next = svg.find('<', pos);
      if (next == std::string_view::npos) next = svg.size();
      if (capture) capture->text += decode_xml_entities(svg.substr(pos, next - pos), name);
      pos = next;
      continue;
    }
    if (starts_with_at(svg, pos, "<!--")) {
      const size_t end = svg.find("-->", pos + 4);
      MOON_CHECK(end != std::string_view::npos, name, ": unterminated comment '<!--' in the metadata");
      pos = end + 3;
    } else if (starts_with_at(svg, pos, "<![CDATA[")) {
      const size_t end = svg.find("]]>", pos + 9);
      MOON_CHECK(end != std::string_view::npos, name, ": unterminated CDATA section in the metadata");
      if (capture) capture->text += svg.substr(pos + 9, end - pos - 9);
      pos = end + 3;
    } else if (starts_with_at(svg, pos, "<?") || starts_with_at(svg, pos, "<!")) {
      const size_t end = svg.find('>', pos);
      MOON_CHECK(end != std::string_view::npos, name, ": unterminated '", svg.substr(pos, 2), "' in the metadata");
      pos = end + 1;
    } else if (starts_with_at(svg, pos, "</")) {
      const size_t end = svg.find('>', pos);
      MOON_CHECK(end != std::string_view::npos, name, ": unterminated end tag in the metadata");
      const std::string closing = collapse_spaces(svg.substr(pos + 2, end - pos - 2));
      MOON_CHECK(!stack.empty() && stack.back() == closing, name, ": end tag </", closing, "> does not match ",
                 stack.empty() ? std::string("any open element") : "<" + stack.back() + ">");
      if (capture && capture->depth == stack.size()) {
        finish(*capture);
        capture.reset();
      }
      stack.pop_back();
      pos = end + 1;
      if (stack.empty()) break;  // the metadata element is closed
    } else {
      const size_t end = tag_end(svg, pos);
      MOON_CHECK(end != std::string_view::npos, name, ": unterminated tag '",
                 svg.substr(pos, std::min<size_t>(20, svg.size() - pos)), "' in the metadata");
      size_t name_end = pos + 1;
      while (name_end < end && !is_space(svg[name_end]) && svg[name_end] != '/') ++name_end;
      const std::string tag(svg.substr(pos + 1, name_end - pos - 1));
      MOON_CHECK(!tag.empty(), name, ": a tag without a name in the metadata");
      const bool self_closing = svg[end - 1] == '/';
      pos = end + 1;
      if (self_closing) {
        if (stack.empty()) break;  // <metadata/>: nothing inside
        continue;
      }
      const std::string parent = stack.empty() ? "" : stack.back();
      stack.push_back(tag);
      if (capture) continue;  // nested inside a captured element: its text joins the capture
      const bool in_subject = std::find(stack.begin(), stack.end(), "dc:subject") != stack.end();
      if (tag == "dc:title" && parent != "cc:Agent") capture = Capture{Field::Title, stack.size(), ""};
      else if (tag == "dc:description" && parent != "cc:Agent") capture = Capture{Field::Description, stack.size(), ""};
      else if (tag == "rdf:li" && in_subject) capture = Capture{Field::Keyword, stack.size(), ""};
    }
  }
  return meta;
}

}  // namespace moon::io
