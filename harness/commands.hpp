// The livemig subcommands. Each lives in its own cmd_*.cpp: it adds its
// options to its CLI11 subcommand (harness/main.cpp made it, with its name
// and summary) and returns what runs it once the command line was parsed,
// giving the process exit code (0 success, 1 failure of the operation; a
// bad command line, 2, never gets that far).
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace lm::cmd {

using Run = std::function<int()>;

Run check(CLI::App& app);            // cmd_check.cpp
Run track(CLI::App& app);            // cmd_track.cpp
Run snapshot(CLI::App& app);         // cmd_snapshot.cpp
Run bench_compress(CLI::App& app);   // cmd_bench_compress.cpp
Run bench_transport(CLI::App& app);  // cmd_bench_transport.cpp
Run run(CLI::App& app);              // cmd_run.cpp
Run dest(CLI::App& app);             // cmd_migrate.cpp
Run source(CLI::App& app);           // cmd_migrate.cpp
Run image_verify(CLI::App& app);     // cmd_image.cpp
Run image_show(CLI::App& app);       // cmd_image.cpp
Run compare(CLI::App& app);          // cmd_compare.cpp
Run perf_gate(CLI::App& app);        // cmd_perf_gate.cpp
Run report(CLI::App& app);           // cmd_report.cpp
Run rig(CLI::App& app);              // cmd_rig.cpp

}  // namespace lm::cmd
