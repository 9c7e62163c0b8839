"""The container image (Dockerfile), tested without a container engine.

Two halves:
- the Dockerfile is parsed and held to its rules: two stages on the same slim Python base,
  nothing installed or compiled in the final stage, a numeric non-root user, an exec-form
  `asya` entrypoint, the venv first on PATH;
- the builder stage's steps are replayed on this machine, as written (COPY, venv, wheel,
  install with constraints and the same extras), into a fresh venv, and the result is used
  the way the image is: every entrypoint answers `--help`, the packages import from the venv,
  the crew handler is served by `python3 runtime.py` found through PATH, and no test, dev or
  example package came along.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from asya_shared import records
from tests.support.runtime import RuntimeFactory

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

# What the image must carry, and what it must not (extras of pyproject.toml).
IMAGE_EXTRA = "all"
NOT_IN_IMAGE = ("test", "dev", "examples")
UID_GID = "65532:65532"

# Installing takes about 25 s with a warm pip cache and well under two minutes from PyPI.
INSTALL_TIMEOUT_S = 480
SLOW_TIMEOUT_S = 600


# ------------------------------------------------------------------------------ parsing


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    flags: list[str]  # leading --options of RUN, COPY and ADD (--from=, --mount=, ...)
    args: str


@dataclass
class Stage:
    image: str  # the base, with build arguments substituted
    name: str | None
    args: dict[str, str] = field(default_factory=dict)  # ARG defaults declared in the stage
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def logical_lines(text: str) -> Iterator[str]:
    """Instructions with their continuation lines joined; comments and blank lines dropped
    (Docker drops comment lines inside a continued instruction too)."""
    pending: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        yield " ".join(pending)
        pending = []
    assert not pending, f"the Dockerfile ends inside a continued instruction: {pending}"


def substitute(text: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, text)


def parse_dockerfile(text: str) -> list[Stage]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(image=substitute(parts[0], global_args), name=name))
            continue
        if keyword == "ARG" and not stages:
            key, _, default = rest.partition("=")
            global_args[key] = default
            continue
        assert stages, f"{keyword} before the first FROM"
        flags: list[str] = []
        if keyword in ("RUN", "COPY", "ADD"):
            while rest.startswith("--"):
                flag, _, rest = rest.partition(" ")
                flags.append(flag)
                rest = rest.strip()
        stage = stages[-1]
        if keyword == "ARG":
            key, eq, default = rest.partition("=")
            # `ARG NAME` without a value inside a stage takes the global default.
            stage.args[key] = default if eq else global_args.get(key, "")
        stage.instructions.append(Instruction(keyword, flags, rest))
    return stages


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for pair in shlex.split(instruction.args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def labels_of(stage: Stage) -> dict[str, str]:
    labels: dict[str, str] = {}
    for instruction in stage.all("LABEL"):
        for pair in shlex.split(instruction.args):
            key, _, value = pair.partition("=")
            labels[key] = substitute(value, stage.args)
    return labels


def commands_of(stage: Stage) -> list[list[str]]:
    """Every shell command of the stage's RUN instructions, split into words."""
    commands: list[list[str]] = []
    for instruction in stage.all("RUN"):
        assert not instruction.args.startswith("["), "exec-form RUN is not replayed"
        for command in re.split(r"\s*&&\s*", instruction.args):
            commands.append(shlex.split(command))
    return commands


STAGES = parse_dockerfile(DOCKERFILE.read_text())
FINAL = STAGES[-1]


def from_stage(instruction: Instruction) -> str | None:
    for flag in instruction.flags:
        if flag.startswith("--from="):
            return flag.removeprefix("--from=")
    return None


def builder_stage() -> Stage:
    sources = {from_stage(c) for c in FINAL.all("COPY")} - {None}
    assert len(sources) == 1, f"the final stage should copy from one builder stage: {sources}"
    (name,) = sources
    matches = [s for s in STAGES[:-1] if s.name == name]
    assert matches, f"no stage named {name!r}"
    return matches[0]


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def extra_names(extra: str) -> set[str]:
    """Distribution names an extra of pyproject.toml brings in, self-references followed."""
    names: set[str] = set()
    for requirement in PYPROJECT["project"]["optional-dependencies"][extra]:
        name = requirement_name(requirement)
        if name == "asya":
            inner = re.search(r"\[([^\]]+)\]", requirement)
            assert inner, requirement
            for sub in inner.group(1).split(","):
                names |= extra_names(sub.strip())
        else:
            names.add(name)
    return names


