// Training curves as a PNG: panels of series drawn with Bresenham lines, axes with round tick values and
// labels in a 5x7 bitmap font, a legend per panel; written with stb_image_write.
#include "training/plot.h"

#include <stb/stb_image_write.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "io/file_util.h"
#include "runtime/error.h"
#include "training/metrics_log.h"

namespace moon::training {
namespace {

// The 5x7 font: each glyph is 7 rows of 5 cells, '#' = ink.
struct Glyph {
  char c;
  const char* rows[7];
};
const Glyph kFont[] = {
    {'0', {" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "}},
    {'1', {"  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "}},
    {'2', {" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"}},
    {'3', {"#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "}},
    {'4', {"   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "}},
    {'5', {"#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "}},
    {'6', {"  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "}},
    {'7', {"#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "}},
    {'8', {" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "}},
    {'9', {" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "}},
    {'A', {" ### ", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"}},
    {'B', {"#### ", "#   #", "#   #", "#### ", "#   #", "#   #", "#### "}},
    {'C', {" ### ", "#   #", "#    ", "#    ", "#    ", "#   #", " ### "}},
    {'D', {"#### ", "#   #", "#   #", "#   #", "#   #", "#   #", "#### "}},
    {'E', {"#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#####"}},
    {'F', {"#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#    "}},
    {'G', {" ### ", "#   #", "#    ", "# ###", "#   #", "#   #", " ####"}},
    {'H', {"#   #", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"}},
    {'I', {" ### ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "}},
    {'J', {"  ###", "   # ", "   # ", "   # ", "   # ", "#  # ", " ##  "}},
    {'K', {"#   #", "#  # ", "# #  ", "##   ", "# #  ", "#  # ", "#   #"}},
    {'L', {"#    ", "#    ", "#    ", "#    ", "#    ", "#    ", "#####"}},
    {'M', {"#   #", "## ##", "# # #", "# # #", "#   #", "#   #", "#   #"}},
    {'N', {"#   #", "#   #", "##  #", "# # #", "#  ##", "#   #", "#   #"}},
    {'O', {" ### ", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "}},
    {'P', {"#### ", "#   #", "#   #", "#### ", "#    ", "#    ", "#    "}},
    {'Q', {" ### ", "#   #", "#   #", "#   #", "# # #", "#  # ", " ## #"}},
    {'R', {"#### ", "#   #", "#   #", "#### ", "# #  ", "#  # ", "#   #"}},
    {'S', {" ####", "#    ", "#    ", " ### ", "    #", "    #", "#### "}},
    {'T', {"#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  "}},
    {'U', {"#   #", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "}},
    {'V', {"#   #", "#   #", "#   #", "#   #", "#   #", " # # ", "  #  "}},
    {'W', {"#   #", "#   #", "#   #", "# # #", "# # #", "# # #", " # # "}},
    {'X', {"#   #", "#   #", " # # ", "  #  ", " # # ", "#   #", "#   #"}},
    {'Y', {"#   #", "#   #", " # # ", "  #  ", "  #  ", "  #  ", "  #  "}},
    {'Z', {"#####", "    #", "   # ", "  #  ", " #   ", "#    ", "#####"}},
    {'.', {"     ", "     ", "     ", "     ", "     ", " ##  ", " ##  "}},
    {',', {"     ", "     ", "     ", "     ", " ##  ", "  #  ", " #   "}},
    {'-', {"     ", "     ", "     ", "#####", "     ", "     ", "     "}},
    {'+', {"     ", "  #  ", "  #  ", "#####", "  #  ", "  #  ", "     "}},
    {':', {"     ", " ##  ", " ##  ", "     ", " ##  ", " ##  ", "     "}},
    {'/', {"     ", "    #", "   # ", "  #  ", " #   ", "#    ", "     "}},
    {'_', {"     ", "     ", "     ", "     ", "     ", "     ", "#####"}},
    {'%', {"##   ", "##  #", "   # ", "  #  ", " #   ", "#  ##", "   ##"}},
    {'@', {" ### ", "#   #", "# ###", "# # #", "# ###", "#    ", " ####"}},
    {'(', {"   # ", "  #  ", " #   ", " #   ", " #   ", "  #  ", "   # "}},
    {')', {" #   ", "  #  ", "   # ", "   # ", "   # ", "  #  ", " #   "}},
    {'=', {"     ", "     ", "#####", "     ", "#####", "     ", "     "}},
    {'<', {"   # ", "  #  ", " #   ", "#    ", " #   ", "  #  ", "   # "}},
    {'>', {" #   ", "  #  ", "   # ", "    #", "   # ", "  #  ", " #   "}},
    {'?', {" ### ", "#   #", "    #", "   # ", "  #  ", "     ", "  #  "}},
    {' ', {"     ", "     ", "     ", "     ", "     ", "     ", "     "}},
};

const Glyph& glyph(char c) {
  if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  for (const Glyph& g : kFont)
    if (g.c == c) return g;
  for (const Glyph& g : kFont)
    if (g.c == '?') return g;
  return kFont[0];
}

// Line colours, one per series of a panel.
const uint32_t kPalette[] = {0x1f77b4, 0xd62728, 0x2ca02c, 0xff7f0e, 0x9467bd, 0x8c564b,
                             0xe377c2, 0x17becf, 0xbcbd22, 0x7f7f7f, 0x393b79, 0x637939};
constexpr uint32_t kBlack = 0x000000, kGrid = 0xe0e0e0, kWhite = 0xffffff;

// "0.25", "1.5e-04", "1200": short tick labels.
std::string tick_label(double v, double step) {
  char buf[32];
  if (v == 0) return "0";
  const double a = std::fabs(v);
  if (a >= 1e5 || a < 1e-3) {
    std::snprintf(buf, sizeof buf, "%.1e", v);
  } else {
    const int decimals = std::max(0, static_cast<int>(std::ceil(-std::log10(step) - 1e-9)));
    std::snprintf(buf, sizeof buf, "%.*f", std::min(decimals, 6), v);
  }
  return buf;
}

// One panel into the rectangle (x0, y0, w, h) of the canvas.
void draw_panel(Canvas& c, const Panel& panel, int x0, int y0, int w, int h) {
  const int left = x0 + 70, right = x0 + w - 20, top = y0 + 24, bottom = y0 + h - 30;
  c.text(x0 + 8, y0 + 6, panel.title, kBlack, 2);
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (const Series& s : panel.series)
    for (const auto& [x, y] : s.points) {
      xmin = std::min(xmin, x), xmax = std::max(xmax, x);
      ymin = std::min(ymin, y), ymax = std::max(ymax, y);
    }
  if (!std::isfinite(xmin)) {
    c.text(left + 10, (top + bottom) / 2, "no data", kBlack);
    return;
  }
  if (xmax == xmin) xmax = xmin + 1;
  if (ymax == ymin) ymax = ymin + 1, ymin -= 1;
  const double pad = (ymax - ymin) * 0.05;
  ymin -= pad, ymax += pad;
  auto px = [&](double x) { return left + static_cast<int>(std::lround((x - xmin) / (xmax - xmin) * (right - left))); };
  auto py = [&](double y) { return bottom - static_cast<int>(std::lround((y - ymin) / (ymax - ymin) * (bottom - top))); };
  // grid, ticks, labels
  const std::vector<double> yt = nice_ticks(ymin, ymax, 5), xt = nice_ticks(xmin, xmax, 8);
  const double ystep = yt.size() > 1 ? yt[1] - yt[0] : 1, xstep = xt.size() > 1 ? xt[1] - xt[0] : 1;
  for (double v : yt) {
    const int y = py(v);
    c.line(left, y, right, y, kGrid);
    c.line(left - 4, y, left, y, kBlack);
    const std::string label = tick_label(v, ystep);
    c.text(left - 8 - text_width(label), y - 3, label, kBlack);
  }
  for (double v : xt) {
    const int x = px(v);
    c.line(x, top, x, bottom, kGrid);
    c.line(x, bottom, x, bottom + 4, kBlack);
    const std::string label = tick_label(v, xstep);
    c.text(x - text_width(label) / 2, bottom + 8, label, kBlack);
  }
  c.text(right - text_width("step"), bottom + 18, "step", kBlack);
  c.line(left, top, left, bottom, kBlack);
  c.line(left, bottom, right, bottom, kBlack);
  // the series, then the legend (top right)
  int legend_w = 0;
  for (const Series& s : panel.series) legend_w = std::max(legend_w, text_width(s.name) + 22);
  for (size_t i = 0; i < panel.series.size(); ++i) {
    const Series& s = panel.series[i];
    const uint32_t colour = kPalette[i % std::size(kPalette)];
    for (size_t k = 0; k < s.points.size(); ++k) {
      const int x = px(s.points[k].first), y = py(s.points[k].second);
      if (k > 0) c.line(px(s.points[k - 1].first), py(s.points[k - 1].second), x, y, colour);
      if (s.points.size() < 40) c.fill(x - 2, y - 2, 5, 5, colour);  // few points: mark them
    }
    const int ly = top + 6 + static_cast<int>(i) * 12, lx = right - legend_w - 4;
    c.fill(lx - 2, ly - 3, legend_w + 4, 12, kWhite);
    c.fill(lx, ly + 2, 14, 3, colour);
    c.text(lx + 18, ly, s.name, kBlack);
  }
}

// The numeric value of `key` in a record, if it is a finite number.
bool number(const nlohmann::json& j, const std::string& key, double& out) {
  if (!j.contains(key) || !j[key].is_number()) return false;
  out = j[key].get<double>();
  return std::isfinite(out);
}

}  // namespace

Canvas::Canvas(int w, int h) : width(w), height(h), pixels(static_cast<size_t>(w) * h * 3, 255) {}

void Canvas::set(int x, int y, uint32_t rgb) {
  if (x < 0 || y < 0 || x >= width || y >= height) return;
  uint8_t* p = &pixels[(static_cast<size_t>(y) * width + x) * 3];
  p[0] = static_cast<uint8_t>(rgb >> 16), p[1] = static_cast<uint8_t>(rgb >> 8), p[2] = static_cast<uint8_t>(rgb);
}

void Canvas::line(int x0, int y0, int x1, int y1, uint32_t rgb) {
  const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0);
  const int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
  int err = dx + dy;
  for (;;) {
    set(x0, y0, rgb);
    if (x0 == x1 && y0 == y1) return;
    const int e2 = 2 * err;
    if (e2 >= dy) err += dy, x0 += sx;
    if (e2 <= dx) err += dx, y0 += sy;
  }
}

void Canvas::fill(int x, int y, int w, int h, uint32_t rgb) {
  for (int j = 0; j < h; ++j)
    for (int i = 0; i < w; ++i) set(x + i, y + j, rgb);
}

int text_width(const std::string& s, int scale) { return static_cast<int>(s.size()) * 6 * scale; }

int Canvas::text(int x, int y, const std::string& s, uint32_t rgb, int scale) {
  for (size_t k = 0; k < s.size(); ++k) {
    const Glyph& g = glyph(s[k]);
    for (int r = 0; r < 7; ++r)
      for (int col = 0; col < 5; ++col)
        if (g.rows[r][col] == '#') fill(x + (static_cast<int>(k) * 6 + col) * scale, y + r * scale, scale, scale, rgb);
  }
  return text_width(s, scale);
}

std::vector<double> nice_ticks(double lo, double hi, int count) {
  std::vector<double> out;
  if (!(hi > lo) || count < 1 || !std::isfinite(lo) || !std::isfinite(hi)) return out;
  const double raw = (hi - lo) / count;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = 10 * mag;
  for (double m : {1.0, 2.0, 5.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  // k * step for whole k (no accumulated rounding)
  for (double k = std::ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k += 1) out.push_back(k == 0 ? 0.0 : k * step);
  return out;
}

std::vector<Panel> metrics_panels(const std::string& metrics_path) {
  const std::vector<nlohmann::json> records = read_metrics(metrics_path);
  Panel loss{"loss", {}}, reward{"grpo reward", {}}, eval{"evaluation (val)", {}};
  std::map<std::string, Series> loss_parts, reward_parts, eval_parts;
  std::vector<std::string> eval_order;
  const char* loss_keys[] = {"loss", "inter", "intra", "mat", "pg"};
  const char* reward_keys[] = {"reward_mean", "retrieval", "format"};
  for (const nlohmann::json& j : records) {
    double step = 0, v = 0;
    if (!number(j, "step", step)) continue;
    if (j.contains("eval") && j["eval"].is_object()) {
      for (auto it = j["eval"].begin(); it != j["eval"].end(); ++it) {
        if (!it.value().is_number()) continue;
        if (!eval_parts.count(it.key())) eval_order.push_back(it.key());
        eval_parts[it.key()].points.emplace_back(step, it.value().get<double>());
      }
      continue;
    }
    if (j.contains("bad") && j["bad"] == true) continue;
    for (const char* k : loss_keys)
      if (number(j, k, v)) loss_parts[k].points.emplace_back(step, v);
    for (const char* k : reward_keys)
      if (number(j, k, v)) reward_parts[k].points.emplace_back(step, v);
  }
  for (const char* k : loss_keys)
    if (loss_parts.count(k)) loss.series.push_back({k, loss_parts[k].points});
  for (const char* k : reward_keys)
    if (reward_parts.count(k)) reward.series.push_back({k, reward_parts[k].points});
  // R@1-style metrics and accuracies (the headline ones), at most a dozen lines
  for (const std::string& k : eval_order)
    if (eval.series.size() < std::size(kPalette) && (k.find("R@1") != std::string::npos || k.find("acc") != std::string::npos ||
                                                     k.find("MRR") != std::string::npos) &&
        k.find("R@10") == std::string::npos && k.rfind("attr.", 0) != 0)
      eval.series.push_back({k, eval_parts[k].points});
  std::vector<Panel> panels = {loss};
  if (!reward.series.empty()) panels.push_back(reward);
  if (!eval.series.empty()) panels.push_back(eval);
  return panels;
}

Canvas draw_panels(const std::vector<Panel>& panels, int width, int panel_height) {
  Canvas c(width, panel_height * static_cast<int>(std::max<size_t>(1, panels.size())));
  for (size_t i = 0; i < panels.size(); ++i)
    draw_panel(c, panels[i], 0, static_cast<int>(i) * panel_height, width, panel_height);
  return c;
}

std::string plot_run(const std::string& run_or_metrics, const std::string& out_png) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const bool folder = fs::is_directory(run_or_metrics, ec);
  const std::string metrics = folder ? (fs::path(run_or_metrics) / "metrics.jsonl").string() : run_or_metrics;
  MOON_CHECK(fs::exists(metrics, ec), metrics, ": no such metrics file (pass a RUN_DIR of `moon train` or its metrics.jsonl)");
  std::string out = out_png;
  if (out.empty()) out = ((folder ? fs::path(run_or_metrics) : fs::path(metrics).parent_path()) / "curves.png").string();
  const Canvas canvas = draw_panels(metrics_panels(metrics));
  std::vector<uint8_t> png;
  stbi_write_png_to_func(
      [](void* context, void* data, int size) {
        auto* bytes = static_cast<std::vector<uint8_t>*>(context);
        bytes->insert(bytes->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
      },
      &png, canvas.width, canvas.height, 3, canvas.pixels.data(), canvas.width * 3);
  MOON_CHECK(!png.empty(), out, ": PNG encoding failed");
  const fs::path parent = fs::path(out).parent_path();
  if (!parent.empty()) io::make_dirs(parent.string());
  io::write_file_atomic(out, std::string_view(reinterpret_cast<const char*>(png.data()), png.size()));
  return out;
}

}  // namespace moon::training
