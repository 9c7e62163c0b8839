"""The README's cluster quickstart runs as written: its Helm values, turned into the operator's
configuration the way the chart turns them, accept every actor the README applies (no actor
in `Error` for a transport the operator does not have), and its facts agree with the code and
the other docs (the KEDA version, the `kubectl get asya` columns)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from asya_operator import config as operator_config
from asya_operator.crd import CHART_CRD_PATH
from asya_operator.models import SIDECAR_CONTAINER, AsyncActor
from asya_transports import KINDS
from tests.charts.charts import CREW, OPERATOR, of_kind, one, render

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
INSTALL = ROOT / "docs" / "install.md"
KEDA_DATA = ROOT / "tests" / "data" / "keda" / "README.md"
ASYA = str(Path(sys.executable).with_name("asya"))

OPERATOR_VALUES_MARK = "<!-- readme-test: operator-values -->"
ACTOR_LABEL = "asya.sh/actor"
# What the operator's rendering asks KEDA for, per transport type (docs/rendering.md#keda).
KEDA_TRIGGER = {"rabbitmq": "rabbitmq", "sqs": "aws-sqs-queue", "pubsub": "gcp-pubsub"}

Obj = dict[str, Any]


# ------------------------------------------------------------------ reading the README


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def operator_values(text: str) -> Obj:
    """The one YAML block that follows the operator-values marker."""
    found = re.findall(rf"{re.escape(OPERATOR_VALUES_MARK)}\n```yaml\n(.*?)^```", text, re.S | re.M)
    assert len(found) == 1, (
        f"README.md needs exactly one ```yaml block right after {OPERATOR_VALUES_MARK!r} "
        f"(the values of `helm install asya-operator`); found {len(found)}"
    )
    values = yaml.safe_load(found[0])
    assert isinstance(values, dict), "the operator values block is not a YAML mapping"
    return values


def commands(text: str, program: str) -> list[list[str]]:
    """Every `program` command of the README's sh blocks, continuation lines joined.

    Only lines that start with the program are split: other lines may open a quote that a
    later line closes (a curl payload over several lines)."""
    found: list[list[str]] = []
    for block in code_blocks(text, "sh"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.lstrip().startswith(f"{program} "):
                found.append(shlex.split(line, comments=True))
    return found


def option(words: list[str], *names: str) -> str | None:
    for index, word in enumerate(words[:-1]):
        if word in names:
            return words[index + 1]
    return None


@dataclass(frozen=True)
class HelmInstall:
    release: str
    chart: Path
    namespace: str
    values_files: tuple[str, ...]


def helm_installs(text: str) -> dict[str, HelmInstall]:
    """`helm install RELEASE CHART -n NS [-f FILE]...`, by chart directory name."""
    installs: dict[str, HelmInstall] = {}
    for words in commands(text, "helm"):
        if words[:2] != ["helm", "install"]:
            continue
        namespace = option(words, "-n", "--namespace")
        assert namespace, f"`{shlex.join(words)}` names no namespace"
        files = tuple(w for i, w in enumerate(words[1:]) if words[i] in ("-f", "--values"))
        chart = ROOT / words[3]
        installs[chart.name] = HelmInstall(words[2], chart, namespace, files)
    return installs


@dataclass(frozen=True)
class Apply:
    path: Path
    namespace: str


def applied_manifests(text: str) -> list[Apply]:
    """The AsyncActor files that `kubectl apply -f` commands of the README apply (not CRDs)."""
    found: list[Apply] = []
    for words in commands(text, "kubectl"):
        if words[:2] != ["kubectl", "apply"]:
            continue
        target = option(words, "-f", "--filename")
        assert target, f"`{shlex.join(words)}` applies no file"
        path = ROOT / target
        assert path.exists(), f"`{shlex.join(words)}`: {target} does not exist"
        applied = Apply(path, option(words, "-n", "--namespace") or "default")
        if path.is_file() and kinds(path) == {"AsyncActor"} and applied not in found:
            found.append(applied)
    return found


def kinds(path: Path) -> set[str]:
    return {d["kind"] for d in yaml.safe_load_all(path.read_text()) if d}


def inline_actors(text: str) -> list[str]:
    """The README's complete AsyncActor manifests (a header and a spec), as YAML text."""
    return [
        block
        for block in code_blocks(text, "yaml")
        if re.search(r"^kind: AsyncActor$", block, re.M) and block.startswith("apiVersion:")
    ]


