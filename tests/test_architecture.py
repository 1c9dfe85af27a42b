"""The package's shape: layers that only import downward, no import cycle, nothing imports the
command line, no private name crosses a module, and docs/architecture.md lists the imports
as they are (tools/architecture.py holds the layers and redraws the picture)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "architecture.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("architecture_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


arch = _load_tool()
EDGES = arch.graph()


def test_the_graph_sees_function_local_and_relative_imports():
    # cli.commands imports the trainer inside cmd_train, and ui only inside cmd_ui.
    assert "sindiffusion.trainer" in EDGES["sindiffusion.cli.commands"]
    assert "sindiffusion.ui" in EDGES["sindiffusion.cli.commands"]
    assert "sindiffusion.apps.outpaint" in EDGES["sindiffusion.apps.sdedit"]


def test_every_module_has_a_layer():
    layers = {module: arch.layer_of(module) for module in EDGES}  # a KeyError names a module
    assert set(layers.values()) == set(range(len(arch.LAYERS)))  # and no layer is empty


def test_no_import_cycle():
    assert arch.cycles(EDGES) == []


def test_a_cycle_would_be_found():
    assert arch.cycles({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}}) == [["a", "b", "c"]]


def test_modules_import_only_their_own_layer_or_lower_ones():
    upward = [
        f"{a} (layer {arch.layer_of(a)}) imports {b} (layer {arch.layer_of(b)}) at line {line}"
        for a, targets in EDGES.items()
        for b, uses in targets.items()
        for line, _ in uses
        if arch.layer_of(b) > arch.layer_of(a)
    ]
    assert upward == []


def test_nothing_outside_the_command_line_imports_it():
    users = [
        a
        for a, targets in EDGES.items()
        if any(b.startswith("sindiffusion.cli") for b in targets)
        and not a.startswith("sindiffusion.cli")
    ]
    assert users == ["sindiffusion.__main__"]


def test_no_private_name_crosses_a_module():
    crossing = [
        f"{a} imports {name} from {b}"
        for a, targets in EDGES.items()
        for b, uses in targets.items()
        for _, names in uses
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert crossing == []


def test_the_documented_listing_matches_the_imports():
    text = (arch.DOCS / "architecture.md").read_text()
    documented = text.split("<!-- imports -->\n")[1].split("<!-- /imports -->")[0]
    assert documented == arch.listing(EDGES), "run python3 tools/architecture.py"
    assert (arch.DOCS / "architecture.png").exists()
