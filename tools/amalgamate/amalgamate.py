#!/usr/bin/env python3
"""Generate single_include/lmtk/lmtk.hpp from the umbrella header include/lmtk/lmtk.hpp.

Every `#include <lmtk/...>` is replaced by a `// #include <lmtk/...>` marker followed, the first
time that header is met, by its contents (processed the same way, recursively, in include order).
A header is inlined at most once; later includes of it leave only the marker. `#pragma once` is
dropped from every inlined file and written once at the top. System and third-party includes are
kept as they are. Headers the umbrella does not reach (e.g. the sentencepiece adapter, which needs
a library to link) stay out of the single include.

Usage:
  python3 tools/amalgamate/amalgamate.py            # (re)write the single include
  python3 tools/amalgamate/amalgamate.py --check    # exit 1 if the committed one is stale

Only the Python 3 standard library is used. Includes are matched line by line with a regular
expression, so project includes must be spelled literally as `#include <lmtk/...>` (no macros,
no quotes); anything else aimed at the project is an error rather than a silently broken output.
"""

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

SCRIPT_DIR = Path(__file__).resolve().parent
DEFAULT_ROOT = SCRIPT_DIR.parent.parent
DEFAULT_CONFIG = SCRIPT_DIR / "config.json"

INCLUDE_ANGLE = re.compile(r'^\s*#\s*include\s*<([^>]+)>')
INCLUDE_QUOTE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')
PRAGMA_ONCE = re.compile(r'^\s*#\s*pragma\s+once\b')


class AmalgamationError(Exception):
    pass


class Amalgamator:
    def __init__(self, root, include_paths, prefix):
        self.root = root
        self.include_paths = [root / p for p in include_paths]
        self.prefix = prefix
        self.seen = set()      # header names already inlined, e.g. "lmtk/core/error.hpp"
        self.order = []        # the same, in the order they were inlined
        self.out = []

    def resolve(self, name, where):
        for base in self.include_paths:
            candidate = base / name
            if candidate.is_file():
                return candidate
        raise AmalgamationError(f"{where}: cannot find <{name}> in " +
                                ", ".join(str(p) for p in self.include_paths))

    def rel(self, path):
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()

    def inline(self, path):
        text = path.read_text(encoding="utf-8")
        for lineno, line in enumerate(text.splitlines(), start=1):
            where = f"{self.rel(path)}:{lineno}"
            if PRAGMA_ONCE.match(line):
                continue
            quoted = INCLUDE_QUOTE.match(line)
            if quoted and (quoted.group(1).startswith(self.prefix) or
                           any((base / quoted.group(1)).is_file() for base in self.include_paths)):
                raise AmalgamationError(f'{where}: project header included with quotes ("{quoted.group(1)}"); '
                                        f"spell it <{self.prefix}...> so it can be inlined")
            angle = INCLUDE_ANGLE.match(line)
            if not angle or not angle.group(1).startswith(self.prefix):
                self.out.append(line)
                continue
            name = angle.group(1)
            self.out.append(f"// #include <{name}>")
            if name in self.seen:
                continue
            self.seen.add(name)  # before recursing: an include cycle ends here instead of looping
            self.order.append(name)
            self.inline(self.resolve(name, where))

    def generate(self, sources, config_rel, target_rel):
        sources_rel = ", ".join(sources)
        self.out = [
            f"// lmtk single-header edition: generated from {sources_rel} by",
            f"// tools/amalgamate/amalgamate.py ({config_rel}). Do not edit: edit the headers under",
            f"// include/ and run `python3 tools/amalgamate/amalgamate.py` to regenerate {target_rel}.",
            "#pragma once",
        ]
        for src in sources:
            path = self.root / src
            if not path.is_file():
                raise AmalgamationError(f"source {src} does not exist under {self.root}")
            self.out.append(f"// ---- {src}")
            # The umbrella counts as inlined: a header that includes it back adds only a marker.
            for base in self.include_paths:
                try:
                    self.seen.add(path.resolve().relative_to(base.resolve()).as_posix())
                except ValueError:
                    pass
            self.inline(path)
        return "\n".join(self.out) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description="Generate the single-header lmtk.")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="config JSON (default: %(default)s)")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                        help="repository root the config's paths are relative to (default: %(default)s)")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the target differs from what would be generated")
    parser.add_argument("--output", type=Path, help="write here instead of the config's target")
    parser.add_argument("--list", action="store_true", help="print the inlined headers, in order")
    args = parser.parse_args(argv)

    root = args.root.resolve()
    try:
        config = json.loads(args.config.read_text(encoding="utf-8"))
        target_rel = config["target"]
        sources = config["sources"]
        include_paths = config.get("include_paths", ["include"])
        prefix = config.get("project_prefix", "lmtk/")
    except (OSError, ValueError, KeyError) as e:
        print(f"amalgamate: bad config {args.config}: {e}", file=sys.stderr)
        return 2

    amalgamator = Amalgamator(root, include_paths, prefix)
    try:
        text = amalgamator.generate(sources, "tools/amalgamate/" + args.config.name, target_rel)
    except (AmalgamationError, OSError, UnicodeDecodeError) as e:
        print(f"amalgamate: {e}", file=sys.stderr)
        return 2

    if args.list:
        for name in amalgamator.order:
            print(name)

    target = args.output if args.output else root / target_rel
    if args.check:
        try:
            current = target.read_text(encoding="utf-8")
        except OSError:
            print(f"amalgamate: {target} is missing; run python3 tools/amalgamate/amalgamate.py", file=sys.stderr)
            return 1
        if current != text:
            diff = list(difflib.unified_diff(current.splitlines(), text.splitlines(), "committed", "generated",
                                             lineterm="", n=1))
            shown = diff[:60]
            print(f"amalgamate: {target} is out of date with the headers; run "
                  "python3 tools/amalgamate/amalgamate.py and commit the result.", file=sys.stderr)
            print("\n".join(shown), file=sys.stderr)
            if len(diff) > len(shown):
                print(f"... ({len(diff) - len(shown)} more diff lines)", file=sys.stderr)
            return 1
        print(f"amalgamate: {target} is up to date ({len(amalgamator.order)} headers)")
        return 0

    target.parent.mkdir(parents=True, exist_ok=True)
    # Written whole then renamed: an interrupted run never leaves a half header behind.
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="\n")
    tmp.replace(target)
    print(f"amalgamate: wrote {target} ({len(amalgamator.order)} headers, {len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
