"""The panel's patch table (tests/verifier/panel.py): every patch applies exactly once to the current
baseline, a patch that no longer applies fails naming its kernel, every kernel is tested and named
in its row of the threat catalogue (docs/threats.md), and the command for manual runs writes real
files."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.verifier import panel
from tests.verifier.test_threats import FAULTS, GATE, RUNTIME

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(panel.PANEL))
def test_every_kernel_builds_and_differs_from_its_base(name):
    kernel = panel.PANEL[name]
    text = panel.source(name)  # raises if an edit does not apply exactly once
    ast.parse(text)
    assert text.startswith(f"# panel kernel {name} (tests/verifier/panel.py): ")
    if kernel.file is None:
        assert kernel.edits, f"{name} has no edits: it would test the baseline"
        assert all(old != new for old, new in kernel.edits)
        assert text.split("\n", 1)[1] != panel.BASELINE.read_text()


@pytest.mark.parametrize("old, count", [("this text is not in the baseline\n", 0), ("import", 5)])
def test_a_patch_that_does_not_apply_exactly_once_names_its_kernel(monkeypatch, old, count):
    monkeypatch.setitem(panel.PANEL, "stale_patch", panel.patch("a patch left behind", (old, "new\n")))
    if count:
        assert panel.BASELINE.read_text().count(old) == count
    with pytest.raises(panel.PatchError, match=rf"panel kernel 'stale_patch', edit 1: .* occurs {count} times in "
                                               r"kernels/extend_attention/baseline.py"):
        panel.source("stale_patch")


def test_a_later_edit_sees_the_earlier_ones(monkeypatch):
    """Edits apply in order: the second one must find the first one's text, not the baseline's."""
    monkeypatch.setitem(panel.PANEL, "chained", panel.patch(
        "two edits in a row", (panel.GRID, "    marker_one = 1\n" + panel.GRID),
        ("    marker_one = 1\n", "    marker_two = 2\n")))
    text = panel.source("chained")
    assert "marker_two = 2" in text and "marker_one" not in text


def test_every_kernel_is_used_by_a_test():
    tests = "\n".join(p.read_text() for p in (ROOT / "tests" / "verifier").glob("test_*.py")
                      if p.name != "test_patches.py")
    unused = [name for name in panel.PANEL if f'"{name}"' not in tests]
    assert not unused, f"panel kernels no test evaluates: {unused}"


def test_the_catalogue_names_each_adversarial_kernel_in_the_row_its_test_cites():
    catalogue = (ROOT / "docs" / "threats.md").read_text()
    rows = {int(m.group(1)): m.group(0) for m in re.finditer(r"^\| (\d+) \|.*$", catalogue, re.M)}
    named = set(re.findall(r"`((?:adv|mut|honest)_[a-z0-9_]+)`", catalogue))
    assert not named - set(panel.PANEL), f"docs/threats.md names unknown kernels: {named - set(panel.PANEL)}"
    assert not {n for n in panel.PANEL if n.startswith("adv_")} - named, "an adversarial kernel has no row"
    cited = [(entry[0], entry[1]) for entry in GATE + RUNTIME + FAULTS]
    wrong = [(name, row) for name, row in cited if f"`{name}`" not in rows.get(row, "")]
    assert not wrong, f"test_threats.py cites rows of docs/threats.md that do not name the kernel: {wrong}"


def test_the_command_writes_the_kernels_for_manual_runs(tmp_path):
    out = tmp_path / "kernels"
    done = subprocess.run([sys.executable, "-m", "tests.verifier.panel", str(out), "mut_zeros", "honest_split_loops"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["honest_split_loops.py", "mut_zeros.py"]
    assert (out / "mut_zeros.py").read_text() == panel.source("mut_zeros")
    assert done.stdout.split() == [str(out / "mut_zeros.py"), str(out / "honest_split_loops.py")]
    bad = subprocess.run([sys.executable, "-m", "tests.verifier.panel", str(out), "no_such_kernel"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown kernels ['no_such_kernel']" in bad.stderr
