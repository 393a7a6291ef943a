#include "replica-engine/frontend/export_factory.h"

#include "replica-engine/frontend/fuse_export.h"
#include "replica-engine/frontend/nbd_server.h"

namespace tandem::frontend {

Result<std::unique_ptr<Export>> CreateExport(EventLoop* loop, target::BlockDevice* device,
                                             const ExportSpec& spec) {
  switch (spec.kind) {
    case ExportKind::kNbd: {
      if (spec.nbd_unix_path.empty() && spec.nbd_tcp_address.empty()) {
        return Status::InvalidArgument("NBD export needs nbd_unix_path or nbd_tcp_address");
      }
      NbdServerOptions o;
      o.export_name = spec.name;
      o.unix_path = spec.nbd_unix_path;
      o.tcp_address = spec.nbd_tcp_address;
      o.write_payload_spin_us = spec.nbd_write_spin_us;
      return std::unique_ptr<Export>(std::make_unique<NbdServer>(loop, device, std::move(o)));
    }
    case ExportKind::kFuseFile: {
      if (spec.fuse_mount_dir.empty()) {
        return Status::InvalidArgument("FUSE file export needs fuse_mount_dir");
      }
      FuseExportOptions o;
      o.mount_dir = spec.fuse_mount_dir;
      o.file_name = spec.fuse_file_name;
      o.name = spec.name.empty() ? "volume" : spec.name;
      return std::unique_ptr<Export>(std::make_unique<FuseExport>(loop, device, std::move(o)));
    }
  }
  return Status::InvalidArgument("unknown export kind");
}

Result<ExportKind> ParseExportKind(std::string_view name) {
  for (ExportKind k : {ExportKind::kNbd, ExportKind::kFuseFile}) {
    if (name == ExportKindName(k)) return k;
  }
  return Status::InvalidArgument("export kind must be nbd or fuse_file, not '" + std::string(name) +
                                 "'");
}

}  // namespace tandem::frontend
