// Sub-commands register themselves here, one file each (src/cli/cmd_*.cpp), so that the
// front end grows without a central list to edit.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace gdn::cli {

struct Command {
  std::string path;  // "train", or "bench ops" for a sub-command of "bench"
  std::string help;
  // Declares the command's options (with their help text) and sets its callback.
  std::function<void(CLI::App&)> setup;
};

std::vector<Command>& command_registry();

inline int register_command(Command c) {
  command_registry().push_back(std::move(c));
  return int(command_registry().size());
}

}  // namespace gdn::cli

#define GDN_CLI_CONCAT2(a, b) a##b
#define GDN_CLI_CONCAT(a, b) GDN_CLI_CONCAT2(a, b)
// GDN_COMMAND("bench ops", "help", [](CLI::App& app) { ... });
#define GDN_COMMAND(...) \
  static const int GDN_CLI_CONCAT(gdn_command_, __LINE__) = ::gdn::cli::register_command({__VA_ARGS__})