# ------------------------------------------------------------------- the Dockerfile itself


def test_two_stages_on_the_same_slim_python_base() -> None:
    assert len(STAGES) >= 2, "expected a builder stage and a final stage"
    builder = builder_stage()
    assert re.fullmatch(r"python:3\.\d+-slim-[a-z]+", FINAL.image), (
        f"the final stage should start from a pinned slim Python tag, not {FINAL.image!r}"
    )
    # The venv links to the base image's interpreter, so both stages need the same one.
    assert builder.image == FINAL.image


def test_final_stage_installs_and_compiles_nothing() -> None:
    forbidden = re.compile(
        r"\b(apt-get|apt|aptitude|dpkg|apk|gcc|g\+\+|cc|make|build-essential|pip3?|"
        r"python3? -m pip|uv|poetry|curl|wget)\b"
    )
    for command in commands_of(FINAL):
        text = " ".join(command)
        assert not forbidden.search(text), f"the final stage runs a build or install: {text}"
    assert not FINAL.all("ADD"), "ADD can fetch URLs and unpack archives; use COPY"
    for copy in FINAL.all("COPY"):
        assert from_stage(copy) is not None, f"the final stage copies from the context: {copy}"
    copied = [c.args.split() for c in FINAL.all("COPY")]
    assert copied == [["/opt/venv", "/opt/venv"]], copied


def test_final_stage_runs_as_numeric_non_root_user() -> None:
    users = FINAL.all("USER")
    assert users, "the final stage has no USER: it would run as root"
    assert users[-1].args == UID_GID
    uid, gid = users[-1].args.split(":")
    assert int(uid) != 0
    assert int(gid) != 0
    # Nothing after the switch runs as root again or needs to.
    index = FINAL.instructions.index(users[-1])
    assert not [i for i in FINAL.instructions[index:] if i.keyword == "RUN"]
    assert FINAL.all("WORKDIR"), "the final stage should set a WORKDIR"


def test_entrypoint_is_exec_form_asya() -> None:
    entrypoints = FINAL.all("ENTRYPOINT")
    assert len(entrypoints) == 1
    assert json.loads(entrypoints[0].args) == ["asya"]
    (cmd,) = FINAL.all("CMD")
    assert json.loads(cmd.args) == ["--help"]
    assert not FINAL.all("SHELL")


def test_venv_comes_first_on_path() -> None:
    # The crew's runtime container runs `python3 /opt/asya/runtime.py`: python3 must be the
    # venv's interpreter, which has asya_crew.
    env = env_of(FINAL)
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_oci_labels() -> None:
    labels = labels_of(FINAL)
    prefix = "org.opencontainers.image."
    for key in ("title", "description", "version", "licenses"):
        assert labels.get(prefix + key), f"missing label {prefix}{key}"
    assert labels[prefix + "version"] == PYPROJECT["project"]["version"]
    assert labels[prefix + "licenses"] == PYPROJECT["project"]["license"]["text"]


def test_builder_installs_only_the_image_extras() -> None:
    builder = builder_stage()
    assert builder.args.get("ASYA_EXTRAS") == IMAGE_EXTRA
    shipped = extra_names(IMAGE_EXTRA)
    for extra in NOT_IN_IMAGE:
        assert extra not in PYPROJECT["project"]["optional-dependencies"][IMAGE_EXTRA]
    assert {"kopf", "aio-pika", "aioboto3", "gcloud-aio-pubsub"} <= shipped
    installs = [c for c in commands_of(builder) if "install" in c]
    assert len(installs) == 1, installs
    words = installs[0]
    assert words[words.index("-c") + 1].endswith("constraints.txt")
    assert any(w.endswith("[${ASYA_EXTRAS}]") for w in words), words


def test_builder_copies_every_package() -> None:
    copied: set[str] = set()
    for copy in builder_stage().all("COPY"):
        *sources, _ = copy.args.split()
        copied |= {s.rstrip("/") for s in sources}
    packages = {p.parent.name for p in REPO.glob("asya_*/__init__.py")}
    assert packages <= copied, f"not copied into the builder: {sorted(packages - copied)}"
    assert {"pyproject.toml", "README.md", "constraints.txt"} <= copied


def test_dockerignore_keeps_local_state_out_but_not_the_sources() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in (".venv", ".git", "tests", ".asya", "examples", "bench"):
        assert needed in patterns, f".dockerignore should exclude {needed}"
    assert "**/__pycache__" in patterns
    copied = [
        source.rstrip("/") for c in builder_stage().all("COPY") for source in c.args.split()[:-1]
    ]
    for source in copied:
        excluded = [p for p in patterns if not p.startswith("!") and Path(source).match(p)]
        assert not excluded, f"{source} is copied but .dockerignore excludes it ({excluded})"


