// Walks the op registry: every op, forward vs double reference (with poisoned outputs), strided inputs,
// and gradients vs finite differences. "ops" runs sizes 1, 3, 17; "ops_sweep" adds 127, more seeds and
// every instruction-set path.
#include <doctest/doctest.h>

#include <set>

#include "ops/cpu/isa.h"
#include "ops/elementwise.h"
#include "ops/harness.h"

using namespace moon;

namespace {

void check_all(const std::vector<int64_t>& sizes, const std::vector<uint64_t>& seeds) {
  for (const OpInfo& op : op_registry()) {
    for (int64_t n : sizes) {
      for (uint64_t seed : seeds) {
        const OpCheckResult r = check_op(op, n, seed);
        INFO("op ", op.name, " n=", n, " seed=", seed, " case: ", r.desc, " -> ", r.message);
        CHECK(r.ok);
      }
    }
  }
}

}  // namespace

TEST_SUITE("ops") {

TEST_CASE("registry: every op passes forward, strided and gradient checks") {
  REQUIRE(!op_registry().empty());
  check_all({1, 3, 17}, {1, 2});
}

TEST_CASE("registry: names are unique and every op has a case generator") {
  std::set<std::string> names;
  for (const OpInfo& op : op_registry()) {
    CHECK(names.insert(op.name).second);
    CHECK(static_cast<bool>(op.make_case));
  }
}

TEST_CASE("harness catches a wrong op") {
  OpInfo wrong = *find_op("add");
  auto make = wrong.make_case;
  wrong.make_case = [make](CaseGen& g) {
    OpCase c = make(g);
    auto run = c.run;
    c.run = [run](const std::vector<Tensor>& in) {
      auto out = run(in);
      out[0] = out[0] * 1.001;
      return out;
    };
    return c;
  };
  CHECK_FALSE(check_op(wrong, 3, 1).ok);
}

}  // TEST_SUITE

TEST_SUITE("ops_sweep") {

TEST_CASE("registry sweep: sizes up to 127, several seeds, every ISA path") {
  const cpu::Isa original = cpu::cpu_isa();
  for (cpu::Isa isa : {cpu::Isa::AVX512, cpu::Isa::AVX2, cpu::Isa::Generic}) {
    try {
      cpu::set_cpu_isa(isa);
    } catch (const Error&) {
      continue;  // this CPU lacks it
    }
    INFO("isa ", cpu::isa_name(isa));
    check_all({1, 3, 17, 127}, {11, 12, 13});
  }
  cpu::set_cpu_isa(original);
}

}  // TEST_SUITE
