"""compose.yaml, checked without a container engine: a real validator accepts it, every command a
service runs exists in this repository, and the Temporal dynamic config it mounts is the one the
local dev server uses."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from scripts.temporal_dev_server import DYNAMIC_CONFIG

REPO = Path(__file__).resolve().parent.parent


def resolved_compose() -> dict:
    """The file as Compose reads it (anchors and merges resolved), from Debian's docker-compose."""
    docker_compose = shutil.which("docker-compose")
    assert docker_compose, "docker-compose is missing: scripts/test installs it (apt-get install docker-compose)"
    result = subprocess.run(
        [docker_compose, "--file", str(REPO / "compose.yaml"), "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def compose() -> dict:
    return resolved_compose()


def defines(path: Path, name: str) -> bool:
    tree = ast.parse(path.read_text())
    return any(
        isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets)
        for node in tree.body
    )


def test_every_service_command_exists_in_the_repository(compose):
    checked = []
    for name, service in compose["services"].items():
        command = service.get("command")
        if not command:
            continue
        if command[:2] == ["python", "-m"]:
            target = REPO / (command[2].replace(".", "/") + ".py")
            assert target.is_file(), f"{name}: no module {command[2]}"
        elif command[0] == "python":
            assert (REPO / command[1]).is_file(), f"{name}: no script {command[1]}"
        elif command[0] == "uvicorn":
            module, attribute = command[1].split(":")
            target = REPO / (module.replace(".", "/") + ".py")
            assert target.is_file() and defines(target, attribute), f"{name}: no {command[1]}"
            if "--log-config" in command:
                assert (REPO / command[command.index("--log-config") + 1]).is_file(), f"{name}: no log config"
        else:
            pytest.fail(f"{name}: unexpected command {command}")
        checked.append(name)
    assert {"migrate", "web", "order-worker", "shipping-worker"} <= set(checked)


def test_workers_scale_and_everything_waits_for_what_it_needs(compose):
    services = compose["services"]
    for worker in ("order-worker", "shipping-worker"):
        # A published host port would stop a second replica from starting.
        assert "ports" not in services[worker]
        assert services[worker]["depends_on"]["temporal"]["condition"] == "service_healthy"
        assert services[worker]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert "healthcheck" in services[worker]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["temporal"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    images = {services[name]["image"] for name in ("migrate", "web", "order-worker", "shipping-worker")}
    assert images == {"order-lifecycle:latest"}


def test_the_mounted_dynamic_config_matches_the_dev_server_values(compose):
    [mount] = compose["services"]["temporal"]["volumes"]
    source = Path(mount.split(":")[0])
    assert source.resolve() == (REPO / "scripts" / "temporal-dynamic-config.yaml").resolve()
    file_values = {key: entries[0]["value"] for key, entries in yaml.safe_load(source.read_text()).items()}
    dev_server_values = {key: json.loads(value) for key, value in DYNAMIC_CONFIG.items()}
    assert file_values == dev_server_values


def test_the_dockerfile_copies_only_what_exists():
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (REPO / source).exists(), f"Dockerfile copies missing {source}"
