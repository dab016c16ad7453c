// The RDF metadata of an SVG file (as OpenClipart ships them): the work's dc:title, dc:description and
// the dc:subject keywords (rdf:li items). A small bounds-checked scanner over the <metadata> element (or a
// bare <rdf:RDF>): tags, comments, CDATA and the XML entities; no XML library.
//
//   <metadata><rdf:RDF><cc:Work>
//     <dc:title>Red apple</dc:title> <dc:description>A shiny red apple</dc:description>
//     <dc:subject><rdf:Bag><rdf:li>fruit</rdf:li><rdf:li>food</rdf:li></rdf:Bag></dc:subject>
//     <dc:creator><cc:Agent><dc:title>Jane</dc:title></cc:Agent></dc:creator>   (not the work's title)
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace moon::io {

struct SvgMetadata {
  bool found = false;                 // the file has a <metadata> element or an <rdf:RDF> block
  std::string title, description;     // entities decoded, white space collapsed; "" when absent
  std::vector<std::string> keywords;  // in file order, trimmed, without duplicates or empty ones
};

// Scans `svg`; throws moon::Error naming `name` when the metadata is malformed (an unterminated tag,
// comment or CDATA section, mismatched end tags, an unknown or invalid entity).
SvgMetadata parse_svg_metadata(std::string_view svg, const std::string& name);

// Decodes &amp; &lt; &gt; &quot; &apos; &#N; &#xH; into UTF-8; throws naming `name` for anything else.
std::string decode_xml_entities(std::string_view text, const std::string& name);

}  // namespace moon::io
