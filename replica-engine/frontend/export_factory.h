#pragma once
// CreateExport: the one place that knows every Export implementation, so the
// attach layer (a target + its export) picks one by kind without including
// them. Creates only (any thread: nothing touches the loop yet); the caller
// calls Prepare() off the device's loop thread, then Start() on it
// (export.h).

#include <memory>
#include <string>
#include <string_view>

#include "common/event_loop.h"
#include "common/result.h"
#include "replica-engine/block_device/block_device.h"
#include "replica-engine/frontend/export.h"

namespace tandem::frontend {

struct ExportSpec {
  ExportKind kind = ExportKind::kNbd;
  std::string name;  // the volume id: NBD export name, FUSE fsname
  // kNbd: at least one of these.
  std::string nbd_unix_path;
  std::string nbd_tcp_address;
  // kNbd: NbdServerOptions::write_payload_spin_us.
  uint32_t nbd_write_spin_us = 0;
  // kFuseFile: the mount point (created, removed at shutdown) and the file
  // in it that losetup is given.
  std::string fuse_mount_dir;
  std::string fuse_file_name = "volume";
};

// INVALID_ARGUMENT naming the missing field (nbd_unix_path/nbd_tcp_address
// for kNbd, fuse_mount_dir for kFuseFile).
// REQUIRES: loop and device outlive the export.
Result<std::unique_ptr<Export>> CreateExport(EventLoop* loop, target::BlockDevice* device,
                                             const ExportSpec& spec);

// "nbd" -> kNbd, "fuse_file" -> kFuseFile (ExportKindName's inverse);
// INVALID_ARGUMENT otherwise.
Result<ExportKind> ParseExportKind(std::string_view name);

}  // namespace tandem::frontend