# ---------------------------------------------------------- what the chart and CLI make


def chart_operator_config(values: Obj, namespace: str) -> str:
    """The operator's configuration file exactly as the chart's ConfigMap carries it."""
    configmap = one(render(OPERATOR, values, namespace), "ConfigMap")
    text: str = configmap["data"]["operator.yaml"]
    return text


def asya_render(manifest: Path, namespace: str, config: Path) -> list[Obj]:
    result = subprocess.run(
        [ASYA, "render", str(manifest), "-n", namespace, "--operator-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"asya render {manifest.name} exited {result.returncode}:\n" + (
        result.stderr
    )
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def sidecar_env(deployment: Obj) -> dict[str, Obj]:
    (sidecar,) = [
        c
        for c in deployment["spec"]["template"]["spec"]["containers"]
        if c["name"] == SIDECAR_CONTAINER
    ]
    return {e["name"]: e for e in sidecar["env"]}


def secret_names(objects: list[Obj]) -> set[str]:
    """Every Secret the rendered pods and KEDA authentications read."""
    names: set[str] = set()
    for deployment in of_kind(objects, "Deployment"):
        for entry in sidecar_env(deployment).values():
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
    for auth in of_kind(objects, "TriggerAuthentication"):
        names.update(ref["name"] for ref in auth["spec"].get("secretTargetRef", []))
    return names


def assert_uses_transport(objects: list[Obj], transport: operator_config.TransportConfig) -> None:
    """One actor's sidecar, ScaledObject and Secrets all belong to `transport`."""
    deployments = of_kind(objects, "Deployment")
    assert deployments, "nothing rendered"
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        kind = sidecar_env(deployment)["ASYA_TRANSPORT"]["value"]
        assert kind in KINDS, f"{name}: ASYA_TRANSPORT {kind!r} is no transport of asya_transports"
        assert kind == transport.type, f"{name}: the sidecar uses {kind}, not {transport.type}"
    for scaled in of_kind(objects, "ScaledObject"):
        triggers = [t["type"] for t in scaled["spec"]["triggers"]]
        assert triggers == [KEDA_TRIGGER[transport.type]], scaled["metadata"]["name"]
    chosen = transport.credentials.secret_ref if transport.credentials else None
    assert secret_names(objects) == ({chosen.name} if chosen else set())


def assert_every_actor_uses_its_transport(
    manifest: Path, objects: list[Obj], config: operator_config.OperatorConfig
) -> None:
    """Each actor of `manifest` got the transport the configuration gives it, and no other."""
    for document in yaml.safe_load_all(manifest.read_text()):
        actor = AsyncActor.from_object(document)
        chosen = config.transport_name(actor.spec.transport)
        assert chosen in config.transports, f"{actor.name}: transport {chosen!r}"
        mine = [o for o in objects if o["metadata"]["labels"].get(ACTOR_LABEL) == actor.actor]
        assert_uses_transport(mine, config.transports[chosen])


# ------------------------------------------------------------------------------ tests

TEXT = README.read_text()
VALUES = operator_values(TEXT)
INSTALLS = helm_installs(TEXT)
APPLIED = applied_manifests(TEXT)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    install = INSTALLS["asya-operator"]
    assert install.values_files == ("values.yaml",), (
        "README: `helm install asya-operator` should take the marked values as -f values.yaml"
    )
    path = tmp_path_factory.mktemp("readme") / "operator.yaml"
    path.write_text(chart_operator_config(VALUES, install.namespace))
    return path


def test_the_readme_applies_example_actors() -> None:
    assert {a.path.parent.name for a in APPLIED} >= {"ticket-router"}
    assert all(a.namespace != "default" for a in APPLIED), "apply actors to a named namespace"


@pytest.mark.parametrize("applied", APPLIED, ids=lambda a: str(a.path.relative_to(ROOT)))
def test_applied_example_renders_with_the_readme_values(applied: Apply, config_file: Path) -> None:
    objects = asya_render(applied.path, applied.namespace, config_file)
    assert_every_actor_uses_its_transport(applied.path, objects, operator_config.load(config_file))


@pytest.mark.parametrize("index", range(len(inline_actors(TEXT))))
def test_inline_actor_renders_with_the_readme_values(
    index: int, config_file: Path, tmp_path: Path
) -> None:
    manifest = tmp_path / "actor.yaml"
    manifest.write_text(inline_actors(TEXT)[index])
    objects = asya_render(manifest, "team-a", config_file)
    assert_every_actor_uses_its_transport(manifest, objects, operator_config.load(config_file))


def test_the_crew_installed_as_shown_renders_with_the_readme_values(
    config_file: Path, tmp_path: Path
) -> None:
    install = INSTALLS["asya-crew"]
    assert install.values_files == (), "README: the crew's values file is not shown"
    config = operator_config.load(config_file)
    assert config.crew_namespace == install.namespace, "the crew is not where the operator looks"
    crew = of_kind(render(CREW, {}, install.namespace), "AsyncActor")
    assert {a["metadata"]["name"] for a in crew} >= {"x-sink", "x-sump"}
    manifest = tmp_path / "crew.yaml"
    manifest.write_text(yaml.safe_dump_all(crew))
    objects = asya_render(manifest, install.namespace, config_file)
    assert_every_actor_uses_its_transport(manifest, objects, config)


def keda_minimums(text: str) -> set[str]:
    # "KEDA 2.20", "KEDA >= 2.20", "KEDA v2.20", "[KEDA](https://keda.sh) 2.20"
    return set(re.findall(r"KEDA(?:\]\([^)]*\))?\s+(?:>=\s*|v)?(\d+\.\d+)", text))


def test_keda_version_is_one_and_the_same_everywhere() -> None:
    tested = re.search(r"release tag v(\d+\.\d+)\.\d+", KEDA_DATA.read_text())
    assert tested, f"{KEDA_DATA} no longer names the KEDA release its CRDs come from"
    assert keda_minimums(TEXT) == {tested.group(1)}, "README.md"
    assert keda_minimums(INSTALL.read_text()) == {tested.group(1)}, "docs/install.md"


def printer_columns() -> list[str]:
    """The `kubectl get asya` header: NAME, then the CRD's columns that show without -o wide."""
    crd = yaml.safe_load(CHART_CRD_PATH.read_text())
    (version,) = crd["spec"]["versions"]
    shown = [
        c["name"].upper() for c in version["additionalPrinterColumns"] if not c.get("priority")
    ]
    return ["NAME", *shown]


def get_asya_samples(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """(header, rows) of every sample output of `kubectl get asya` in fenced blocks."""
    samples: list[tuple[list[str], list[list[str]]]] = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M):
        lines = [line.lstrip("# ").split() for line in block.splitlines()]
        for index, words in enumerate(lines):
            if words[:2] == ["NAME", "STATUS"]:
                rows = []
                for row in lines[index + 1 :]:
                    if not row or row[0].startswith(("kubectl", "asya", "helm")):
                        break
                    rows.append(row)
                samples.append((words, rows))
    return samples


@pytest.mark.parametrize(
    "page", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name
)
def test_get_asya_samples_show_the_crd_columns(page: Path) -> None:
    for header, rows in get_asya_samples(page.read_text()):
        assert header == printer_columns(), page.name
        for row in rows:
            assert len(row) == len(header), f"{page.name}: {row} does not fill the columns"


def test_readme_sample_row_is_what_the_applied_actor_shows() -> None:
    ((header, rows),) = get_asya_samples(TEXT)
    assert rows, "the README's `kubectl get asya` sample has no row"
    actors = {
        document["metadata"]["name"]: AsyncActor.from_object(document)
        for applied in APPLIED
        for document in yaml.safe_load_all(applied.path.read_text())
    }
    config = operator_config.parse(VALUES)
    for row in rows:
        shown = dict(zip(header, row, strict=True))
        actor = actors[shown["NAME"]]
        scaling = actor.spec.scaling
        assert (shown["MIN"], shown["MAX"]) == (
            str(scaling.min_replicas),
            str(scaling.max_replicas),
        )
        assert shown["TRANSPORT"] == config.transport_name(actor.spec.transport)
        assert shown["TRANSPORT"] in VALUES["transports"]


def test_the_architecture_picture_opens_the_readme() -> None:
    first_section = TEXT.split("\n## ", 1)[0]
    (picture,) = code_blocks(first_section, "mermaid")
    assert picture.startswith("flowchart")
    for part in ("asya-sidecar", "asya-runtime", "queue", "crew", "gateway", "KEDA", "operator"):
        assert part in picture, f"the README's picture does not show the {part}"
