"""Starting a child without forking the daemon: vfork through subprocess, then the pipes and
the exit watched on the event loop.

uvloop starts a subprocess with libuv's fork(): the kernel copies the daemon's page tables
while the whole event loop waits, 8 ms per child at 100 MB of RSS and 3 ms at 5 MB (measured
here), at every run start. CPython's subprocess uses vfork(), which copies nothing (0.4 ms
at 100 MB). The pipes become asyncio transports of the running loop, and the exit is seen
through a pidfd where the kernel has them (Linux) or by a thread blocked in waitpid (macOS),
so `spawn` returns what anyio.open_process would, without the fork.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from collections.abc import Mapping, Sequence
from typing import IO

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream, Process

from .pipes import PipeReader, open_reader


class _Send(ByteSendStream):
    """A child's stdin as an anyio byte stream."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._closed = False

    async def send(self, item: bytes) -> None:
        """Write and wait until the pipe took it; a gone child is BrokenResourceError."""
        try:
            self._writer.write(item)
            await self._writer.drain()
        except (ConnectionResetError, BrokenPipeError, RuntimeError) as exc:
            # asyncio raises from drain(), uvloop from a later write(): same meaning.
            if self._closed:
                raise anyio.ClosedResourceError from exc
            if self._writer.is_closing():
                raise anyio.BrokenResourceError from exc
            raise

    async def aclose(self) -> None:
        """Close the pipe (the child reads EOF)."""
        self._closed = True
        self._writer.close()
        await anyio.lowlevel.checkpoint()


class SpawnedProcess(Process):
    """A child started by `spawn`: anyio's Process interface over a subprocess.Popen."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        stdin: _Send | None,
        stdout: PipeReader | None,
        stderr: PipeReader | None,
    ) -> None:
        self._popen = popen
        self._stdin, self._stdout, self._stderr = stdin, stdout, stderr
        self._exited = asyncio.Event()
        self._watch_exit(asyncio.get_running_loop())

    def _watch_exit(self, loop: asyncio.AbstractEventLoop) -> None:
        popen = self._popen
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            try:
                fd: int = pidfd_open(popen.pid)
            except OSError:  # an old kernel, or no pidfd in this container
                fd = -1
            if fd >= 0:

                def exited() -> None:
                    if popen.poll() is not None:  # reaped here, by pid: nobody else's child
                        loop.remove_reader(fd)
                        os.close(fd)
                        self._exited.set()

                loop.add_reader(fd, exited)
                return

        def wait() -> None:
            popen.wait()
            loop.call_soon_threadsafe(self._exited.set)

        threading.Thread(target=wait, name=f"wait-{popen.pid}", daemon=True).start()

    async def aclose(self) -> None:
        """Close the pipes, then wait for the exit (killing the child if cancelled)."""
        with anyio.CancelScope(shield=True) as scope:
            for stream in (self._stdin, self._stdout, self._stderr):
                if stream is not None:
                    await stream.aclose()
            scope.shield = False
            try:
                await self.wait()
            except BaseException:
                scope.shield = True
                self.kill()
                await self.wait()
                raise

    async def wait(self) -> int:
        """The exit code, once the child has exited and been reaped."""
        await self._exited.wait()
        code = self._popen.returncode
        assert code is not None
        return code

    def terminate(self) -> None:
        """SIGTERM to the child (not its group), unless it was reaped."""
        self._popen.terminate()

    def kill(self) -> None:
        """SIGKILL to the child (not its group), unless it was reaped."""
        self._popen.kill()

    def send_signal(self, signal: int) -> None:
        """A signal to the child, unless it was reaped."""
        self._popen.send_signal(signal)

    @property
    def pid(self) -> int:
        """The child's pid (its process group's id too, started in a session of its own)."""
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once reaped, else None."""
        return self._popen.returncode

    @property
    def stdin(self) -> ByteSendStream | None:
        """The child's stdin, if it is a pipe."""
        return self._stdin

    @property
    def stdout(self) -> ByteReceiveStream | None:
        """The child's stdout, if it is a pipe."""
        return self._stdout

    @property
    def stderr(self) -> ByteReceiveStream | None:
        """The child's stderr, if it is a pipe."""
        return self._stderr


def _pipe_file(fd: int, mode: str, loop: asyncio.AbstractEventLoop) -> IO[bytes]:
    """fd as the file object a pipe transport takes, closed by exactly one owner.

    uvloop's transport has libuv close the descriptor, then closes the file object too. A
    worker thread (psutil reading /proc, say) may open a file between the two and get the
    same number: the second close then closes that file. So under uvloop the file object
    must not close its descriptor; asyncio's own transports close only the file object.
    """
    owns = not type(loop).__module__.startswith("uvloop")
    return open(fd, mode, buffering=0, closefd=owns)


async def _writer(loop: asyncio.AbstractEventLoop, fd: int) -> _Send:
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=loop), loop=loop),
        _pipe_file(fd, "wb", loop),
    )
    return _Send(asyncio.StreamWriter(transport, protocol, None, loop))


async def spawn(
    argv: Sequence[str],
    *,
    stdin: bool,
    cwd: str | None,
    env: Mapping[str, str],
    start_new_session: bool,
) -> SpawnedProcess:
    """Start argv (vfork + exec) with stdout and stderr piped, and stdin piped or /dev/null;
    a failure to exec (FileNotFoundError, PermissionError) is raised here."""
    loop = asyncio.get_running_loop()
    # Our own pipes, not Popen's: each end then has exactly one owner (see _pipe_file).
    ours: list[int] = []
    theirs: list[int] = []
    try:
        for _ in range(3 if stdin else 2):
            read, write = os.pipe()
            ours.append(read)
            theirs.append(write)
        if stdin:  # the child reads the first pipe: swap its ends
            ours[0], theirs[0] = theirs[0], ours[0]
        child_in = theirs[0] if stdin else subprocess.DEVNULL
        child_out, child_err = theirs[-2], theirs[-1]
        # On the loop on purpose: vfork + exec takes under half a millisecond, less than a
        # hop to a worker thread and back would.
        popen = subprocess.Popen(  # noqa: ASYNC220
            list(argv),
            stdin=child_in,
            stdout=child_out,
            stderr=child_err,
            cwd=cwd,
            env=dict(env),
            start_new_session=start_new_session,
        )
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        for fd in theirs:
            os.close(fd)  # the child has its copies
    try:
        send = await _writer(loop, ours[0]) if stdin else None
        out = await open_reader(loop, _pipe_file(ours[-2], "rb", loop))
        err = await open_reader(loop, _pipe_file(ours[-1], "rb", loop))
    except BaseException:
        popen.kill()
        popen.wait()
        raise
    return SpawnedProcess(popen, send, out, err)


__all__ = ["SpawnedProcess", "spawn"]
