// g4's one error type: every failure that a user can cause (bad file, bad flag,
// bad JSON) is thrown as g4::Error with an actionable message and caught in main.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace g4 {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace g4
