"""Where tokens and client registrations are kept between calls (and between runs)."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import anyio

logger = logging.getLogger("mcp_resilient.auth")

_T = TypeVar("_T")

__all__ = ["FileTokenStorage", "InMemoryTokenStorage", "TokenStorage", "default_token_path"]


@runtime_checkable
class TokenStorage(Protocol):
    """A small async key-value store of JSON-able dicts.

    Keys are ``token:<resource>`` (the tokens for one protected resource) and
    ``client:<issuer>`` (the client registration at one authorization server).
    """

    async def load(self, key: str) -> dict[str, Any] | None: ...

    async def save(self, key: str, value: dict[str, Any]) -> None: ...

    async def delete(self, key: str) -> None: ...


class InMemoryTokenStorage:
    """Keeps everything in this process only (the default)."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, Any]] = {}

    async def load(self, key: str) -> dict[str, Any] | None:
        item = self._items.get(key)
        return dict(item) if item is not None else None

    async def save(self, key: str, value: dict[str, Any]) -> None:
        self._items[key] = dict(value)

    async def delete(self, key: str) -> None:
        self._items.pop(key, None)


def default_token_path() -> Path:
    """The CLI's token file: under ``$XDG_CONFIG_HOME`` (or the platform's config dir)."""
    if sys.platform == "win32":  # pragma: no cover - not tested here
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":  # pragma: no cover - not tested here
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "mcp-resilient" / "tokens.json"


class FileTokenStorage:
    """One JSON file, readable by its owner only (0600, directory 0700).

    Writes go to a temporary file that replaces the old one, so a crash never leaves a
    half-written file. Tokens are secrets: the file is never created with wider permissions.
    Every read-modify-write holds an inter-process lock (``fcntl.flock`` on a ``.lock`` file
    next to it, on POSIX), so processes sharing the file never lose each other's entries.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_token_path()
        self._lock = anyio.Lock()

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
        except ValueError:
            logger.warning("token file %s is not valid JSON; starting afresh", self.path)
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".tokens-", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        os.chmod(self.path, 0o600)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive across processes (POSIX ``flock``); within this one, ``_lock`` serializes."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: only the in-process lock
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _locked_call(self, operation: Callable[[], _T]) -> _T:
        with self._locked():
            return operation()

    async def _run(self, operation: Callable[[], _T]) -> _T:
        # The file lock may wait for another process: in a thread, not in the event loop.
        async with self._lock:
            return await anyio.to_thread.run_sync(self._locked_call, operation)

    async def load(self, key: str) -> dict[str, Any] | None:
        item = await self._run(lambda: self._read().get(key))
        return dict(item) if isinstance(item, dict) else None

    async def save(self, key: str, value: dict[str, Any]) -> None:
        def update() -> None:
            data = self._read()
            data[key] = dict(value)
            self._write(data)

        await self._run(update)

    async def delete(self, key: str) -> None:
        def update() -> None:
            data = self._read()
            if data.pop(key, None) is not None:
                self._write(data)

        await self._run(update)
