from __future__ import annotations

from pathlib import Path

import pytest

from asya_cli import manifests

GOOD = """\
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: prep}
spec:
  handler: steps.prep
  concurrency: 3
  env: [{name: MODEL, value: small}, {name: K, value: 5}]
  resiliency: {actorTimeout: 30s}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
---
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: other-name}
spec: {actor: infer, handler: models.Model.predict}
"""


def write(tmp_path: Path, text: str, name: str = "actors.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_async_actors_and_ignores_other_kinds(tmp_path: Path) -> None:
    actors = manifests.load_actors([write(tmp_path, GOOD)])

    assert [a.name for a in actors] == ["prep", "infer"]
    prep = actors[0]
    assert (prep.handler, prep.concurrency, prep.actor_timeout) == ("steps.prep", 3, "30s")
    assert prep.env == {"MODEL": "small", "K": "5"}


def test_directories_are_searched_for_yaml(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", GOOD, "pipeline.yml")
    write(tmp_path, "not: yaml: [", "notes.txt")

    assert len(manifests.load_actors([tmp_path])) == 2


def spec(**fields: object) -> str:
    body = "\n".join(f"  {k}: {v}" for k, v in fields.items())
    return f"apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {{name: a}}\nspec:\n{body}\n"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (spec(concurrency=1), "spec.handler must name module.function"),
        (spec(handler="nodots"), "spec.handler must name"),
        (spec(handler="m.f", concurrency=0), "spec.concurrency"),
        (spec(handler="m.f", actor="Bad_Name"), "not a DNS label"),
        (spec(handler="m.f", actor="x-sink"), "reserved"),
        (spec(handler="m.f", env="[{name: S, valueFrom: {secretKeyRef: {name: s}}}]"), "valueFrom"),
        (spec(handler="m.f", env="{A: b}"), "spec.env must be a list"),
        ("apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {name: a}\n", "no spec"),
        (spec(handler="m.f") + "---\n" + spec(handler="m.g"), "defined twice"),
        ("key: [unclosed", "not valid YAML"),
        ("apiVersion: v1\nkind: Service\n", "no AsyncActor manifests"),
    ],
)
def test_problems_name_the_file_and_the_field(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text)

    with pytest.raises(manifests.ManifestError, match=fragment) as caught:
        manifests.load_actors([path])
    if "no AsyncActor" not in fragment:
        assert str(path) in str(caught.value)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(manifests.ManifestError, match="no such file"):
        manifests.load_actors([tmp_path / "absent.yaml"])
