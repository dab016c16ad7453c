// `moon plot`: a run's training curves (loss, GRPO reward, evaluation metrics against the step) as a PNG.
#include <cstdio>

#include "cli/commands.h"
#include "runtime/error.h"
#include "training/plot.h"

namespace moon::cli {

MOON_COMMAND(plot, 67, "draw a run's loss, reward and evaluation curves into a PNG")(const Args& args) {
  if (args.empty() || has_flag(args, "--help") || has_flag(args, "-h")) {
    std::printf(
        "usage: moon plot RUN_DIR_OR_METRICS [--out PNG]\n"
        "  Draws the loss (and its parts), the GRPO reward and the evaluation metrics of a `moon train` run\n"
        "  against the step. Reads RUN_DIR/metrics.jsonl (or the given metrics file); writes --out (default\n"
        "  RUN_DIR/curves.png).\n");
    return args.empty() ? 1 : 0;
  }
  check_flags("plot", args, {"--out", "--help"});
  const std::vector<std::string> inputs = positionals(args, {"--out"});
  MOON_CHECK(inputs.size() == 1, "moon plot takes one RUN_DIR or metrics.jsonl, got ", inputs.size(),
             " (try `moon plot --help`)");
  const std::string out = training::plot_run(inputs[0], flag_value(args, "--out", ""));
  std::printf("wrote %s\n", out.c_str());
  return 0;
}

}  // namespace moon::cli
