from __future__ import annotations

import io
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
        (spec(concurrency=1), "spec.handler: Field required"),
        (spec(handler="nodots"), "spec.handler: String should match pattern .* \\(got 'nodots'\\)"),
        (spec(handler="m.f", concurrency=0), "spec.concurrency: Input should be greater than"),
        (spec(handler="m.f", concurency=4), "spec.concurency: Extra inputs are not permitted"),
        (spec(handler="m.f", actor="Bad_Name"), "spec.actor: String should match pattern"),
        (spec(handler="m.f", actor="x-sink"), "reserved"),
        (spec(handler="m.f", env="[{name: S, valueFrom: {secretKeyRef: {name: s}}}]"), "valueFrom"),
        (spec(handler="m.f", env="{A: b}"), "spec.env: Input should be a valid list"),
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


def test_asya_dev_refuses_a_manifest_with_the_words_asya_render_uses(tmp_path: Path) -> None:
    """One validator: the operator's model, worded once (asya_cli.spec_problems)."""
    from asya_cli import render

    path = write(tmp_path, spec(handler="m.f", image="x", concurency=4, resiliency="{max: 1}"))

    with pytest.raises(manifests.ManifestError) as caught:
        manifests.load_actors([path])
    with pytest.raises(render.RenderFailed) as rendered:
        render.render_text([str(path)], namespace=None, config_path=None, stdin=io.StringIO())

    assert "spec.concurency: Extra inputs are not permitted" in str(caught.value)
    assert str(caught.value) == str(rendered.value)


def test_each_handler_is_imported_from_its_manifests_directory(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    write(tmp_path / "one", spec(handler="m.f"))
    write(tmp_path / "two", spec(handler="m.g").replace("{name: a}", "{name: b}"))

    found = {a.name: a.app_dir for a in manifests.load_actors([tmp_path])}
    forced = {a.name: a.app_dir for a in manifests.load_actors([tmp_path], app_dir=tmp_path)}

    assert found == {"a": (tmp_path / "one").resolve(), "b": (tmp_path / "two").resolve()}
    assert forced == {"a": tmp_path.resolve(), "b": tmp_path.resolve()}


def test_a_walk_leaves_out_hidden_and_virtualenv_directories_and_the_state_dir(
    tmp_path: Path,
) -> None:
    write(tmp_path, spec(handler="m.f"))
    for skipped in (".asya", ".git", "venv", "node_modules", "state"):
        (tmp_path / skipped).mkdir()
        write(tmp_path / skipped, spec(handler="m.f"), "copy.yaml")
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /usr\n")
    write(tmp_path, spec(handler="m.f"), ".hidden.yaml")

    files = manifests.manifest_files([tmp_path], skip=[tmp_path / "state"])

    assert files == [tmp_path / "actors.yaml"]
    # Named explicitly, a file is read wherever it is.
    assert manifests.manifest_files([tmp_path / ".asya" / "copy.yaml"]) == [
        tmp_path / ".asya" / "copy.yaml"
    ]
