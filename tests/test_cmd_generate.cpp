// `moon generate` run as a process: the reasoning of a fresh tiny model for a text, a manifest, several
// samples, and the errors of bad flags.
#include <doctest/doctest.h>

#include <string>

#include "io/file_util.h"
#include "test_util.h"

using namespace moon;
using test::contains;

TEST_SUITE("cmd_generate") {
  TEST_CASE("moon generate --config tiny --text prints the reasoning, greedy and reproducible") {
    test::TempDir dir("generate");
    const test::CommandRun run = test::run_moon(dir, "generate --config tiny --text 'a red shirt' --max-tokens 6");
    INFO(run.err);
    REQUIRE(run.status == 0);
    CHECK(contains(run.out, "== a red shirt\n<think>"));
    CHECK(test::run_moon(dir, "generate --config tiny --text 'a red shirt' --max-tokens 6").out == run.out);

    const test::CommandRun sampled =
        test::run_moon(dir, "generate --config tiny --text 'a red shirt' --max-tokens 6 --samples 3 --temperature 1 --seed 5");
    REQUIRE(sampled.status == 0);
    CHECK(contains(sampled.out, "\n[1] <think>"));
    CHECK(contains(sampled.out, "\n[3] <think>"));
  }

  TEST_CASE("moon generate --manifest: one block per product with its id and title") {
    test::TempDir dir("generate");
    io::write_file_atomic(dir / "m.jsonl",
                          "{\"id\": \"p1\", \"title\": \"blue jeans\", \"images\": [], \"category\": [\"a\"]}\n"
                          "{\"id\": \"p2\", \"title\": \"green hat\", \"images\": [], \"category\": [\"b\"], \"split\": \"val\"}\n"
                          "{\"id\": \"p3\", \"title\": \"black boots\", \"images\": [], \"category\": [\"b\"], \"split\": \"val\"}\n");
    const test::CommandRun all = test::run_moon(dir, "generate --config tiny --manifest " + test::quoted(dir / "m.jsonl") +
                                                         " --max-tokens 4");
    INFO(all.err);
    REQUIRE(all.status == 0);
    CHECK(contains(all.out, "== p1: blue jeans\n<think>"));
    CHECK(contains(all.out, "== p2: green hat\n<think>"));
    CHECK(contains(all.out, "== p3: black boots\n<think>"));
    const test::CommandRun val = test::run_moon(
        dir, "generate --config tiny --manifest " + test::quoted(dir / "m.jsonl") + " --split val --limit 1 --max-tokens 4");
    REQUIRE(val.status == 0);
    CHECK(contains(val.out, "== p2: green hat\n"));
    CHECK(!contains(val.out, "p1"));
    CHECK(!contains(val.out, "p3"));
  }

  TEST_CASE("moon generate: --help and clear errors") {
    test::TempDir dir("generate");
    const test::CommandRun help = test::run_moon(dir, "generate --help");
    CHECK(help.status == 0);
    CHECK(contains(help.out, "usage: moon generate (--model CKPT | --config CFG)"));
    auto error_of = [&](const std::string& args) {
      const test::CommandRun run = test::run_moon(dir, "generate " + args);
      CHECK(run.status == 2);
      return run.err;
    };
    CHECK(contains(error_of("--config tiny"), "moon generate: error: pass either --manifest M or --image FILE / --text STR"));
    CHECK(contains(error_of("--text x"), "pass exactly one of --model CKPT (a moon checkpoint) and --config CFG"));
    CHECK(contains(error_of("--config tiny --text x --samples 2"),
                   "--samples 2 with greedy decoding gives identical reasonings; pass --temperature T > 0"));
    CHECK(contains(error_of("--config tiny --text x --temperature hot"), "--temperature must be a number in [0, "));
    CHECK(contains(error_of("--config tiny --text x --top-p 2"), "--top-p must be a number in [0, 1], got '2'"));
    CHECK(contains(error_of("--config tiny --text x --limit 3"), "--split and --limit go with --manifest M"));
    CHECK(contains(error_of("--config tiny --text x --bogus 1"), "--bogus"));
    CHECK(contains(error_of("--config tiny --manifest " + test::quoted(dir / "missing.jsonl")), "missing.jsonl"));
  }
}
