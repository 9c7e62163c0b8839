"""`asya operator`: arguments and the configuration check before kopf starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from asya_cli import main, operator


def test_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main.main(["operator", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for option in ("--config", "--namespace", "--all-namespaces", "--verbose"):
        assert option in out


def test_namespace_and_all_namespaces_exclude_each_other() -> None:
    with pytest.raises(SystemExit) as done:
        main.main(["operator", "-n", "a", "-A"])
    assert done.value.code == 2


def test_no_configuration_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ASYA_OPERATOR_CONFIG", raising=False)
    assert main.main(["operator"]) == 2
    assert "ASYA_OPERATOR_CONFIG" in capsys.readouterr().err


def test_invalid_configuration_lists_its_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "operator.yaml"
    path.write_text("transports:\n  mq: {type: rabbitmq}\ndefaultTransport: nope\n")
    assert main.main(["operator", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "rabbitmq needs url or credentials.secretRef" in err


@pytest.mark.parametrize(
    ("requested", "all_namespaces", "configured", "expected"),
    [
        ([], False, [], (True, [])),
        ([], False, ["a", "b"], (False, ["a", "b"])),
        (["c"], False, ["a"], (False, ["c"])),
        ([], True, ["a"], (True, [])),
    ],
)
def test_scope(
    requested: list[str],
    all_namespaces: bool,
    configured: list[str],
    expected: tuple[bool, list[str]],
) -> None:
    assert operator.scope(requested, all_namespaces, configured) == expected


def test_missing_credentials_stop_before_kopf_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "operator.yaml"
    path.write_text("transports:\n  mq: {type: rabbitmq, url: 'amqp://127.0.0.1:5672/'}\n")
    # The command exports the path for kopf's startup handler; undone after the test.
    monkeypatch.setenv("ASYA_OPERATOR_CONFIG", "")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    assert main.main(["operator", "--config", str(path), "-n", "default"]) == 2
    assert "cannot log in to Kubernetes" in capsys.readouterr().err

    monkeypatch.setenv("KUBECONFIG", "")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main.main(["operator", "--config", str(path)]) == 2
    assert "no Kubernetes credentials" in capsys.readouterr().err
