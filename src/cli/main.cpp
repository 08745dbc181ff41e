// gdn: the command-line front end. Each sub-command lives in its own cmd_*.cpp.
#include <cstdio>
#include <map>
#include <sstream>

#include "cli/command.h"
#include "gdn/common.h"

namespace gdn::cli {
std::vector<Command>& command_registry() {
  static std::vector<Command> registry;
  return registry;
}
}  // namespace gdn::cli

int main(int argc, char** argv) {
  CLI::App app{"gdn: Gated DeltaNet and the delta-rule family — kernels, layers, training, inference"};
  app.require_subcommand(1);
  // Parents ("bench") are made on first use; leaves carry the command's own setup.
  std::map<std::string, CLI::App*> parents;
  for (const auto& cmd : gdn::cli::command_registry()) {
    std::istringstream words(cmd.path);
    std::string word, prefix;
    CLI::App* at = &app;
    std::vector<std::string> parts;
    while (words >> word) parts.push_back(word);
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      prefix += parts[i] + " ";
      auto it = parents.find(prefix);
      if (it == parents.end()) {
        CLI::App* sub = at->add_subcommand(parts[i], parts[i] + " commands");
        sub->require_subcommand(1);
        it = parents.emplace(prefix, sub).first;
      }
      at = it->second;
    }
    CLI::App* leaf = at->add_subcommand(parts.back(), cmd.help);
    cmd.setup(*leaf);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const gdn::Error& e) {
    std::fprintf(stderr, "gdn: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gdn: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
