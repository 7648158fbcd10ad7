"""The command line's shared options: logging anywhere and in any case, help for a bare command,
the JSON log format, and `--registry` help that only promises what the command does."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from lbgen.cli import build_parser, main
from lbgen.cli.logs import JsonFormatter
from lbgen.errors import ApplyError, TemplateError


@pytest.mark.parametrize(("argv", "level", "fmt"), [
    (["status"], "info", "text"),
    (["--log-level", "DEBUG", "status"], "debug", "text"),
    (["status", "--log-level", "Warning"], "warning", "text"),
    (["watch", "--log-format", "JSON", "--log-level", "error"], "error", "json"),
    (["--log-format", "json", "registry", "ls", "--log-level", "debug"], "debug", "json"),
    (["deploy", "apply", "spec.yaml", "--log-level", "debug"], "debug", "text"),
], ids=["defaults", "before", "after-any-case", "watch", "nested-mixed", "deploy-action"])
def test_logging_options_anywhere_in_any_case(argv: list[str], level: str, fmt: str) -> None:
    args = build_parser().parse_args(argv)
    assert (args.log_level, args.log_format) == (level, fmt)


def test_an_unknown_level_is_still_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["status", "--log-level", "loud"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'loud'" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "shows"), [([], "COMMAND"), (["registry"], "ACTION"), (["deploy"], "ACTION")],
                         ids=["bare", "registry", "deploy"])
def test_a_command_without_its_action_prints_help(argv: list[str], shows: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: lbgen") and shows in out


@pytest.mark.parametrize(("command", "promises"), [
    (["status"], False), (["agent"], False), (["registry", "ls"], False), (["deploy", "apply"], False),
    (["render"], True), (["watch"], True),
], ids=["status", "agent", "registry", "deploy", "render", "watch"])
def test_registry_help_promises_a_settings_default_only_where_there_is_one(
        command: list[str], promises: bool, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert ("then the settings file" in help_text) is promises


def test_json_lines_carry_level_logger_message_and_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("lbgen.x").makeRecord(
            "lbgen.x", logging.ERROR, __file__, 1, "failed at revision %s: %s", (42, "wé\n"), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "error" and entry["logger"] == "lbgen.x"
    assert entry["message"] == "failed at revision 42: wé\n"
    assert entry["exception"].endswith("ValueError: boom")
    assert entry["time"].endswith("Z") and entry["time"][10] == "T"


def test_the_readme_and_the_units_agree_with_the_metrics_defaults() -> None:
    """The README said 9102 while the units set 9108: one port, the documented default."""
    root = Path(__file__).resolve().parents[2]
    watch_default = build_parser().parse_args(["watch"]).metrics_addr
    assert watch_default == "127.0.0.1:9102"
    assert f"metrics and /healthz on {watch_default}" in (root / "README.md").read_text()
    agent_default = build_parser().parse_args(["agent", "--node", "a", "--host-ip", "10.0.0.1"]).metrics_addr
    units = {"nginx/lbgen-watch-nginx.service": watch_default, "haproxy/lbgen-watch-haproxy.service": watch_default,
             "agent/lbgen-agent.service": agent_default}
    for path, default in units.items():
        unit = (root / path).read_text()
        assert f"Environment=LBGEN_METRICS_ADDR={default}\n" in unit, path
        assert "--metrics-addr ${LBGEN_METRICS_ADDR}" in unit, path


def test_the_readme_states_the_dry_run_exit_status() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "--dry-run   # preview: diff + checker verdict, exit 5 if invalid" in readme
    assert ApplyError.exit_code == 5 and TemplateError.exit_code == 1
