"""docker-compose.yml and the Dockerfile, tested without Docker (it cannot run here): the
services, profiles, healthchecks and start order the deployment needs; every command is
a real `gradwatch` subcommand with real options; every GRADWATCH_* name is a setting."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from service.cli import app
from service.config import Limits, Settings
from tests.conftest import REPO_ROOT, service_missing

COMPOSE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
# Read by compose itself (interpolation), never passed to gradwatch.
COMPOSE_VARIABLES = {
    "GRADWATCH_API_BIND", "GRADWATCH_API_PUBLISHED_PORT", "GRADWATCH_FLOWER_PUBLISHED_PORT",
    "GRADWATCH_IMAGE", "GRADWATCH_GPU_IMAGE", "GRADWATCH_POSTGRES_IMAGE", "GRADWATCH_REDIS_IMAGE", "GRADWATCH_FLOWER_IMAGE",
}  # fmt: skip
SECRETS = ("POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def gradwatch_services(services: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in services.items() if s.get("command", [None])[0] == "gradwatch"}


def test_the_services_and_their_profiles(services) -> None:
    assert {"postgres", "redis", "migrate", "api", "worker", "worker-gpu", "flower"} <= set(services)
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    assert services["flower"]["profiles"] == ["monitoring"]
    for always_on in ("postgres", "redis", "migrate", "api", "worker"):
        assert "profiles" not in services[always_on], always_on


def test_database_and_broker_have_healthchecks(services) -> None:
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_start_order(services) -> None:
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert services["migrate"]["restart"] == "no"  # one-shot
    for name in ("api", "worker", "worker-gpu"):
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name


def test_gpu_worker_reserves_an_nvidia_device_and_takes_the_gpu_queue(services) -> None:
    gpu = services["worker-gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert option_value(gpu["command"], "--queue") == "gpu"
    assert option_value(services["worker"]["command"], "--queue") == "cpu"
    # A CUDA image: torch comes from a CUDA wheel index, passed to the Dockerfile's build arg.
    assert "cu" in gpu["build"]["args"]["TORCH_INDEX_URL"].rsplit("/", 1)[-1]
    assert "ARG TORCH_INDEX_URL" in DOCKERFILE.read_text()


def test_every_command_is_a_real_gradwatch_subcommand(services) -> None:
    cli = typer.main.get_command(app)
    commands = {name: s["command"] for name, s in gradwatch_services(services).items()}
    assert set(commands) == {"migrate", "api", "worker", "worker-gpu"}
    assert commands["migrate"][:2] == ["gradwatch", "migrate"]
    assert commands["api"][1] == "api"
    for name, command in commands.items():
        subcommand = cli.commands.get(command[1])
        assert subcommand is not None, f"{name}: gradwatch has no subcommand {command[1]!r}"
        # Parses the arguments exactly as `gradwatch` would, without running anything:
        # an unknown option or a bad value (--pool fork, --port http) raises here.
        subcommand.make_context(command[1], list(command[2:]))


def test_api_listens_where_its_port_is_published(services) -> None:
    api = services["api"]
    port = option_value(api["command"], "--port")
    assert option_value(api["command"], "--host") == "0.0.0.0"  # inside its container
    assert api["ports"] == [f"${{GRADWATCH_API_BIND:-127.0.0.1}}:${{GRADWATCH_API_PUBLISHED_PORT:-8000}}:{port}"]
    assert "/api/v1/health" in " ".join(api["healthcheck"]["test"])


def test_every_gradwatch_variable_is_a_setting() -> None:
    fields = set(Settings.model_fields) - {"limits"}
    limits = set(Limits.model_fields)
    for path in (COMPOSE, DOCKERFILE):
        names = set(re.findall(r"\bGRADWATCH_[A-Z0-9_]+", path.read_text())) - COMPOSE_VARIABLES
        assert names, path
        for name in names:
            key = name.removeprefix("GRADWATCH_").lower()
            if key.startswith("limit_"):
                assert key.removeprefix("limit_") in limits, f"{path.name}: {name} is not a limit"
            else:
                assert key in fields, f"{path.name}: {name} is not a Settings field"


def test_gradwatch_services_share_postgres_and_redis(services) -> None:
    for name, service in gradwatch_services(services).items():
        environment = service["environment"]
        assert environment["GRADWATCH_DATABASE_URL"].startswith("postgresql+psycopg://"), name
        assert environment["GRADWATCH_DATABASE_URL"].split("@")[1].startswith("postgres:5432/"), name
        assert environment["GRADWATCH_BROKER_URL"].startswith("redis://redis:6379"), name
        # Settings must parse what compose passes (a typo'd boolean would fail here).
        # (with each `${NAME:-default}` as compose resolves it when `.env` leaves NAME out).
        resolved = {k: re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(v)) for k, v in environment.items()}
        Settings(**{k.removeprefix("GRADWATCH_").lower(): v for k, v in resolved.items()})


def test_every_image_name_can_be_overridden_from_the_environment(services) -> None:
    images = {name: service["image"] for name, service in services.items()}
    assert images == {
        "postgres": "${GRADWATCH_POSTGRES_IMAGE:-postgres:16}",
        "redis": "${GRADWATCH_REDIS_IMAGE:-redis:7}",
        "migrate": "${GRADWATCH_IMAGE:-gradwatch:latest}",
        "api": "${GRADWATCH_IMAGE:-gradwatch:latest}",
        "worker": "${GRADWATCH_IMAGE:-gradwatch:latest}",
        "worker-gpu": "${GRADWATCH_GPU_IMAGE:-gradwatch:gpu}",
        "flower": "${GRADWATCH_FLOWER_IMAGE:-mher/flower:2.0}",
    }


def test_each_tunable_defaults_to_the_settings_own_default(services) -> None:
    """A tunable compose passes as `${GRADWATCH_X:-default}` gets gradwatch's own default
    when `.env` leaves it out, never a second opinion on it."""
    for name, value in services["worker"]["environment"].items():
        matched = re.fullmatch(r"\$\{(GRADWATCH_[A-Z0-9_]+):-(.*)\}", str(value))
        if matched is None:
            continue
        assert matched.group(1) == name, name
        field = name.removeprefix("GRADWATCH_").lower()
        default = Settings.model_fields[field].default
        parsed = Settings(**{field: matched.group(2)})
        assert getattr(parsed, field) == default, (name, matched.group(2), default)


def test_dockerfile_installs_torch_before_the_project() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    torch_at = next(i for i, line in enumerate(lines) if "pip install" in line and "torch==" in line)
    project_at = next(i for i, line in enumerate(lines) if re.search(r"pip install (-e )?\.", line))
    assert torch_at < project_at
    # From the build context only: `COPY --from=build` copies between the Dockerfile's stages.
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), flags=re.MULTILINE):
        for source in copied.split():
            assert (REPO_ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"


def option_value(command: list[str], option: str) -> str:
    return command[command.index(option) + 1]


def compose_config(*arguments: str, env_file: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess[str]:
    """Compose's own parser (Debian's docker-compose, installed by .ci/run) resolves the
    file, its anchors, profiles, interpolation and depends_on: no engine needed for `config`."""
    binary = shutil.which("docker-compose")
    if binary is None:
        service_missing("docker-compose", FileNotFoundError("apt-get install docker-compose"))
    return subprocess.run(
        [binary, "-f", str(COMPOSE), "--env-file", str(env_file), "--profile", "gpu", "--profile", "monitoring",
         "config", *arguments],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_docker_compose_accepts_the_file_with_every_profile() -> None:
    result = compose_config("--services")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {"postgres", "redis", "migrate", "api", "worker", "worker-gpu", "flower"}


def test_secrets_come_from_the_env_file_and_nothing_starts_without_them(tmp_path: Path) -> None:
    text = COMPOSE.read_text()
    assert "gradwatch:gradwatch@" not in text and "POSTGRES_PASSWORD: gradwatch" not in text
    for secret in SECRETS:
        assert f"${{{secret}:?" in text, secret  # required: compose stops and names it
        assert re.search(rf"^{secret}=\S+", ENV_EXAMPLE.read_text(), flags=re.MULTILINE), secret
    assert ".env" in (REPO_ROOT / ".gitignore").read_text().split()
    empty = tmp_path / "empty.env"
    empty.write_text("")
    refused = compose_config("--services", env_file=empty)
    assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr


def test_resolved_deployment_is_closed_by_default() -> None:
    result = compose_config()
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    published = {name: service.get("ports", []) for name, service in resolved.items() if service.get("ports")}
    assert set(published) == {"api", "flower"}  # PostgreSQL and Redis stay inside
    for name, ports in published.items():
        for port in ports:
            host_ip = port["host_ip"] if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", (name, port)
    assert resolved["flower"]["environment"]["FLOWER_BASIC_AUTH"].count(":") == 1
    password = resolved["postgres"]["environment"]["POSTGRES_PASSWORD"]
    for name, service in gradwatch_services(resolved).items():
        assert service["environment"]["GRADWATCH_AUTH"] == "required", name
        assert f"gradwatch:{password}@postgres:5432/" in service["environment"]["GRADWATCH_DATABASE_URL"], name
        assert service["cap_drop"] == ["ALL"] and "no-new-privileges:true" in service["security_opt"], name
    assert "USER gradwatch" in DOCKERFILE.read_text()  # never root in the container