# ---------------------------------------------------------------- the image's install, replayed


@dataclass
class ReplayedImage:
    root: Path  # stands for the builder's filesystem root
    venv: Path
    install_seconds: float

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def env(self) -> dict[str, str]:
        """The final stage's environment around this venv."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update({k: v for k, v in env_of(FINAL).items() if k not in ("PATH", "HOME")})
        env["VIRTUAL_ENV"] = str(self.venv)
        env["PATH"] = f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"
        return env


def _replay_copy(copy: Instruction, root: Path, workdir: str) -> None:
    *sources, dest = shlex.split(copy.args)
    target = root / (dest if dest.startswith("/") else f"{workdir}/{dest}").lstrip("/")
    for source in sources:
        path = REPO / source
        assert path.exists(), f"COPY {source}: not in the repository"
        if path.is_dir():
            # .dockerignore keeps bytecode out of the context.
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(path, target, dirs_exist_ok=True, ignore=ignore)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.name)


def _replay_words(words: list[str], root: Path, values: dict[str, str]) -> list[str]:
    """One shell command of the builder, pointed at `root` instead of the image's `/`."""
    out: list[str] = []
    for word in words:
        word = substitute(word, values)

        def listed(match: re.Match[str]) -> str:
            found = glob.glob(str(root / match.group(1).lstrip("/")))
            assert len(found) == 1, f"$(ls {match.group(1)}) matched {found}"
            return found[0]

        if word.startswith("/"):
            word = str(root / word.lstrip("/"))
        out.append(re.sub(r"\$\(ls (\S+)\)", listed, word))
    program, rest = out[0], out[1:]
    if program in ("python", "python3"):
        return [sys.executable, *rest]
    if program in ("pip", "pip3"):
        return [sys.executable, "-m", "pip", *rest]
    raise AssertionError(f"tests/test_image.py does not know how to replay {words}")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> ReplayedImage:
    """The builder stage's COPY and RUN steps, in order, on this machine."""
    builder = builder_stage()
    root = tmp_path_factory.mktemp("image-root")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(env_of(builder))
    workdir = "/"
    venv: Path | None = None
    started = time.monotonic()
    for instruction in builder.instructions:
        if instruction.keyword == "WORKDIR":
            workdir = instruction.args
        elif instruction.keyword == "COPY":
            assert from_stage(instruction) is None
            _replay_copy(instruction, root, workdir)
        elif instruction.keyword == "RUN":
            for command in re.split(r"\s*&&\s*", instruction.args):
                words = shlex.split(command)
                if words[1:3] == ["-m", "venv"]:
                    venv = root / words[-1].lstrip("/")
                argv = _replay_words(words, root, builder.args)
                done = subprocess.run(
                    argv,
                    cwd=root / workdir.lstrip("/"),
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=INSTALL_TIMEOUT_S,
                    check=False,
                )
                assert done.returncode == 0, (
                    f"{command}\n-> {shlex.join(argv)}\nexit {done.returncode}\n"
                    f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
                )
    assert venv is not None, "the builder stage creates no venv"
    final_venv = [c.args.split()[-1] for c in FINAL.all("COPY")]
    assert final_venv == [str(Path("/") / venv.relative_to(root))]
    return ReplayedImage(root=root, venv=venv, install_seconds=time.monotonic() - started)


def run_in(image: ReplayedImage, argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=image.env(), capture_output=True, text=True, timeout=60, check=False
    )


def venv_python(image: ReplayedImage, code: str, cwd: Path) -> Any:
    done = run_in(image, [str(image.bin / "python"), "-c", code], cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT_S)
