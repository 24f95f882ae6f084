"""A child's pipe read on the loop (agents/pipes.py): pushed reads, pulled reads with a bound
on what the daemon holds, and errors and closes that reach the reader."""

from __future__ import annotations

import os
import sys

import anyio
import pytest

from od_runs.agents.lines import pump
from od_runs.agents.pipes import HIGH_WATER
from od_runs.agents.spawn import SpawnedProcess, spawn

pytestmark = pytest.mark.anyio
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, bool]]:
    """uvloop, as the daemon runs."""
    return "asyncio", {"use_uvloop": True}


async def child(code: str) -> SpawnedProcess:
    """A real child in a session of its own, its stdout and stderr piped."""
    return await spawn(
        [sys.executable, "-c", code], stdin=False, cwd=None, env=ENV, start_new_session=True
    )


async def test_pushed_lines_arrive_whole_in_order_with_what_was_read_before() -> None:
    """Lines printed before the reader attached (held by the pipe) and after it come out
    once each, in order, through the push path lines.pump takes for a child's own pipe."""
    process = await child(
        "import sys, time\n"
        "for i in range(3000):\n"
        "    sys.stdout.write('line %d\\n' % i)\n"
        "    if i % 500 == 0: sys.stdout.flush(); time.sleep(0.01)\n"
    )
    await anyio.sleep(0.05)  # the first lines are held before anyone reads
    got: list[str] = []
    assert process.stdout is not None
    with anyio.fail_after(20):
        await pump(process.stdout, lambda lines: got.extend(text for text, _ in lines))
        assert await process.wait() == 0
    assert got == [f"line {i}" for i in range(3000)]
    await process.aclose()


async def test_an_error_in_the_push_callback_is_raised_to_the_reader() -> None:
    """A sink that fails must fail its run, as it did when a task read the pipe: the error
    comes out of pump, not lost in the loop's exception handler."""
    process = await child("print('one'); print('two')")

    def sink(lines: list[tuple[str, bool]]) -> None:
        raise ValueError("sink broke")

    assert process.stdout is not None
    with anyio.fail_after(10), pytest.raises(ValueError, match="sink broke"):
        await pump(process.stdout, sink)
    await process.aclose()


async def test_a_reader_that_does_not_read_holds_a_bounded_amount() -> None:
    """receive() readers (the JSON-RPC adapters) get back-pressure: a child printing 4 MB
    to a reader that is not reading blocks on its pipe instead of the daemon holding 4 MB,
    and every byte arrives once reading resumes."""
    total = 4 * 1024 * 1024
    process = await child(f"import sys; sys.stdout.buffer.write(b'x' * {total})")
    stdout = process.stdout
    assert stdout is not None
    protocol = stdout._protocol  # type: ignore[attr-defined]
    with anyio.fail_after(10):
        while not protocol.paused:  # noqa: ASYNC110 (a flag of the protocol: nothing to await)
            await anyio.sleep(0.01)
    assert protocol.held <= HIGH_WATER + 256 * 1024  # one more read past the mark, at most
    received = 0
    with anyio.fail_after(20):
        while True:
            try:
                received += len(await stdout.receive(65536))
            except anyio.EndOfStream:
                break
        assert await process.wait() == 0
    assert received == total
    await process.aclose()


async def test_closing_the_pipe_ends_a_pushed_read() -> None:
    """Closing a pipe while pump is waiting on it ends the pump (a run whose grandchildren
    hold the pipe open is drained, then closed)."""
    process = await child("import time; print('up', flush=True); time.sleep(30)")
    got: list[str] = []
    first = anyio.Event()
    assert process.stdout is not None
    stdout = process.stdout

    def sink(lines: list[tuple[str, bool]]) -> None:
        got.extend(text for text, _ in lines)
        first.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(pump, stdout, sink)
        with anyio.fail_after(10):
            await first.wait()
            await stdout.aclose()
    assert got == ["up"]
    with pytest.raises(anyio.ClosedResourceError):
        await stdout.receive()
    process.kill()
    await process.aclose()
