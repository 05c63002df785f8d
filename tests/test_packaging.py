"""What the package says about itself: its licence file matches pyproject, the classifiers list
every Python the suite runs on in CI, and the changelog has a section for what is unreleased."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_the_license_file_is_the_one_pyproject_names() -> None:
    assert PROJECT["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the whole licence, not a stub


def test_classifiers_list_each_python_ci_runs() -> None:
    assert PROJECT["requires-python"] == ">=3.11"
    listed = {c.rsplit(" :: ", 1)[1] for c in PROJECT["classifiers"]
              if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)}
    assert listed == {"3.11", "3.12", "3.13"}
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash .ci/test.sh" in ci and "VENV=.venv313" in ci and "python3.13" in ci


def test_the_changelog_keeps_an_unreleased_section() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert text.startswith("# Changelog\n")
    assert "\n## [Unreleased]\n" in text
    assert "keepachangelog.com" in text