class TestReplayedImage:
    @pytest.mark.parametrize(
        "command",
        [[], ["operator"], ["sidecar"], ["crew"], ["runtime"], ["render"]],
        ids=lambda c: " ".join(["asya", *c]),
    )
    def test_entrypoint_answers_help(
        self, image: ReplayedImage, command: list[str], tmp_path: Path
    ) -> None:
        # `asya` found through PATH, as the image's ENTRYPOINT finds it.
        asya = shutil.which("asya", path=image.env()["PATH"])
        assert asya == str(image.bin / "asya")
        done = run_in(image, [asya, *command, "--help"], tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"usage: {' '.join(['asya', *command])}"), done.stdout

    def test_version_comes_from_the_installed_metadata(
        self, image: ReplayedImage, tmp_path: Path
    ) -> None:
        done = run_in(image, [str(image.bin / "asya"), "--version"], tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"asya {PYPROJECT['project']['version']}"

    def test_every_process_imports_from_the_venv(
        self, image: ReplayedImage, tmp_path: Path
    ) -> None:
        modules = [
            "asya_crew.sink",
            "asya_crew.sump",
            "asya_sump.redriving",
            "asya_shared.stores.s3",
            "asya_operator.handlers",
            "asya_transports.rabbitmq",
            "asya_transports.sqs",
            "asya_transports.pubsub",
        ]
        code = (
            "import importlib, json; "
            f"print(json.dumps({{m: importlib.import_module(m).__file__ for m in {modules!r}}}))"
        )
        files = venv_python(image, code, tmp_path)
        for module, path in files.items():
            assert Path(path).is_relative_to(image.venv), f"{module} came from {path}"

    def test_no_test_dev_or_example_packages(self, image: ReplayedImage, tmp_path: Path) -> None:
        code = (
            "import importlib.metadata as m, json; "
            "print(json.dumps(sorted({d.metadata['Name'] for d in m.distributions()})))"
        )
        installed = {requirement_name(n) for n in venv_python(image, code, tmp_path)}
        core = {requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
        shipped = extra_names(IMAGE_EXTRA) | core | {"asya"}
        assert shipped <= installed, f"missing: {sorted(shipped - installed)}"
        unwanted = set().union(*(extra_names(e) for e in NOT_IN_IMAGE)) - shipped
        assert {"pytest", "kmock", "moto", "torch", "ruff", "mypy"} <= unwanted
        assert not unwanted & installed, f"installed: {sorted(unwanted & installed)}"
        # The venv was made without pip, and nothing installed it since.
        assert not {"pip", "setuptools"} & installed

    def test_bytecode_is_compiled_at_install(self, image: ReplayedImage, tmp_path: Path) -> None:
        # The root filesystem is read-only at run time and PYTHONDONTWRITEBYTECODE is set:
        # without bytecode from the install, every start would compile every module again.
        site = venv_python(
            image, "import json, site; print(json.dumps(site.getsitepackages()))", tmp_path
        )
        for package in sorted(p.parent.name for p in REPO.glob("asya_*/__init__.py")):
            compiled = list((Path(site[0]) / package / "__pycache__").glob("__init__.*.pyc"))
            assert compiled, f"no bytecode for {package} in the venv"

    def test_crew_handler_is_served_by_python3_on_path(
        self, image: ReplayedImage, start_runtime: RuntimeFactory, tmp_path: Path
    ) -> None:
        # The crew's asya-runtime container: `python3 /opt/asya/runtime.py`, found on the
        # image's PATH, with the handler in the venv and an empty working directory.
        results = tmp_path / "results"
        workdir = tmp_path / "app"
        workdir.mkdir()
        runtime = start_runtime(
            "asya_crew.sink.Sink.handle",
            python="python3",
            cwd=workdir,
            env={
                "PATH": image.env()["PATH"],
                "ASYA_RESULT_STORE": results.as_uri(),
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONPATH": "",
            },
        )
        answer = runtime.invoke(
            {"answer": 42},
            id="image-crew-1",
            route={"prev": ["a"], "curr": "x-sink", "next": []},
            status={"phase": "succeeded", "actor": "a", "attempt": 1},
        )
        assert answer.status_code == 204, answer.text
        stored = json.loads((results / records.key("image-crew-1")).read_text())
        assert stored["payload"] == {"answer": 42}
        assert stored["status"]["phase"] == "succeeded"

    def test_render_ships_the_installed_runtime_file(
        self, image: ReplayedImage, tmp_path: Path
    ) -> None:
        # The operator puts the runtime file into every actor's ConfigMap from the package.
        manifest = tmp_path / "actor.yaml"
        manifest.write_text(
            "apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {name: echo}\n"
            "spec: {image: python:3.11-slim, handler: echo.echo}\n"
        )
        done = run_in(image, [str(image.bin / "asya"), "render", str(manifest)], tmp_path)
        assert done.returncode == 0, done.stderr
        (config_map,) = [d for d in yaml.safe_load_all(done.stdout) if d["kind"] == "ConfigMap"]
        assert config_map["data"]["runtime.py"] == (REPO / "asya_runtime/runtime.py").read_text()
