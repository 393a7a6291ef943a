#pragma once
// Minimal leveled logging to stderr: "2026-11-25T06:30:00.123Z I replica_server: message".
// One fprintf per line (stderr is unbuffered, so lines from threads do not mix).
// Not for the per-I/O hot path: log state changes and errors, not requests.

#include <cstdarg>

namespace tandem {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
void LogMessage(LogLevel level, const char* tag, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));

}  // namespace tandem

#define TLOG_DEBUG(tag, ...)                                                  \
  do {                                                                        \
    if (::tandem::GetLogLevel() <= ::tandem::LogLevel::kDebug)                \
      ::tandem::LogMessage(::tandem::LogLevel::kDebug, tag, __VA_ARGS__);     \
  } while (0)
#define TLOG_INFO(tag, ...) ::tandem::LogMessage(::tandem::LogLevel::kInfo, tag, __VA_ARGS__)
#define TLOG_WARN(tag, ...) ::tandem::LogMessage(::tandem::LogLevel::kWarning, tag, __VA_ARGS__)
#define TLOG_ERROR(tag, ...) ::tandem::LogMessage(::tandem::LogLevel::kError, tag, __VA_ARGS__)
