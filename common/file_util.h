#pragma once
// Crash-safe replacement of small files (pid/port files, records, configs),
// leveldb's SetCurrentFile pattern plus the directory fsync it leaves out:
// write a temp file beside the target, fsync it, rename it over the target,
// fsync the directory. After a crash a reader finds the old contents or the
// new ones, never a mix or an empty file, and once WriteFileAtomically
// returned OK the new contents survive a power loss.

#include <sys/types.h>

#include <string>
#include <string_view>

#include "common/status.h"

namespace tandem {

// fsync(2) of a directory, so the entries created, renamed or removed in it
// are durable. Errors as PosixError naming the directory.
Status SyncDir(const std::string& dir);

// Replaces `path` with `contents` as described above; the file gets `mode`
// (before the umask). The temp file is `path` + ".tmp" and is removed on
// failure. Errors as PosixError naming the step and the file.
// Not for concurrent writers of one path.
Status WriteFileAtomically(const std::string& path, std::string_view contents, mode_t mode = 0644);

// The directory part of `path` ("/a/b" -> "/a", "b" -> ".", "/b" -> "/").
std::string DirName(const std::string& path);

}  // namespace tandem
