// What the benchmarks print about the machine they ran on: the same line in every report,
// so figures from different benchmarks can be compared (the machine is shared and noisy).
#ifndef STEADYEVAL_BENCH_BENCH_MACHINE_H_
#define STEADYEVAL_BENCH_BENCH_MACHINE_H_

#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace steadyeval {

// The 1-minute load average (other work on the machine skews every figure).
inline std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one;
  in >> one;
  return one.empty() ? "?" : one;
}

// "2 cores (CPU model), 24 GiB RAM, Linux <release> x86_64".
inline std::string MachineLine() {
  std::string cpu = "unknown CPU";
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  }
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  struct utsname u {};
  ::uname(&u);
  char gib[32];
  std::snprintf(gib, sizeof(gib), "%.0f", pages * static_cast<double>(page) / (1ull << 30));
  std::ostringstream m;
  m << std::thread::hardware_concurrency() << " cores (" << cpu << "), " << gib << " GiB RAM, "
    << u.sysname << " " << u.release << " " << u.machine;
  return m.str();
}

}  // namespace steadyeval

#endif  // STEADYEVAL_BENCH_BENCH_MACHINE_H_
