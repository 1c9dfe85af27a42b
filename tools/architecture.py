"""The package's layers and import graph: checked by tests/test_architecture.py, drawn into
docs/architecture.png and listed in docs/architecture.md.

    python3 tools/architecture.py          # rewrites docs/architecture.png and the listing

Every module of `sindiffusion` belongs to one layer; a module may import modules of its own
layer or of lower ones (the data's path: image in -> model and noise -> sampling -> model
object, training, applications -> command line and web page). Imports inside functions count.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "sindiffusion"
DOCS = ROOT / "docs"

# Layer name -> module prefixes (a prefix also covers its submodules: "metrics" = metrics.*).
LAYERS: dict[str, tuple[str, ...]] = {
    "0 inputs": ("errors", "version", "limits", "config", "contract", "image", "device", "report"),
    "1 network and noise": (
        "schedules",
        "unet",
        "diffusion",
        "patch_denoiser",
        "metrics",
        "checkpoint",
        "distributed",
    ),
    "2 sampling": ("samplers", "guidance", "layout", "tiling", "sampling"),
    "3 model, training, applications": ("apps", "model", "trainer", "many"),
    "4 doors": ("cli", "ui", "__init__", "__main__"),
}


def module_name(path: Path) -> str:
    """'sindiffusion.apps.outpaint' for src/sindiffusion/apps/outpaint.py; the package's own
    __init__ is 'sindiffusion.__init__'."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 2:
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    """The layer index of a package module (a KeyError for a module in no layer)."""
    short = module.removeprefix("sindiffusion.")
    for i, prefixes in enumerate(LAYERS.values()):
        if any(short == p or short.startswith(p + ".") for p in prefixes):
            return i
    raise KeyError(f"{module} is in no layer of tools/architecture.py's LAYERS")


def imports(path: Path, known: set[str]) -> dict[str, list[tuple[int, list[str]]]]:
    """The package modules `path` imports: {module: [(line, names imported), ...]}, relative
    imports resolved, `from . import x` counted as an import of module x when x is one."""
    name = module_name(path)
    package = name if path.name == "__init__.py" and name.count(".") else name.rsplit(".", 1)[0]
    if name == "sindiffusion.__init__":
        package = "sindiffusion"
    found: dict[str, list[tuple[int, list[str]]]] = {}

    def add(target: str, line: int, names: list[str]) -> None:
        while target not in known and "." in target:
            target = target.rsplit(".", 1)[0]
        if target in known or target == "sindiffusion":
            target = "sindiffusion.__init__" if target == "sindiffusion" else target
            found.setdefault(target, []).append((line, names))

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sindiffusion"):
                    add(alias.name, node.lineno, [])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("sindiffusion"):
                target = node.module
            else:
                continue
            names = [a.name for a in node.names]
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
            for sub in subs:
                add(sub, node.lineno, [])
            rest = [n for n in names if f"{target}.{n}" not in known]
            if rest or not subs:
                add(target, node.lineno, rest)
    found.pop(name, None)
    return found


def graph() -> dict[str, dict[str, list[tuple[int, list[str]]]]]:
    """module -> {imported module -> [(line, names)]} for every module of the package."""
    mods = modules()
    known = set(mods)
    return {m: imports(p, known) for m, p in mods.items()}


def cycles(edges: dict[str, dict]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
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
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def _short(module: str) -> str:
    return module.removeprefix("sindiffusion.")


def listing(edges: dict[str, dict]) -> str:
    """The layers and each module's imports of package modules, as Markdown lines."""
    lines = []
    for i, layer in enumerate(LAYERS):
        lines.append(f"- **{layer}**")
        for m in sorted(m for m in edges if layer_of(m) == i):
            targets = ", ".join(sorted(_short(t) for t in edges[m])) or "-"
            lines.append(f"  - `{_short(m)}` → {targets}")
    return "\n".join(lines) + "\n"


def draw(edges: dict[str, dict], path: Path) -> None:
    """A picture of the layers (rows, the lowest at the bottom) with every import an arrow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Submodules of a subpackage are drawn as the subpackage.
    def node(m: str) -> str:
        short = _short(m)
        for pkg in ("metrics", "apps", "cli", "ui"):
            if short.startswith(pkg):
                return pkg + "/"
        return short

    nodes: dict[int, list[str]] = {}
    for m in edges:
        n = node(m)
        if n in ("__init__", "__main__"):
            continue
        nodes.setdefault(layer_of(m), [])
        if n not in nodes[layer_of(m)]:
            nodes[layer_of(m)].append(n)
    order = [p + ("/" if p in ("metrics", "apps", "cli", "ui") else "") for ps in LAYERS.values()
             for p in ps]  # fmt: skip
    pos = {}
    for layer, names in nodes.items():
        for j, n in enumerate(sorted(names, key=order.index)):
            pos[n] = ((j + 0.5) / len(names), layer)
    fig, ax = plt.subplots(figsize=(11, 6.2))
    for layer, name in enumerate(LAYERS):
        ax.axhspan(layer - 0.42, layer + 0.42, color="#f2f4f8" if layer % 2 else "#e8edf5")
        ax.text(-0.01, layer, name, ha="right", va="center", fontsize=9, color="#333")
    # Layer 0 (errors, config, image, ...) is used by nearly every module: those arrows are
    # left out of the picture (the listing has them).
    pairs = {(node(a), node(b)) for a, t in edges.items() for b in t if layer_of(b) > 0}
    for a, b in sorted(pairs):
        if a == b or a not in pos or b not in pos:
            continue
        (x0, y0), (x1, y1) = pos[a], pos[b]
        ax.annotate(
            "", xy=(x1, y1 + 0.12), xytext=(x0, y0 - 0.12),
            arrowprops={"arrowstyle": "->", "color": "#8895aa", "lw": 0.6, "alpha": 0.55},
        )  # fmt: skip
    for n, (x, y) in pos.items():
        ax.text(
            x, y, n, ha="center", va="center", fontsize=9,
            bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "#3a5a8c"},
        )  # fmt: skip
    ax.set_xlim(-0.32, 1.02)
    ax.set_ylim(-0.6, len(LAYERS) - 0.4)
    ax.axis("off")
    ax.set_title(
        "sindiffusion: modules by layer; an arrow is an import, always down or across\n"
        "(imports of layer 0, which nearly every module uses, are left out)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    edges = graph()
    draw(edges, DOCS / "architecture.png")
    text = (DOCS / "architecture.md").read_text()
    head, _, rest = text.partition("<!-- imports -->")
    _, _, tail = rest.partition("<!-- /imports -->")
    (DOCS / "architecture.md").write_text(
        f"{head}<!-- imports -->\n{listing(edges)}<!-- /imports -->{tail}"
    )
    print(f"wrote {DOCS / 'architecture.png'} and the import listing in docs/architecture.md")


if __name__ == "__main__":
    main()
