#!/usr/bin/env python3
"""Reads a Bit Mountain bundle with Python's standard-library MIME parser (a parser we did not
write) and checks every part, byte for byte, against the directory it was packed from.

Usage: read_bundle.py BUNDLE SOURCE_DIR

Exit status 0 when every file matches; 1 with a message naming the first mismatch otherwise.
Note: parse from bytes (message_from_bytes). message_from_binary_file wraps the file in a
universal-newline text reader that turns CRLF into LF inside binary payloads.
"""

import email
import email.policy
import hashlib
import os
import sys


def source_files(root):
    found = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            found[os.path.relpath(full, root).replace(os.sep, "/")] = full
    return found


def check(bundle_path, root, policy):
    with open(bundle_path, "rb") as f:
        msg = email.message_from_bytes(f.read(), policy=policy)
    if msg.get_content_type() != "multipart/mixed":
        raise SystemExit(f"top-level type is {msg.get_content_type()}, not multipart/mixed")
    parts = msg.get_payload()
    expected = source_files(root)
    if len(parts) != len(expected) + 1:
        raise SystemExit(f"{len(parts)} parts, expected {len(expected)} files + the index")
    index = parts[-1]
    if index.get_content_type() != "application/vnd.bitmountain.index":
        raise SystemExit(f"last part is {index.get_content_type()}, not the index")
    if not index.get_payload(decode=True).startswith(b"BMINDEX\0"):
        raise SystemExit("the index part does not start with the index magic")
    seen = set()
    for part in parts[:-1]:
        name = part.get_filename()
        if name not in expected:
            raise SystemExit(f"part with filename {name!r} is not a source file")
        if part.get("Content-Transfer-Encoding") != "binary":
            raise SystemExit(f"{name!r}: Content-Transfer-Encoding is not binary")
        data = part.get_payload(decode=True)
        with open(expected[name], "rb") as f:
            want = f.read()
        if data != want:
            raise SystemExit(
                f"{name!r}: {len(data)} bytes (sha256 {hashlib.sha256(data).hexdigest()}) "
                f"differ from the source's {len(want)} bytes"
            )
        if int(part["Content-Length"]) != len(want):
            raise SystemExit(f"{name!r}: Content-Length {part['Content-Length']} != {len(want)}")
        seen.add(name)
    missing = set(expected) - seen
    if missing:
        raise SystemExit(f"files missing from the bundle: {sorted(missing)}")
    return len(seen)


def main():
    bundle_path, root = sys.argv[1], sys.argv[2]
    for name, policy in (("compat32", email.policy.compat32), ("default", email.policy.default)):
        count = check(bundle_path, root, policy)
        print(f"policy {name}: {count} files match byte for byte")


if __name__ == "__main__":
    main()
