// `moon plot`: training curves from a run's metrics.jsonl drawn into a PNG (loss, GRPO reward, evaluation
// metrics against the step), with our own line drawing, axes, tick labels in a small built-in bitmap font
// and a legend.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace moon::training {

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (step, value), in step order
};

struct Panel {
  std::string title;
  std::vector<Series> series;
};

// An RGB image, (H, W, 3) row-major u8.
struct Canvas {
  int width = 0, height = 0;
  std::vector<uint8_t> pixels;
  Canvas(int w, int h);
  void set(int x, int y, uint32_t rgb);                    // ignores points outside
  void line(int x0, int y0, int x1, int y1, uint32_t rgb);  // Bresenham
  void fill(int x, int y, int w, int h, uint32_t rgb);
  // Text in the 5x7 font (lower case is drawn as upper case), `scale` pixels per font dot; returns the width.
  int text(int x, int y, const std::string& s, uint32_t rgb, int scale = 1);
};
int text_width(const std::string& s, int scale = 1);

// The panels of a metrics log: "loss" (total and parts), "reward" (when GRPO ran), "evaluation" (when any).
std::vector<Panel> metrics_panels(const std::string& metrics_path);
// Draws the panels stacked, width x (panel_height per panel).
Canvas draw_panels(const std::vector<Panel>& panels, int width = 960, int panel_height = 300);
// Tick values for [lo, hi]: about `count` round numbers (1, 2, 5 x 10^k steps) inside the range.
std::vector<double> nice_ticks(double lo, double hi, int count);

// `moon plot`: RUN_DIR or a metrics file -> PNG (default RUN_DIR/curves.png). Returns the PNG path.
std::string plot_run(const std::string& run_or_metrics, const std::string& out_png);

}  // namespace moon::training
