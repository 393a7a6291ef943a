#!/usr/bin/env python3
"""Checks every #include "..." and every CMake library link of the
repository against allowlist.txt.

  check_includes.py <repo root> [<allowlist>]   exit 0: clean, 1: violations
  check_includes.py --self-test                 the checker on a synthetic tree

Prints one line per violation: the file, the line, the include, and the
modules involved, and what to do. See allowlist.txt for the rules.
"""
import os
import re
import sys
import tempfile

SOURCE_SUFFIXES = (".h", ".hh", ".hpp", ".cc", ".cpp", ".c")
SKIP_DIRS = {".git", "build", "node_modules", "corpus"}
INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def parse_allowlist(path):
    allowed, test_allowed, exceptions = {}, {}, set()
    with open(path) as f:
        for n, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            head, sep, tail = line.partition(":")
            if not sep:
                raise SystemExit(f"{path}:{n}: expected 'MODULE: ALLOWED...', got {raw.strip()!r}")
            words = head.split()
            deps = tail.split()
            if words[0] == "exception" and len(words) == 2 and len(deps) == 1:
                exceptions.add((words[1], deps[0]))
            elif words[0] == "test" and len(words) == 2:
                test_allowed.setdefault(words[1], set()).update(deps)
            elif len(words) == 1:
                if words[0] in allowed:
                    raise SystemExit(f"{path}:{n}: module {words[0]} listed twice")
                allowed[words[0]] = set(deps)
            else:
                raise SystemExit(f"{path}:{n}: cannot parse {raw.strip()!r}")
    for module in list(test_allowed) + [d for deps in allowed.values() for d in deps]:
        if module not in allowed:
            raise SystemExit(f"{path}: module {module} is used but not declared")
    return allowed, test_allowed, exceptions


def module_of(path, modules):
    """The longest declared module `path` starts with, or None."""
    best = None
    for m in modules:
        if (path == m or path.startswith(m + "/")) and (best is None or len(m) > len(best)):
            best = m
    return best


def is_test_code(rel):
    name = os.path.basename(rel)
    return (name.endswith("_test.cc") or name.startswith("testing")
            or "/testing/" in "/" + rel)


def source_files(root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in SKIP_DIRS and not d.startswith("build"))
        for name in sorted(filenames):
            if name.endswith(SOURCE_SUFFIXES):
                yield os.path.relpath(os.path.join(dirpath, name), root)


def check(root, allowlist):
    allowed, test_allowed, exceptions = parse_allowlist(allowlist)
    top_dirs = {d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))}
    problems, notes, used_exceptions, files = [], [], set(), 0
    for rel in source_files(root):
        files += 1
        own = module_of(rel, allowed)
        if own is None:
            problems.append(f"{rel}: no module for this folder; declare one in {allowlist}")
            continue
        ok = allowed[own] | {own}
        if is_test_code(rel):
            ok |= test_allowed.get(own, set())
        with open(os.path.join(root, rel), errors="replace") as f:
            for n, line in enumerate(f, 1):
                m = INCLUDE_RE.match(line)
                if not m:
                    continue
                inc = m.group(1)
                if inc.split("/", 1)[0] not in top_dirs or "/" not in inc:
                    continue  # external (gtest/..., grpcpp/...) or local
                target = module_of(inc, allowed)
                if target is None:
                    problems.append(f"{rel}:{n}: #include \"{inc}\": no module declared for it")
                elif target not in ok:
                    if (rel, inc) in exceptions:
                        used_exceptions.add((rel, inc))
                        continue
                    problems.append(
                        f"{rel}:{n}: #include \"{inc}\": {own} may not include {target} "
                        f"(allowed: {', '.join(sorted(allowed[own])) or 'nothing'}); "
                        f"an arrow against the data flow, see {allowlist}")
    # A stale exception is only a note: whoever fixes the violation may land
    # before the line is removed, and that must not turn the suite red.
    for rel, inc in sorted(exceptions - used_exceptions):
        if os.path.basename(rel) == "CMakeLists.txt":
            continue  # check_links reports those
        notes.append(f"NOTE: exception {rel}: {inc} is no longer needed; remove it from {allowlist}")
    return files, problems, notes


CMAKE_CALL_RE = r"\b{}\(\s*([^\s)]+)([^)]*)\)"


def cmake_calls(text, command):
    """(first argument, the other arguments) of each call of `command`."""
    text = re.sub(r"#[^\n]*", "", text)  # comments
    for m in re.finditer(CMAKE_CALL_RE.format(command), text):
        yield m.group(1), m.group(2).split()


