#!/usr/bin/env python3
"""Count the public items a user of the `gimvi` facade sees in `cargo doc`: the entries of the
facade's all.html (structs, enums, traits, functions, constants, macros, type aliases, including
items re-exported into it) plus, for every workspace crate the facade re-exports whole as a
module (`pub use gimvi_x as name;`), that crate's all.html entries.

Usage: cargo doc --workspace --no-deps && python3 scripts/public_items.py [target/doc]
"""
import os
import re
import sys

doc = sys.argv[1] if len(sys.argv) > 1 else "target/doc"


def entries(crate):
    with open(os.path.join(doc, crate, "all.html"), encoding="utf-8") as f:
        return re.findall(r'<li><a href="([^"]+)">', f.read())


facade = entries("gimvi")
with open(os.path.join(doc, "gimvi", "index.html"), encoding="utf-8") as f:
    index = f.read()
# A whole-crate re-export shows as `pub use gimvi_x as name;`, the crate name plain or linked.
whole = sorted(
    set(re.findall(r"pub use (?:<a [^>]*>)?(gimvi_[a-z]+)(?:</a>)? as", index))
)
total = len(facade)
print(f"gimvi (facade): {len(facade)}")
for crate in whole:
    n = len(entries(crate))
    total += n
    print(f"{crate} (re-exported whole): {n}")
print(f"total: {total}")
