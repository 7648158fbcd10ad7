"""`lbgen` commands run as users run them: subprocesses of the real CLI, with their logs kept.

- `LbgenProcesses.start(name, *args)`: a long-running `lbgen ...` (agent, watch); every one still
  running is killed at teardown (fixture `lbgen_processes`).
- `lbgen_status(registry, prefix)`: `lbgen status --json`, parsed.
- `watch_settings(...)`: a settings file for one `lbgen watch` target on the default templates.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@dataclass
class LbgenProcess:
    """One `python -m lbgen ...` process and its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the process leaves without revoking anything (a crashed host)."""
        self.proc.kill()
        self.proc.wait(timeout=10)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


class LbgenProcesses:
    """Starts `lbgen` processes for one test, logging under `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[LbgenProcess] = []

    def start(self, name: str, *args: str) -> LbgenProcess:
        log = self.directory / f"{name}-{len(self.started)}.log"
        argv = [sys.executable, "-m", "lbgen", "--log-level", "debug", *args]
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=ENV, cwd=self.directory)
        process = LbgenProcess(name, proc, log)
        self.started.append(process)
        return process

    def close(self) -> None:
        for process in self.started:
            if process.alive():
                process.kill()

    def logs(self) -> str:
        """Every process's log, for an assertion message."""
        return "\n".join(f"--- {p.name}\n{p.output()[-3000:]}" for p in self.started)


@pytest.fixture
def lbgen_processes(tmp_path: Path) -> Iterator[LbgenProcesses]:
    processes = LbgenProcesses(tmp_path)
    try:
        yield processes
    finally:
        processes.close()


def lbgen_status(registry: str, prefix: str, *extra: str) -> dict[str, Any]:
    """`lbgen status --json` against `registry`, parsed; fails on a non-zero exit."""
    argv = [sys.executable, "-m", "lbgen", "status", "--json", "--registry", registry, "--prefix", prefix, *extra]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=ENV)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def watch_settings(directory: Path, kind: str, vars: dict[str, Any], wait: str = "50ms:300ms") -> Path:
    """A settings file with one target of `kind` on the default template, rendering to
    `directory/<kind>.conf`; the registry and prefix come from the command line."""
    directory.mkdir(parents=True, exist_ok=True)
    check = {"nginx": ["nginx", "-t", "-q", "-c", "{staged}"], "haproxy": ["haproxy", "-c", "-f", "{staged}"]}[kind]
    template = {"nginx": "nginx.conf.j2", "haproxy": "haproxy.cfg.j2"}[kind]
    target = {"name": kind, "kind": kind, "template": str(ROOT / "templates" / template),
              "dest": str(directory / f"{kind}.conf"), "check": check, "timeout": "10s", "vars": vars}
    path = directory / "lbgen.yaml"
    path.write_text(yaml.safe_dump({"registry": "file:/unused", "wait": wait, "guard": "off", "targets": [target]}))
    return path
