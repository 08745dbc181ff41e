// Small helpers shared by the inference commands.
#pragma once

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

namespace gdn::cli {

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Resident memory of this process in MiB (VmRSS), 0 where /proc is not there.
inline double rss_mib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return 0;
}

}  // namespace gdn::cli
