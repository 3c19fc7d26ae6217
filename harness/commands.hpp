// The livemig subcommands. Each lives in its own cmd_*.cpp, takes the
// arguments after its name, and returns the process exit code
// (0 success, 1 failure of the operation, 2 usage error).
#pragma once

#include <string>
#include <vector>

namespace lm::cmd {

using Argv = std::vector<std::string>;

int check(const Argv& args);            // cmd_check.cpp
int track(const Argv& args);            // cmd_track.cpp
int snapshot(const Argv& args);         // cmd_snapshot.cpp
int bench_compress(const Argv& args);   // cmd_bench_compress.cpp
int bench_transport(const Argv& args);  // cmd_bench_transport.cpp
int run(const Argv& args);              // cmd_run.cpp
int dest(const Argv& args);             // cmd_migrate.cpp
int source(const Argv& args);           // cmd_migrate.cpp
int image(const Argv& args);            // cmd_image.cpp

}  // namespace lm::cmd
