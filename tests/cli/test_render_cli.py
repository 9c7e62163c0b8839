"""`asya render` as a user runs it: a subprocess reading manifests, YAML on stdout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from asya_operator import config as operator_config
from asya_operator.models import AsyncActor
from asya_operator.render import render

ASYA = str(Path(sys.executable).with_name("asya"))
PREP = """\
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: prep}
spec: {handler: flow.prep, image: registry.example/flow:1}
"""
INFER = """\
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: infer, namespace: ml}
spec:
  handler: model.Model.predict
  image: registry.example/model:1
  transport: sqs
  scaling: {minReplicas: 1, maxReplicas: 4}
---
apiVersion: v1
kind: Service
metadata: {name: not-an-actor}
"""
SQS_CONFIG = """\
transports:
  sqs:
    type: sqs
    region: eu-west-1
    accountId: "123456789012"
    credentials: {secretRef: {name: aws-creds}}
  rabbitmq:
    type: rabbitmq
    url: amqp://rabbitmq:5672/
defaultTransport: rabbitmq
"""


def asya_render(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ASYA, "render", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def kinds(output: str) -> list[tuple[str, str, str]]:
    return [
        (d["kind"], d["metadata"]["namespace"], d["metadata"]["name"])
        for d in yaml.safe_load_all(output)
    ]


def test_default_configuration_renders_at_once(tmp_path: Path) -> None:
    (tmp_path / "prep.yaml").write_text(PREP)
    result = asya_render(str(tmp_path / "prep.yaml"))
    assert result.returncode == 0, result.stderr
    assert kinds(result.stdout) == [
        ("ConfigMap", "default", "prep-asya-runtime"),
        ("Deployment", "default", "prep"),
        ("ScaledObject", "default", "prep"),
    ]
    assert "built-in operator configuration" in result.stderr
    documents = list(yaml.safe_load_all(result.stdout))
    # The printed YAML is exactly what the operator would apply.
    actor = AsyncActor.from_object(yaml.safe_load(PREP))
    assert documents == render(actor, operator_config.parse(_default_config()))
    trigger = documents[2]["spec"]["triggers"][0]
    assert trigger["metadata"]["host"] == "amqp://rabbitmq:5672/"
    # The runtime file is printed as a readable block, not an escaped one-line string.
    assert "  runtime.py: |\n" in result.stdout
    assert "&id" not in result.stdout


def _default_config() -> dict[str, Any]:
    from asya_cli.render import DEFAULT_CONFIG

    return DEFAULT_CONFIG


def test_directories_and_an_operator_config(tmp_path: Path) -> None:
    (tmp_path / "actors").mkdir()
    (tmp_path / "actors" / "prep.yaml").write_text(PREP)
    (tmp_path / "actors" / "infer.yml").write_text(INFER)
    (tmp_path / "actors" / "notes.txt").write_text("not yaml: [")
    (tmp_path / "operator.yaml").write_text(SQS_CONFIG)
    result = asya_render(
        str(tmp_path / "actors"), "--operator-config", str(tmp_path / "operator.yaml")
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert kinds(result.stdout) == [
        ("ConfigMap", "ml", "infer-asya-runtime"),
        ("TriggerAuthentication", "ml", "infer-asya"),
        ("Deployment", "ml", "infer"),
        ("ScaledObject", "ml", "infer"),
        ("ConfigMap", "default", "prep-asya-runtime"),
        ("Deployment", "default", "prep"),
        ("ScaledObject", "default", "prep"),
    ]
    scaled = list(yaml.safe_load_all(result.stdout))[3]
    assert scaled["spec"]["triggers"][0]["type"] == "aws-sqs-queue"
    assert scaled["spec"]["minReplicaCount"] == 1


def test_namespace_option_and_stdin() -> None:
    result = asya_render("-", "--namespace", "team-a", stdin=PREP)
    assert result.returncode == 0, result.stderr
    assert {ns for _, ns, _ in kinds(result.stdout)} == {"team-a"}
    queue_env = [
        e
        for c in list(yaml.safe_load_all(result.stdout))[1]["spec"]["template"]["spec"][
            "containers"
        ]
        for e in c.get("env", [])
        if e["name"] == "ASYA_QUEUE"
    ]
    assert queue_env == [{"name": "ASYA_QUEUE", "value": "asya-team-a-prep"}]

    mismatch = asya_render("-", "--namespace", "team-a", stdin=INFER)
    assert mismatch.returncode == 2
    assert "metadata.namespace 'ml' does not match --namespace 'team-a'" in mismatch.stderr


def test_bad_manifest_names_the_file_and_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        PREP
        + """---
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: broken}
spec: {handler: flow.broken, scaling: {minReplicas: -1}, concurrency: many}
"""
    )
    result = asya_render(str(bad))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert f"{bad}: AsyncActor 'broken': spec.scaling.minReplicas: " in result.stderr
    assert any(line.endswith("(got -1)") and "spec.scaling.minReplicas" in line for line in lines)
    assert f"{bad}: AsyncActor 'broken': spec.concurrency: " in result.stderr
    assert "'prep'" not in result.stderr


def test_spec_the_operator_refuses(tmp_path: Path) -> None:
    manifest = tmp_path / "a.yaml"
    manifest.write_text(PREP.replace("image: registry.example/flow:1", "transport: kafka"))
    result = asya_render(str(manifest))
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"{manifest}: AsyncActor 'prep': spec.transport 'kafka' is not configured" in (
        result.stderr
    )
    assert "(configured: rabbitmq)" in result.stderr


def test_bad_operator_config(tmp_path: Path) -> None:
    (tmp_path / "prep.yaml").write_text(PREP)
    config = tmp_path / "operator.yaml"
    config.write_text("transports:\n  mq: {type: rabbitmq, url: 'amqp://u:p@host/'}\n")
    result = asya_render(str(tmp_path / "prep.yaml"), "--operator-config", str(config))
    assert result.returncode == 2
    assert str(config) in result.stderr
    assert "must not carry credentials" in result.stderr
    missing = asya_render(str(tmp_path / "prep.yaml"), "--operator-config", "/nonexistent.yaml")
    assert missing.returncode == 2
    assert "/nonexistent.yaml" in missing.stderr


def test_no_actors_missing_files_and_bad_yaml(tmp_path: Path) -> None:
    (tmp_path / "other.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n")
    result = asya_render(str(tmp_path / "other.yaml"))
    assert result.returncode == 2
    assert "no AsyncActor manifests" in result.stderr

    missing = asya_render(str(tmp_path / "absent.yaml"))
    assert missing.returncode == 2
    assert "absent.yaml: no such file or directory" in missing.stderr

    (tmp_path / "broken.yaml").write_text("kind: [")
    broken = asya_render(str(tmp_path / "broken.yaml"))
    assert broken.returncode == 2
    assert "broken.yaml: not valid YAML" in broken.stderr


def test_the_same_actor_twice(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(PREP)
    (tmp_path / "b.yaml").write_text(PREP)
    result = asya_render(str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"))
    assert result.returncode == 2
    assert "defined twice" in result.stderr


def test_help_lists_render() -> None:
    result = subprocess.run([ASYA, "--help"], capture_output=True, text=True, check=True)
    assert "render" in result.stdout