def check_links(root, allowlist):
    """Each CMake library links only modules its module may include.

    A library belongs to the module of its first source (tandem_proto_library:
    of its .proto); an item that is no library of ours (gRPC::grpc++,
    tandem_options) is not checked. Libraries named *testing* are test code.
    """
    allowed, test_allowed, exceptions = parse_allowlist(allowlist)
    lists = [os.path.relpath(os.path.join(d, "CMakeLists.txt"), root)
             for d, dirs, files in os.walk(root)
             if "CMakeLists.txt" in files and not os.path.relpath(d, root).startswith("build")
             and "/build" not in d and "/.git" not in d]
    module_of_lib, aliases, links = {}, {}, []
    for rel in sorted(lists):
        folder = os.path.dirname(rel)
        with open(os.path.join(root, rel)) as f:
            text = f.read()
        for command in ("add_library", "tandem_proto_library"):
            for name, args in cmake_calls(text, command):
                if args[:1] == ["ALIAS"]:
                    aliases[name] = args[1]
                    continue
                srcs = [a for a in args if not a.isupper() and "$<" not in a]
                if not srcs:
                    continue  # INTERFACE / IMPORTED
                src = srcs[0]
                for var in ("${CMAKE_SOURCE_DIR}/", "${PROJECT_SOURCE_DIR}/"):
                    if src.startswith(var):
                        src = src[len(var):]
                        break
                else:
                    src = os.path.normpath(os.path.join(
                        folder, src.replace("${CMAKE_CURRENT_SOURCE_DIR}/", "")))
                module_of_lib[name] = module_of(src, allowed)
        for name, args in cmake_calls(text, "target_link_libraries"):
            links.append((rel, name, [a for a in args if a not in ("PUBLIC", "PRIVATE", "INTERFACE")]))
    problems, used = [], set()
    for rel, name, items in links:
        own = module_of_lib.get(name)
        if own is None:
            continue  # an executable, a test binary, or not ours
        ok = allowed[own] | {own}
        if "testing" in name:
            ok |= test_allowed.get(own, set())
        for item in items:
            target = module_of_lib.get(aliases.get(item, item))
            if target is None or target in ok:
                continue
            if (rel, item) in exceptions:
                used.add((rel, item))
                continue
            problems.append(f"{rel}: {name} links {item}: {own} may not use {target} "
                            f"(allowed: {', '.join(sorted(allowed[own])) or 'nothing'}); "
                            f"see {allowlist}")
    cmake_exceptions = {e for e in exceptions if os.path.basename(e[0]) == "CMakeLists.txt"}
    notes = [f"NOTE: exception {rel}: {item} is no longer needed; remove it from {allowlist}"
             for rel, item in sorted(cmake_exceptions - used)]
    return len(module_of_lib), problems, notes


def self_test():
    """The checker itself: a clean tree passes, each kind of violation fails."""
    with tempfile.TemporaryDirectory() as root:
        def write(rel, text):
            os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
            with open(os.path.join(root, rel), "w") as f:
                f.write(text)
        write("allow.txt", "common:\nlow: common\nhigh: low common\ntest low: high\n"
                           "exception low/odd.cc: high/h.h\n")
        write("common/c.h", "#pragma once\n")
        write("low/l.h", '#include "common/c.h"\n#include <vector>\n#include "gtest/gtest.h"\n')
        write("low/odd.cc", '#include "high/h.h"\n')
        write("low/l_test.cc", '#include "high/h.h"\n')
        write("high/h.h", '#include "low/l.h"\n#include "common/c.h"\n')
        allow = os.path.join(root, "allow.txt")
        files, problems, notes = check(root, allow)
        assert files == 5 and problems == [] and notes == [], (problems, notes)
        write("low/bad.cc", '  # include "high/h.h"\n')  # an arrow up
        _, problems, _ = check(root, allow)
        assert len(problems) == 1 and "low may not include high" in problems[0], problems
        os.remove(os.path.join(root, "low/bad.cc"))
        write("common/up.h", '#include "low/l.h"\n')  # the bottom may include nothing
        _, problems, _ = check(root, allow)
        assert len(problems) == 1 and "common may not include low" in problems[0], problems
        os.remove(os.path.join(root, "common/up.h"))
        os.remove(os.path.join(root, "low/odd.cc"))  # the exception went stale
        _, problems, notes = check(root, allow)
        assert problems == [] and len(notes) == 1 and "no longer needed" in notes[0], notes
        write("low/odd.cc", "")
        write("other/o.cc", "")  # a folder nobody declared
        _, problems, _ = check(root, allow)
        assert any("no module for this folder" in p for p in problems), problems
    with tempfile.TemporaryDirectory() as root:
        def write(rel, text):
            os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
            with open(os.path.join(root, rel), "w") as f:
                f.write(text)
        write("allow.txt", "common:\nlow: common\nhigh: low common\n")
        write("common/CMakeLists.txt", "add_library(t_common c.cc)\nadd_library(t::common ALIAS t_common)\n")
        write("low/CMakeLists.txt", "add_library(t_low\n  l.cc # comment)\n)\n"
                                    "target_link_libraries(t_low PUBLIC t::common gRPC::grpc++)\n")
        write("high/CMakeLists.txt", "add_library(t_high h.cc)\n"
                                     "target_link_libraries(t_high PRIVATE t_low t::common)\n")
        allow = os.path.join(root, "allow.txt")
        libs, problems, notes = check_links(root, allow)
        assert libs == 3 and problems == [] and notes == [], (libs, problems, notes)
        write("low/CMakeLists.txt", "add_library(t_low l.cc)\n"
                                    "target_link_libraries(t_low PUBLIC t_high)\n")  # upward
        _, problems, _ = check_links(root, allow)
        assert len(problems) == 1 and "low may not use high" in problems[0], problems
    print("check_includes self-test: OK")
    return 0


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    root = argv[1]
    allowlist = argv[2] if len(argv) == 3 else os.path.join(os.path.dirname(__file__),
                                                              "allowlist.txt")
    files, problems, notes = check(root, allowlist)
    libs, link_problems, link_notes = check_links(root, allowlist)
    problems += link_problems
    for p in problems + notes + link_notes:
        print(p)
    print(f"check_includes: {files} files, {libs} CMake libraries, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
