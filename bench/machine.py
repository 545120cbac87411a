"""What the benchmark ran on: cores, memory, disk, Slurm and Python versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def _disk(path: Path) -> str:
    usage = shutil.disk_usage(path)
    device = _first_line(["findmnt", "-n", "-o", "SOURCE,FSTYPE", "--target", str(path)])
    return f"{device} ({usage.total / 1e9:.0f} GB, {usage.free / 1e9:.0f} GB free)"


def describe(work: Path) -> dict[str, object]:
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gb": _memory_gb(),
        "disk": _disk(work),
        "os": _first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "kernel": platform.release(),
        "slurm": _first_line(["sinfo", "--version"]),
        "python": platform.python_version(),
        "ssh": "OpenSSH on 127.0.0.1:2222 (localslurm), same host",
    }
