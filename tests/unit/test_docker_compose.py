"""docker-compose.yml parses, has what production needs, and names real CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer.main
import yaml

from crm.cli import app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"

# Commands that compose names before they exist, with the issue that builds each one.
# The test fails once a command exists, so this list only ever shrinks.
PLANNED: dict[tuple[str, ...], str] = {}


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _resolves(words: list[str]) -> bool:
    command: Any = typer.main.get_command(app)
    for word in words:
        if word.startswith("-"):
            break
        if not hasattr(command, "commands"):  # a leaf command: the rest are its arguments
            return True
        sub = command.commands.get(word)
        if sub is None:
            return False
        command = sub
    return True


def test_infrastructure_services_have_volumes_and_health_checks() -> None:
    services = _compose()["services"]
    for name in ("kafka", "postgres"):
        assert services[name]["healthcheck"]["test"], name
        assert services[name]["volumes"], name
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for service in services.values():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{port} must bind to loopback only"


def test_every_project_service_names_a_cli_command() -> None:
    services = _compose()["services"]
    project = {n: s for n, s in services.items() if s.get("image") == "loopcrm:dev"}
    assert set(project) == {"ingest", "processor", "api"}
    for name, service in project.items():
        command = service["command"]
        assert command[0] == "crm", name
        words = [w for w in command[1:] if not w.startswith("-")][:2]
        planned = next(
            (issue for cmd, issue in PLANNED.items() if list(cmd) == words[: len(cmd)]), None
        )
        if planned:
            assert not _resolves(list(words)), (
                f"`crm {' '.join(words)}` exists now: drop it from PLANNED"
            )
        else:
            assert _resolves(command[1:]), (
                f"service {name}: `{' '.join(command)}` is not a crm command"
            )
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_command_check_tells_real_commands_from_missing_ones() -> None:
    assert _resolves(["schemas", "export"])
    assert _resolves(["dev", "up"])
    assert not _resolves(["schemas", "nonsense"])
