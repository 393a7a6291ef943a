#!/usr/bin/env python3
"""size_report.py: source files over ~600 lines and C++ functions over ~80.

The style rule (files < ~600 lines, functions < ~80) allows exceptions that
say why: a file with a line `// size: <reason>` (or `# size:` in scripts) in
its first 40 lines, or a function with such a line right above it (above
its leading comment, if any), is listed as "explained" and otherwise left
alone.

  tests/layering/size_report.py [--root DIR] [--file-lines N] [--function-lines N]
                                [--unexplained] [--tests]

Test files (*_test.cc, *_test.sh, tests/) are skipped unless --tests. Prints
one line per finding; always exits 0 (a report, not a gate).

Functions are found by a heuristic that fits this code base's clang-format
style: a definition starts at column 0 (a line that is not a namespace,
class, struct, enum, extern block, preprocessor line or comment, whose
statement contains "(" and whose first "{" ends a line) and ends at the next
line that is exactly "}". Lambdas count toward their enclosing function.
"""

import argparse
import os
import re
import sys

SKIP_DIRS = {".git", "build", "proto_gen", "node_modules", "third_party"}
SOURCE_EXT = (".cc", ".h", ".py", ".sh")
NOT_FUNCTION = re.compile(r"^(namespace|class|struct|enum|union|extern|template\s*<[^>]*>\s*(class|struct)|#|//|/\*|\*|})")
REASON = re.compile(r"^\s*(//|#)\s*size:")


def is_test(rel):
    base = os.path.basename(rel)
    return (rel.startswith("tests/") or "/testing/" in rel or base.startswith("testing_")
            or re.search(r"_test\.(cc|sh|py)$", base) is not None)


def source_files(root, with_tests):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in SKIP_DIRS and not d.startswith("build"))
        for name in sorted(filenames):
            if not name.endswith(SOURCE_EXT):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if not with_tests and is_test(rel):
                continue
            yield path, rel


def has_reason_above(lines, start):
    """A `// size:` line directly above the function or its comment block."""
    i = start - 1
    # The signature may span several lines above the brace line; walk up
    # through the comment block that precedes the definition.
    while i >= 0 and lines[i].lstrip().startswith(("//", "template")):
        if REASON.match(lines[i]):
            return True
        i -= 1
    return False


def functions(lines):
    """(first line index, length, name) of each column-0 function definition."""
    out = []
    i = 0
    n = len(lines)
    while i < n:
        line = lines[i]
        if not line or line[0].isspace() or NOT_FUNCTION.match(line):
            i += 1
            continue
        # Gather the statement up to the line that ends with "{" (a
        # signature may wrap) or a ";" (a declaration).
        j = i
        stmt = line
        while j < n and not lines[j].rstrip().endswith(("{", ";", "}")) and j - i < 8:
            j += 1
            if j < n:
                stmt += " " + lines[j].strip()
        if j >= n or not lines[j].rstrip().endswith("{") or "(" not in stmt or "=" in stmt.split("(")[0]:
            i = j + 1
            continue
        end = j + 1
        while end < n and lines[end].rstrip() != "}":
            end += 1
        m = re.search(r"([A-Za-z_][\w:~]*(?:operator\S*)?)\s*\(", stmt)
        name = m.group(1) if m else stmt[:40]
        out.append((i, end - i + 1, name))
        i = end + 1
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=os.path.join(os.path.dirname(__file__), "..", ".."))
    ap.add_argument("--file-lines", type=int, default=600)
    ap.add_argument("--function-lines", type=int, default=80)
    ap.add_argument("--unexplained", action="store_true", help="omit the explained ones")
    ap.add_argument("--tests", action="store_true", help="include test code")
    args = ap.parse_args()
    root = os.path.abspath(args.root)

    big_files, long_functions = [], []
    for path, rel in source_files(root, args.tests):
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        if len(lines) > args.file_lines:
            explained = any(REASON.match(l) for l in lines[:40])
            big_files.append((rel, len(lines), explained))
        if rel.endswith((".cc", ".h")):
            for start, length, name in functions(lines):
                if length > args.function_lines:
                    long_functions.append(
                        (rel, start + 1, length, name, has_reason_above(lines, start)))

    print(f"files over {args.file_lines} lines:")
    for rel, count, explained in sorted(big_files, key=lambda x: -x[1]):
        if explained and args.unexplained:
            continue
        print(f"  {count:5d}  {rel}{'  (explained)' if explained else ''}")
    print(f"functions over {args.function_lines} lines:")
    for rel, line, length, name, explained in sorted(long_functions, key=lambda x: -x[2]):
        if explained and args.unexplained:
            continue
        print(f"  {length:5d}  {rel}:{line} {name}{'  (explained)' if explained else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
