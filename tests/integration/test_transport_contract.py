"""The Transport contract, run against the SSH transport (real sshd) and the local one."""

from __future__ import annotations

import io
import os
import tarfile
import uuid
from pathlib import Path

import pytest

from biomeroworker.errors import CommandError, CommandTimeout, StreamStalled

HOSTILE = [
    "it's",
    'say "hi"',
    "$(touch /tmp/biomero-pwned-transport)",
    "`touch /tmp/biomero-pwned-transport`",
    "a;touch /tmp/biomero-pwned-transport",
    "x && touch /tmp/biomero-pwned-transport",
    "line1\nline2",
    "--option-looking",
    "*",
    "",
]


def _scratch(transport) -> str:  # type: ignore[no-untyped-def]
    name = f"contract-{uuid.uuid4().hex[:8]}"
    transport.run(["mkdir", "-p", name])
    return name


def test_run_returns_stdout_and_exit_code(transport) -> None:  # type: ignore[no-untyped-def]
    result = transport.run(["echo", "hello"])
    assert result.exit_code == 0
    assert result.stdout == "hello\n"
    assert result.elapsed_s >= 0


def test_failing_command_raises_command_error_with_output(transport) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CommandError) as info:
        transport.run(["ls", "/definitely/not/here"])
    assert info.value.exit_code == 2
    assert "not/here" in info.value.stderr


def test_unchecked_failure_is_returned_not_raised(transport) -> None:  # type: ignore[no-untyped-def]
    assert transport.run(["false"], check=False).exit_code == 1


def test_hostile_arguments_arrive_literally_and_nothing_executes(transport) -> None:  # type: ignore[no-untyped-def]
    marker = Path("/tmp/biomero-pwned-transport")
    marker.unlink(missing_ok=True)
    result = transport.run(["printf", "%s\\0", *HOSTILE])
    assert result.stdout.split("\0")[:-1] == HOSTILE
    assert not marker.exists()


def test_command_counter_counts_each_command(transport) -> None:  # type: ignore[no-untyped-def]
    before = transport.commands_run
    transport.run(["true"])
    transport.run(["true"])
    assert transport.commands_run - before == 2


def test_timeout_raises_command_timeout(transport) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CommandTimeout):
        transport.run(["sleep", "5"], timeout_s=0.5)


def test_binary_stream_in_and_out_is_unchanged(transport) -> None:  # type: ignore[no-untyped-def]
    payload = os.urandom(3 * 1024 * 1024 + 17)
    out = io.BytesIO()
    transport.run(["cat"], stdin=io.BytesIO(payload), stdout=out)
    assert out.getvalue() == payload


def test_tar_stream_unpacks_a_folder_on_the_far_side(transport, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "img.ome.zarr"
    (src / "0" / "0").mkdir(parents=True)
    for i in range(50):
        (src / "0" / "0" / str(i)).write_bytes(os.urandom(1000 + i))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(src, arcname=src.name)
    buf.seek(0)
    dest = _scratch(transport)
    transport.run(["tar", "-x", "-f", "-", "-C", dest], stdin=buf)
    listing = transport.run(["find", f"{dest}/img.ome.zarr", "-type", "f"]).stdout.split()
    assert len(listing) == 50
    out = io.BytesIO()
    transport.run(["cat", f"{dest}/img.ome.zarr/0/0/7"], stdout=out)
    assert out.getvalue() == (src / "0" / "0" / "7").read_bytes()


def test_put_and_get_round_trip_a_file(transport, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    local = tmp_path / "in.bin"
    local.write_bytes(os.urandom(100_000))
    dest = _scratch(transport)
    transport.put_file(local, f"{dest}/in.bin")
    back = tmp_path / "back.bin"
    transport.get_file(f"{dest}/in.bin", back)
    assert back.read_bytes() == local.read_bytes()


def test_write_text_is_private_and_readable_back(transport) -> None:  # type: ignore[no-untyped-def]
    dest = _scratch(transport)
    text = "value with 'quotes' and $(dollar)\nsecond line\n"
    transport.write_text(f"{dest}/params.json", text)
    assert transport.read_text(f"{dest}/params.json") == text
    mode = transport.run(["stat", "-c", "%a", f"{dest}/params.json"]).stdout.strip()
    assert mode == "600"
    leftovers = transport.run(["ls", "-A", dest]).stdout.split()
    assert leftovers == ["params.json"]


def test_reading_a_missing_file_raises_file_not_found(transport) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FileNotFoundError):
        transport.read_text("no-such-dir/no-such-file")


def test_relative_paths_are_relative_to_the_cluster_home(transport) -> None:  # type: ignore[no-untyped-def]
    dest = _scratch(transport)
    transport.write_text(f"{dest}/x.txt", "x")
    home = transport.run(["pwd"]).stdout.strip()
    assert transport.run(["cat", f"{home}/{dest}/x.txt"]).stdout == "x"


def test_a_command_without_a_stdin_stream_reads_an_empty_input(transport) -> None:  # type: ignore[no-untyped-def]
    # `cat` with no arguments would wait forever for input that never comes.
    assert transport.run(["cat"], timeout_s=10).stdout == ""


# Writes one byte every 0.1 s for 2.5 s: a stream longer than its timeout, never silent.
TRICKLE = """
import sys, time
for _ in range(25):
    sys.stdout.write("."); sys.stdout.flush(); time.sleep(0.1)
"""


def test_an_idle_timeout_lets_a_live_stream_run_past_the_command_timeout(transport) -> None:  # type: ignore[no-untyped-def]
    argv = ["python3", "-c", TRICKLE]
    with pytest.raises(CommandTimeout):
        transport.run(argv, timeout_s=1, stdout=io.BytesIO())
    out = io.BytesIO()
    transport.run(argv, timeout_s=1, idle_timeout_s=3, stdout=out)
    assert out.getvalue() == b"." * 25


def test_a_silent_stream_stalls_after_its_idle_timeout(transport) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StreamStalled, match=r"sleep stalled: no data moved for 0\.5 s"):
        transport.run(["sleep", "10"], idle_timeout_s=0.5, stdout=io.BytesIO())
    # The connection stays usable afterwards.
    assert transport.run(["echo", "still here"]).stdout == "still here\n"
