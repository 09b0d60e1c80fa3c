#!/usr/bin/python3
"""Runs the first ```sh block of a README section word for word (CTest readme.*).

usage: readme_section.py SOURCE_DIR BUILD_DIR "SECTION TITLE"

The block runs with bash -e -o pipefail in a fresh directory that looks like the repository
after the README's build: every top-level entry of SOURCE_DIR linked in, and build/release
linking to BUILD_DIR (whatever preset built it), so that the block's relative paths work and
what it writes (build/prefix, build/strided, ...) goes to the temporary directory.
"""
import os
import re
import subprocess
import sys
import tempfile


def section_block(readme, title):
    m = re.search(r"^## " + re.escape(title) + r"\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    if not m:
        sys.exit(f"README.md has no section '## {title}'")
    block = re.search(r"^```sh\n(.*?)^```", m.group(1), re.M | re.S)
    if not block:
        sys.exit(f"README.md section '{title}' has no ```sh block")
    return block.group(1)


def main():
    source, build, title = sys.argv[1:4]
    with open(os.path.join(source, "README.md"), encoding="utf-8") as f:
        block = section_block(f.read(), title)
    with tempfile.TemporaryDirectory(prefix="attn_readme_") as tmp:
        for entry in os.listdir(source):
            if entry not in ("build", ".git"):
                os.symlink(os.path.join(source, entry), os.path.join(tmp, entry))
        os.makedirs(os.path.join(tmp, "build"))
        os.symlink(os.path.abspath(build), os.path.join(tmp, "build", "release"))
        print(block, flush=True)
        r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], cwd=tmp)
    sys.exit(r.returncode)


if __name__ == "__main__":
    main()
