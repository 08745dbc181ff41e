// Errors and small utilities shared by every layer of gdn.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace gdn {

// Every user-facing failure (bad shape, NaN input, malformed file) is a gdn::Error
// whose message names the tensor or file and what was expected.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class... Args>
std::string cat(Args&&... args) {
  std::ostringstream s;
  (s << ... << std::forward<Args>(args));
  return s.str();
}

template <class... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(cat(std::forward<Args>(args)...));
}

}  // namespace gdn

// GDN_CHECK(cond, "tensor q: expected ", shape, ...) throws gdn::Error when cond is false.
#define GDN_CHECK(cond, ...)              \
  do {                                    \
    if (!(cond)) ::gdn::fail(__VA_ARGS__); \
  } while (0)
