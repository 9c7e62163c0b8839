"""The state directory is found upward from where a command runs, as git finds `.git`."""

from __future__ import annotations

from pathlib import Path

from asya_cli import state_dir


def test_the_nearest_state_dir_above_is_used(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".asya").mkdir()
    deep = tmp_path / "pipelines" / "ocr"
    deep.mkdir(parents=True)

    assert state_dir.default({}, cwd=deep) == str((tmp_path / ".asya").resolve())


def test_the_search_stops_at_the_projects_root(tmp_path: Path) -> None:
    (tmp_path / ".asya").mkdir()  # outside the project: not ours
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)

    assert state_dir.default({}, cwd=project) == ".asya"


def test_the_environment_and_a_state_dir_here_come_first(tmp_path: Path) -> None:
    (tmp_path / ".asya").mkdir()
    here = tmp_path / "sub"
    (here / ".asya").mkdir(parents=True)

    assert state_dir.default({"ASYA_STATE_DIR": "/elsewhere"}, cwd=here) == "/elsewhere"
    assert state_dir.default({}, cwd=here) == str((here / ".asya").resolve())
