// Flag reading shared by the benchmarks: `--name value` pairs, positive integers checked,
// every problem sent to the benchmark's usage function (which exits).
#ifndef STEADYEVAL_BENCH_BENCH_FLAGS_H_
#define STEADYEVAL_BENCH_BENCH_FLAGS_H_

#include <cstdlib>
#include <string>

namespace steadyeval {

class BenchFlags {
 public:
  using UsageFn = void (*)(const std::string& why);  // must not return

  BenchFlags(int argc, char** argv, UsageFn usage) : argc_(argc), argv_(argv), usage_(usage) {}

  // Advances to the next flag; false at the end.
  bool Next() {
    if (++i_ >= argc_) return false;
    flag_ = argv_[i_];
    return true;
  }
  const std::string& flag() const { return flag_; }

  // The current flag's value.
  std::string Value() {
    if (i_ + 1 >= argc_) usage_("missing value for " + flag_);
    return argv_[++i_];
  }
  // The current flag's value as an integer in 1..2^20.
  int Positive() {
    const std::string v = Value();
    char* end = nullptr;
    const long x = std::strtol(v.c_str(), &end, 10);
    if (end == v.c_str() || *end != '\0' || x < 1 || x > 1 << 20) {
      usage_("bad value for " + flag_ + ": " + v);
    }
    return static_cast<int>(x);
  }
  // Ends parsing of an unknown flag (or --help).
  [[noreturn]] void Unknown() {
    usage_(flag_ == "--help" || flag_ == "-h" ? "help" : "unknown flag " + flag_);
    std::exit(2);
  }

 private:
  int argc_;
  char** argv_;
  UsageFn usage_;
  int i_ = 0;
  std::string flag_;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_BENCH_BENCH_FLAGS_H_
