"""What the messages tell users to install exists (an extra named in a hint is declared in pyproject.toml),
and the set-up says why it cannot run."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
EXTRA = re.compile(r"smokeseg\[([^\]]+)\]")


def _declared_extras() -> set[str]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return set(tomllib.load(file)["project"]["optional-dependencies"])


def _texts() -> list[Path]:
    return [*sorted((ROOT / "src").rglob("*.py")), ROOT / "README.md"]


def test_every_extra_named_in_a_message_or_the_readme_is_declared() -> None:
    declared = _declared_extras()
    named = {
        (path.relative_to(ROOT).as_posix(), extra.strip())
        for path in _texts()
        for match in EXTRA.finditer(path.read_text(encoding="utf-8"))
        for extra in match.group(1).split(",")
        if not extra.startswith("{")  # a formatted hint: its values are checked below
    }
    assert named, "the scan found no smokeseg[...] hint at all; is the pattern still right?"
    assert {(where, extra) for where, extra in named if extra not in declared} == set()


def test_every_packaged_weights_extra_is_declared() -> None:
    """The offline-weights hints are formatted from the registry: each of its extras must exist."""
    from smokeseg.model.weights import PACKAGED_WEIGHTS

    assert {packaged.extra for packaged in PACKAGED_WEIGHTS.values()} <= _declared_extras()


def test_setup_on_a_disk_too_full_for_torch_stops_before_the_venv_saying_so(tmp_path: Path) -> None:
    """PyTorch's CUDA wheels need ~7 GB: a new venv on a full disk must fail with that reason up front, not
    with pip's OSError halfway through an install (what a CI machine with a full disk printed)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"
    done = subprocess.run(
        ["make", "-C", str(ROOT), "setup", f"VENV={venv}", "SETUP_DISK_GB=1000000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "needs about 1000000 GB free" in done.stderr
    assert "GB free here" in done.stderr
    assert not venv.exists()
