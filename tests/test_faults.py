"""The reliability suite (benchmarks/faults.py): every bad input and fault it knows, each a
test here except the slow trials (20 SIGKILLs, a tmpfs, torchrun), which the benchmark runs.

A case passes when a user gets a one-line `error: ...` with exit code 2 (or the work done,
for odd but valid input) and no earlier run or file is damaged."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "faults.py"


def _load():
    spec = importlib.util.spec_from_file_location("faults_benchmark", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


faults = _load()
QUICK = [c for c in faults.CASES if not c.slow]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return faults.Workspace(tmp_path_factory.mktemp("faults"))


@pytest.mark.parametrize("case", QUICK, ids=[f"{c.group}: {c.name}" for c in QUICK])
def test_fault(case, workspace):
    outcome = case.run(workspace)
    assert outcome.passed, f"{case.expected!r} expected, got {outcome.got!r}"
    assert outcome.intact is not False, f"earlier work damaged: {outcome.got}"


def test_the_table_counts_and_flags_a_failure():
    ok = faults.Outcome("error: x (exit 2)", True, True)
    bad = faults.Outcome("Traceback: RuntimeError", False, False)
    cases = [faults.Case("inputs", "a", "error", None), faults.Case("faults", "b", "kept", None)]
    text = faults.table(list(zip(cases, [ok, bad], strict=True)))
    assert text.startswith("1 bad inputs tried, 1 handled; 1 faults tried, 0 survived; 1 runs")
    assert "| faults | b | kept | Traceback: RuntimeError | **no** | **no** |" in text
