#pragma once
// What `tandemctl target watch` prints: the rebuild progress bar, the line for
// a target with no rebuild running, and when a watch --until-done is over.
// Pure functions of a Target message, so they are unit tested without an
// engine (progress_bar_test.cc).
//
//   [#########.......]  56%  1.4 GiB / 2.5 GiB  85.3 MiB/s  ETA 17s  INCREMENTAL from
//   127.0.0.1:9501 -> 127.0.0.1:9503   (one line)

#include <cstdint>
#include <string>

#include "replica-engine/proto/engine.pb.h"

namespace tandem::tandemctl {

// Binary units, one decimal from KiB up: "0 B", "512 B", "1.0 KiB", "1.2 GiB".
std::string FormatBytes(uint64_t bytes);
// FormatBytes per second: "85.3 MiB/s"; "0 B/s" for 0, negative or NaN.
std::string FormatRate(double bytes_per_sec);
// Rounded to whole seconds: "17s", "2m05s", "1h02m"; "--" when unknown
// (negative, NaN or infinite).
std::string FormatEta(double seconds);

// The progress bar of `rebuild` (brackets plus `width` cells, '#' done and '.'
// to do), percentage, bytes, rate, ETA, mode and direction. The percentage is
// rounded down, so 100% means every byte is done; a DONE rebuild is always a
// full bar. A RUNNING rebuild that has no rate yet shows "ETA --". DONE and
// FAILED rebuilds end with "  DONE" / "  FAILED: <last_error>".
std::string RenderProgressBar(const engine::v1::RebuildStatus& rebuild, int width = 16);

// The watch line for `target`: the progress bar while a rebuild runs, when it
// failed, and when it is DONE with every replica HEALTHY; else the target's
// state and its replicas
// ("DEGRADED  no rebuild running  127.0.0.1:9501=HEALTHY 127.0.0.1:9502=FAULTED").
std::string RenderWatchLine(const engine::v1::Target& target, int width = 16);

enum class WatchVerdict {
  kContinue,  // a rebuild is running, or a replica is still to be rebuilt
  kDone,      // every replica is HEALTHY (rebuilt, or nothing to rebuild)
  kFailed,    // the rebuild FAILED and a replica is not HEALTHY
};
// When `tandemctl target watch --until-done` ends. A replica that is not
// HEALTHY keeps the watch going even after a DONE: VolumeTarget adds replicas
// as FAULTED and reconnects faulted ones on a timer, so they are rebuilt next
// (a replica that never comes back ends the watch at its timeout).
WatchVerdict JudgeWatch(const engine::v1::Target& target);

}  // namespace tandem::tandemctl
