#!/usr/bin/env python3
"""Find module cycles inside each crate of the workspace.

A module depends on another when it names it, or an item in it, through
`crate::`, `super::` or `self::` (in a `use` or inline). Not counted:
`pub use` re-exports (a façade: a name is resolved through them to the
module that defines it), `mod` declarations, test modules, comments, and a
module naming one of its own ancestors (the parent is the namespace its
children share, as `super::` says). A strongly connected component of more
than one module is a cycle. Exit status 1 when any crate has one.

    python3 scripts/module-cycles.py            # every crate
    python3 scripts/module-cycles.py -v crates/ledgerdesk-api   # with edges
"""
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def modules(src: Path):
    """module path (tuple) -> file, for one crate's src dir."""
    out = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts in (["lib"], ["main"]):
            parts = []
        elif parts[-1] == "mod":
            parts = parts[:-1]
        if "bin" in parts[:1] or "tests" in parts[:1]:
            continue
        out[tuple(parts)] = f
    return out


def clean(text: str) -> str:
    # Unit tests sit at the end of a file in this workspace.
    text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return "\n".join(re.sub(r"//.*$", "", line) for line in text.split("\n"))


def expand(tree: str):
    """`a::{b, c::{d, self}}` -> [['a','b'], ['a','c','d'], ['a','c']]"""
    tree = re.sub(r"\s+as\s+\w+", "", tree)
    tree = re.sub(r"\s+", "", tree)
    m = re.match(r"^(.*?)::\{(.*)\}$", tree)
    if not m:
        parts = tree.split("::")
        if parts[-1] == "self":
            parts = parts[:-1]
        return [parts]
    prefix, inner = m.group(1), m.group(2)
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    if cur:
        items.append(cur)
    out = []
    for it in items:
        if it:
            out += expand(prefix + "::" + it)
    return out


def absolute(parts, here):
    """Resolve a path written in module `here` to segments from the crate root."""
    if not parts:
        return None
    if parts[0] == "crate":
        return parts[1:]
    if parts[0] in ("super", "self"):
        base = list(here)
        while parts and parts[0] in ("super", "self"):
            if parts[0] == "super":
                base = base[:-1]
            parts = parts[1:]
        return base + parts
    return None


def main():
    verbose = "-v" in sys.argv
    args = [a for a in sys.argv[1:] if a != "-v"]
    crates = [ROOT / a for a in args] or sorted(
        [p for p in (ROOT / "crates").iterdir() if (p / "src").is_dir()]
        + [p for p in (ROOT / "services").iterdir() if (p / "src").is_dir()]
    )
    bad = False
    for crate in crates:
        mods = modules(crate / "src")
        texts = {m: clean(f.read_text()) for m, f in mods.items()}
        # Re-exports: (module, name) -> absolute path of the source.
        reexports = {}
        for m, text in texts.items():
            for tree in re.findall(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", text):
                for parts in expand(tree):
                    ab = absolute(parts, m)
                    if ab is None and parts[0] in {k[-1] for k in mods if k and k[:-1] == m}:
                        ab = list(m) + parts
                    if ab:
                        reexports[(m, parts[-1])] = ab

        def target(ab, seen=0):
            node, i = (), 0
            while i < len(ab) and node + (ab[i],) in mods:
                node += (ab[i],)
                i += 1
            if i < len(ab) and (node, ab[i]) in reexports and seen < 10:
                return target(reexports[(node, ab[i])], seen + 1)
            return node

        edges = {m: set() for m in mods}
        for m, text in texts.items():
            body = re.sub(r"\bpub(?:\([^)]*\))?\s+use\s+[^;]+;", "", text)
            refs = []
            for tree in re.findall(r"(?<![\w:])use\s+([^;]+);", body):
                for parts in expand(tree):
                    refs.append(parts)
            body = re.sub(r"(?<![\w:])use\s+[^;]+;", "", body)
            refs += [p.split("::") for p in re.findall(r"\b(?:crate|super|self)(?:::\w+)+", body)]
            # Children named bare in their parent (`tickets::Foo` in lib.rs).
            children = {k[-1] for k in mods if len(k) == len(m) + 1 and k[:-1] == m}
            refs += [[c] + rest.split("::")[1:] for c, rest in
                     re.findall(r"(?<![\w:])(" + "|".join(children) + r")((?:::\w+)+)", body)] if children else []
            for parts in refs:
                ab = absolute(parts, m)
                if ab is None:
                    if parts[0] in children:
                        ab = list(m) + parts
                    else:
                        continue
                t = target(ab)
                if t != m and m[: len(t)] != t:
                    edges[m].add(t)
        # Tarjan.
        index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

        def strong(v):
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            for w in edges[v]:
                if w not in index:
                    strong(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                sccs.append(comp)

        sys.setrecursionlimit(10000)
        for v in mods:
            if v not in index:
                strong(v)
        cycles = [c for c in sccs if len(c) > 1]
        name = lambda m: "::".join(("crate",) + m)
        n_edges = sum(len(e) for e in edges.values())
        print(f"{crate.relative_to(ROOT)}: {len(mods)} modules, {n_edges} edges, "
              f"{len(cycles)} cycle(s)")
        for c in cycles:
            bad = True
            members = set(c)
            print("  cycle: " + ", ".join(sorted(name(m) for m in c)))
            for m in sorted(c):
                for t in sorted(edges[m] & members):
                    print(f"    {name(m)} -> {name(t)}")
        if verbose:
            for m in sorted(edges):
                for t in sorted(edges[m]):
                    print(f"    {name(m)} -> {name(t)}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
