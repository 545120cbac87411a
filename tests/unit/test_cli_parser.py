"""The `biomero` command line as people type it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from biomeroworker.cli import get_parser

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "config"),
    [
        (["check", "--config", "after.ini"], "after.ini"),
        (["--config", "before.ini", "check"], "before.ini"),
        (["--config", "before.ini", "status", "--config", "after.ini"], "after.ini"),
        (["tracking", "rebuild", "--config", "nested.ini"], "nested.ini"),
        (["status"], None),
    ],
)
def test_config_is_accepted_before_or_after_the_subcommand(argv: list[str], config: str) -> None:
    assert get_parser().parse_args(argv).config == config


def test_a_reader_that_leaves_early_is_no_error(tmp_path: Path) -> None:
    """`biomero workflows --json | head`: no BrokenPipeError traceback, exit 0."""
    config = tmp_path / "slurm-config.ini"
    config.write_text(
        "[SSH]\nhost = nowhere\n[SLURM]\nslurm_data_path = d\n[WORKFLOWS]\n"
        f"nuclei = nuclei\nnuclei_repo = {REPO}/workflows/nuclei-segmentation\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "biomeroworker", "--config", str(config), "workflows", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)},
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first byte
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_a_steps_clock_stops_when_the_next_step_starts() -> None:
    """`stage up … 0:00:12` for a 0.6 s upload: the bar's clock must stop with its step."""
    from biomeroworker.cli.progress import RichReporter

    reporter = RichReporter()
    reporter.bytes_moved("stage up", 600, 1000)  # an estimate the stream never reached
    reporter.step("submit job")
    (task,) = reporter.progress.tasks
    assert task.stop_time is not None
    frozen = task.elapsed
    assert task.elapsed == frozen


def test_a_stopped_steps_clock_stays_stopped_through_later_steps() -> None:
    """The demo showed `stage up … 0:00:09` for a 0.5 s upload: each later step moved the
    frozen clock's end to its own start."""
    from biomeroworker.cli.progress import RichReporter

    now = [100.0]
    reporter = RichReporter()
    reporter.progress.get_time = lambda: now[0]
    reporter.bytes_moved("stage up", 600, 1000)
    now[0] = 100.5
    reporter.step("submit convert")
    now[0] = 105.0
    reporter.job("convert", "RUNNING", 0, 2)
    now[0] = 109.0
    reporter.step("submit job")
    reporter.step("stage down")
    stage_up, convert = reporter.progress.tasks
    assert stage_up.elapsed == 0.5
    assert convert.elapsed == 4.0


def test_progress_log_lines_carry_no_source_position() -> None:
    from biomeroworker.cli.progress import RichReporter

    reporter = RichReporter()
    with reporter.console.capture() as captured:
        reporter.step("stage up", "1 input(s)")
    assert "stage up: 1 input(s)" in captured.get()
    assert ".py:" not in captured.get()
