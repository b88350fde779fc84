"""Commands the agents run: output, failures, deadlines and cancellation, with real processes."""

from __future__ import annotations

import asyncio
import os

import pytest

from tinystack.common.process import CommandFailed, pid_alive, run_command, start_child


class Mine(Exception):
    pass


def test_stdout_of_a_command_that_reads_its_stdin():
    out = asyncio.run(run_command(["sh", "-c", "tr a-z A-Z"], timeout=10, stdin=b"hello"))
    assert out == "HELLO"


def test_a_failure_names_the_command_its_status_and_the_end_of_its_stderr():
    script = "echo noise; printf 'x%.0s' $(seq 2000) >&2; echo ' the reason' >&2; exit 3"
    with pytest.raises(Mine) as caught:
        asyncio.run(run_command(["sh", "-c", script, "ignored"], timeout=10, error=Mine))
    message = str(caught.value)
    assert message.startswith(f"sh -c {script} ignored exited 3: ")
    assert message.endswith("the reason")
    assert len(message) < 800 + 200  # the end of stderr only


def test_a_command_that_does_not_exist():
    with pytest.raises(CommandFailed, match="no-such-tool-here: No such file"):
        asyncio.run(run_command(["no-such-tool-here"], timeout=10))


def test_a_command_past_its_deadline_is_killed(tmp_path):
    pid_file = tmp_path / "pid"

    async def main():
        await run_command(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"], timeout=0.5)

    with pytest.raises(CommandFailed, match=r"took longer than 0.5 s"):
        asyncio.run(main())
    assert not pid_alive(int(pid_file.read_text()))


def test_a_cancelled_caller_leaves_no_child(tmp_path):
    pid_file = tmp_path / "pid"

    async def main():
        task = asyncio.create_task(
            run_command(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"], timeout=60))
        while not pid_file.exists() or not pid_file.read_text().strip():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert not pid_alive(int(pid_file.read_text()))


def test_a_child_runs_in_its_own_session_and_logs_to_its_file(tmp_path):
    log_path = tmp_path / "child.log"

    async def main():
        child = await start_child(["sh", "-c", "echo out; echo err >&2; sleep 30"],
                                  log_path=log_path, cwd=tmp_path)
        try:
            assert os.getsid(child.pid) == child.pid
            assert os.getsid(child.pid) != os.getsid(0)
            for _ in range(500):
                if log_path.read_text().split() == ["out", "err"]:
                    break
                await asyncio.sleep(0.01)
            assert sorted(log_path.read_text().split()) == ["err", "out"]
        finally:
            child.kill()
            await child.wait()

    asyncio.run(main())


def test_a_child_that_cannot_start_raises_the_callers_error(tmp_path):
    with pytest.raises(Mine, match="no-such-tool-here"):
        asyncio.run(start_child(["no-such-tool-here"], log_path=tmp_path / "log", error=Mine))
