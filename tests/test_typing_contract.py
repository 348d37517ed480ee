"""Types are a contract: mypy --strict runs in `make lint` and CI; the package ships `py.typed`.

The type check itself runs in `make lint` (and scripts/test.sh); these tests check that it stays wired
up and that every relaxation of it says why.
"""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mypy_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]


def test_package_ships_py_typed():
    import a2mae

    assert (Path(a2mae.__file__).parent / "py.typed").is_file()
    # hatch ships every file of the package folder: nothing excludes it from the wheel
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    assert build["targets"]["wheel"]["packages"] == ["a2mae"]
    assert "exclude" not in build["targets"]["wheel"] and "exclude" not in build


def test_mypy_is_strict_over_library_and_flows():
    cfg = _mypy_config()
    assert cfg["strict"] is True
    assert sorted(cfg["files"]) == ["a2mae", "flows"]
    for key in ("ignore_errors", "ignore_missing_imports", "disallow_untyped_defs", "follow_imports"):
        assert key not in cfg, f"[tool.mypy] {key} relaxes the whole check; use a reasoned override"


def test_every_override_says_why():
    """Each [[tool.mypy.overrides]] block is preceded by a comment line giving its reason."""
    lines = (ROOT / "pyproject.toml").read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "[[tool.mypy.overrides]]"]
    assert len(starts) == len(_mypy_config().get("overrides", []))
    for i in starts:
        reason = lines[i + 1].strip()
        assert reason.startswith("#") and len(reason) > 20, (
            f"pyproject.toml:{i + 2}: override without a reason"
        )
        assert lines[i + 2].startswith("module = ")
    for ov in _mypy_config().get("overrides", []):
        assert not ov.get("ignore_errors"), f"{ov['module']}: ignore_errors hides every error of a module"


def test_lint_and_ci_run_mypy():
    makefile = (ROOT / "Makefile").read_text()
    lint = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "python -m mypy" in lint
    assert ".venv/bin/python -m mypy" in (ROOT / "scripts" / "test.sh").read_text()
    pins = (ROOT / "requirements.in").read_text() + (ROOT / "requirements.lock").read_text()
    assert "\nmypy==" in pins
