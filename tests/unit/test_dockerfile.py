"""Structural lint of the Dockerfile (no Docker engine runs here; test_packaging.py builds the wheel).

The Dockerfile is parsed into stages of (instruction, argument) pairs: continuation lines are
joined, comments dropped, and `${ARG}` in FROM lines resolved from the global ARGs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pytest

from tests.validation import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|make|build-essential|python3?-dev|libc6?-dev|apt-get|apk|cargo|rustc)\b")


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [arg for ins, arg in self.instructions if ins == instruction]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    logical, buffer = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        instruction, _, argument = line.partition(" ")
        instruction, argument = instruction.upper(), argument.strip()
        if instruction == "FROM":
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), argument.split()[0])
            parts = argument.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(image=image, name=name))
        elif instruction == "ARG" and not stages:
            key, _, value = argument.partition("=")
            args[key] = value.strip('"')
        elif stages:
            stages[-1].instructions.append((instruction, argument))
    return args, stages


@pytest.fixture(scope="module")
def dockerfile():
    return parse(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(dockerfile):
    return dockerfile[1][-1]


def env_of(stage: Stage) -> dict[str, str]:
    env = {}
    for argument in stage.all("ENV"):
        for key, value in re.findall(r'(\w+)=("[^"]*"|\S+)', argument):
            env[key] = value.strip('"')
    return env


def test_multi_stage_with_pinned_python_base(dockerfile):
    _, stages = dockerfile
    assert len(stages) >= 2, "a build stage and a runtime stage"
    for stage in stages:
        repository, _, tag = stage.image.partition(":")
        assert tag and tag != "latest" and "$" not in stage.image, f"FROM {stage.image} is not pinned"
        assert "@sha256:" in stage.image or re.fullmatch(r"\d+\.\d+\.\d+-slim-\w+", tag), f"{stage.image}: pin an exact version"
    # The venv copied from the build stage symlinks the build stage's interpreter: same base.
    assert stages[0].image == stages[-1].image


def test_build_stage_builds_the_wheel_into_a_venv(dockerfile):
    build = dockerfile[1][0]
    runs = " ".join(build.all("RUN"))
    assert "pip wheel" in runs and "--no-deps" in runs
    assert "python -m venv /opt/modelwarden" in runs
    assert "/opt/modelwarden/bin/pip install /wheels/modelwarden-" in runs


def test_final_stage_runs_modelwarden_as_non_root(final):
    users = final.all("USER")
    assert users, "the final stage sets USER"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) != 0, "a numeric non-root uid (runAsNonRoot can verify it)"
    assert not group or (group.isdigit() and int(group) != 0)
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["modelwarden"]
    assert json.loads(final.all("CMD")[-1]) == ["run"]


def test_final_stage_has_no_build_tools(final):
    assert not final.all("RUN"), "the runtime stage only copies the venv"
    for _, argument in final.instructions:
        assert not BUILD_TOOLS.search(argument), argument
    copies = final.all("COPY")
    assert copies == ["--from=build /opt/modelwarden /opt/modelwarden"], copies


def test_read_only_root_filesystem_friendly(final):
    env = env_of(final)
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("HOME") == "/tmp" and env.get("TMPDIR") == "/tmp"
    assert env.get("PATH", "").startswith("/opt/modelwarden/bin:")
    assert final.all("WORKDIR")[-1] == "/tmp"
    assert not final.all("VOLUME"), "writable paths come from the pod (an emptyDir on /tmp)"


def test_healthcheck_covers_both_roles(final):
    (healthcheck,) = final.all("HEALTHCHECK")
    assert "/v2/health/live" in healthcheck and "8081/healthz" in healthcheck and "PORT" in healthcheck


def test_exposed_ports_match_the_server_and_the_operator(final):
    from modelwarden.serving.service import DEFAULT_PORT

    ports = {int(p) for argument in final.all("EXPOSE") for p in argument.split()}
    assert ports == {DEFAULT_PORT, 8081, 8082}


def test_build_context_is_exactly_what_the_build_copies(dockerfile):
    """.dockerignore excludes everything but what the build stage COPYs (and test_packaging builds from)."""
    from tests.integration.test_packaging import BUILD_CONTEXT

    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "**"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == set(BUILD_CONTEXT)
    copied = set()
    for argument in dockerfile[1][0].all("COPY"):
        copied.update(argument.split()[:-1])
    assert copied == set(BUILD_CONTEXT)
