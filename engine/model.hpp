// The analytic pre-copy model of the brief (section 3), so that every run can
// print its prediction beside the measurement.
//   r = P·D / R
//   n = min(max(ceil(log_r(V_th / Vm)), n_min), n_max)
//   one VM:   T_mig = (Vm/R)·(1 − r^(n+1))/(1 − r) + T_res,  T_down = r^n·Vm/R + T_res
//   serial-correlated (the notes' serial):
//             T_mig = m·Vm/R·(1 − r^(n+1))/(1 − r) + T_res
//             T_down = Vm/R·r^n + (m−1)·Vm/R·(1 − r^(n+1))/(1 − r) + T_res
//   serial (one complete live migration after another, as operators do):
//             T_mig = m·(Vm/R·(1 − r^(n+1))/(1 − r) + T_res),  T_down = r^n·Vm/R + T_res per VM
//   parallel: T_mig = m·Vm/R·(1 − (m·r)^(n+1))/(1 − m·r) + T_res
//             T_down = m·Vm/R·(m·r)^n + T_res
#pragma once

#include <cstdint>

namespace lm::engine {

enum class MultiVm { serial_correlated, serial, parallel };

struct ModelInput {
  double page_bytes = 4096;        // P
  double dirty_pages_per_s = 0;    // D
  double link_bytes_per_s = 0;     // R (must be > 0)
  double vm_bytes = 0;             // Vm
  double threshold_bytes = 0;      // V_th: stop when the remaining dirty set is below it
  unsigned max_rounds = 30;        // n_max
  // n_min: rounds the migration runs live whatever the threshold. The
  // notes' n = 0 is a pure stop-and-copy; the engine's pre-copy always sends
  // round 0 while the guest runs (its stop criteria are checked after each
  // round), so it gives 1.
  unsigned min_rounds = 0;
  double resume_s = 0;             // T_res
  unsigned vms = 1;                // m
  MultiVm multi = MultiVm::serial_correlated;
};

struct ModelPrediction {
  double ratio = 0;        // r (m·r for parallel VMs: the effective ratio)
  unsigned rounds = 0;     // n
  bool converges = false;  // effective ratio < 1
  double total_s = 0;      // T_mig
  double downtime_s = 0;   // T_down (serial: each VM's)
};

ModelPrediction predict(const ModelInput& in);

}  // namespace lm::engine
