"""The sandbox the agent tools run in: every path a model names is resolved and confined to one root.

`Sandbox.resolve` is the one check every tool goes through. It refuses a path that leaves the root (by
`..`, an absolute path, a symlink pointing out), names a system tree (`/proc`, `/sys`, `/dev`), a device,
FIFO or socket, or a regular file with more than one hard link (another name for it may lie outside the
root, and proving otherwise means searching the filesystem). Writes also need a path under a writable
path, not under a read-only one, with no symlink anywhere in it.

A check and the open that follows are two system calls, and a path can change between them. So files are
opened by walking from the root one component at a time, each opened relative to its parent's descriptor
with O_NOFOLLOW: the resolved path has no symlinks, so a symlink met on the walk was swapped in after the
check, and the open fails instead of following it. The open descriptor is checked again (fstat) before a
byte is read or written.
"""

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from mistralcli.errors import MistralError

SYSTEM_TREES = (Path("/proc"), Path("/sys"), Path("/dev"))
MAX_PATH_CHARS = 4096
MAX_NAME_BYTES = 255
BINARY_SNIFF_BYTES = 8192


class SandboxError(MistralError):
    """A path or operation the sandbox refuses; the message names the path (relative to the root) and why."""


@dataclass
class SandboxConfig:
    """Where agent tools may look and write, and how much they may read and print.

    `writable` and `read_only` are paths under `root` (relative to it or absolute); nothing is writable
    unless listed, and a read-only path stays read-only inside a writable one. `allowed_extensions`
    (like ".py", ".txt") limits the files text tools read and write; None allows any.
    """

    root: Path
    writable: list[Path] = field(default_factory=list)
    read_only: list[Path] = field(default_factory=list)
    max_file_bytes: int = 1 << 20
    allowed_extensions: list[str] | None = None
    max_output_lines: int = 500
    max_output_bytes: int = 64 << 10
    allow_shell: bool = False
    shell_timeout_s: float = 30.0

    def __post_init__(self):
        root = Path(os.path.realpath(self.root))
        if not root.is_dir():
            raise MistralError(f"sandbox root {self.root} is not a directory")
        self.root = root
        self.writable = [self._inside_root(p, "writable") for p in self.writable]
        self.read_only = [self._inside_root(p, "read_only") for p in self.read_only]
        if self.allowed_extensions is not None:
            self.allowed_extensions = [e if e.startswith(".") else f".{e}" for e in self.allowed_extensions]
        for name in ("max_file_bytes", "max_output_lines", "max_output_bytes", "shell_timeout_s"):
            if getattr(self, name) <= 0:
                raise MistralError(f"sandbox {name} must be positive, not {getattr(self, name)}")

    def _inside_root(self, path: Path, what: str) -> Path:
        real = Path(os.path.realpath(self.root / path))
        if not real.is_relative_to(self.root):
            raise MistralError(f"sandbox {what} path {path} is outside the root {self.root}")
        return real


def _kind(mode: int) -> str:
    """What a non-regular, non-directory file is, for a refusal message."""
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "not a regular file or directory"


@dataclass(frozen=True)
class Entry:
    """A directory entry and its lstat, read while the directory was open."""

    name: str
    info: os.stat_result

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.info.st_mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.info.st_mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.info.st_mode)


class Sandbox:
    """Paths confined to `config.root`, and the only way agent tools open, list and write files."""

    def __init__(self, config: SandboxConfig):
        self.config = config
        self.root = config.root

    def rel(self, real: Path) -> str:
        """A resolved path as the model sees it: relative to the root ("." for the root itself)."""
        return str(real.relative_to(self.root)) if real != self.root else "."

    def resolve(self, path: str | os.PathLike, *, write: bool = False) -> Path:
        """The real path `path` names inside the root (it need not exist); SandboxError if refused."""
        raw = os.fspath(path)
        shown = raw if len(raw) <= 200 else raw[:200] + "..."
        if "\0" in raw:
            raise SandboxError(f"{shown!r}: a path cannot contain a NUL byte")
        if len(raw) > MAX_PATH_CHARS or any(len(part.encode()) > MAX_NAME_BYTES for part in raw.split("/")):
            raise SandboxError(f"{shown!r}: the path is too long")
        if raw.startswith("~"):
            raise SandboxError(f"{shown}: '~' paths are not expanded; name a path under the sandbox root")
        joined = self.root / (raw or ".")
        lexical = Path(os.path.normpath(joined))
        if not lexical.is_relative_to(self.root):
            how = "is outside" if os.path.isabs(raw) else "climbs out of"
            raise SandboxError(f"{shown}: the path {how} the sandbox root")
        real = Path(os.path.realpath(joined))
        if not real.is_relative_to(self.root):
            raise SandboxError(f"{shown}: a symlink leads out of the sandbox root")
        if any(real.is_relative_to(tree) for tree in SYSTEM_TREES):
            raise SandboxError(f"{shown}: system paths ({real}) are refused")
        where = self.rel(real)
        try:
            info = os.lstat(real)
        except FileNotFoundError:
            info = None
        if info is not None:
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                raise SandboxError(f"{where}: refused: {_kind(info.st_mode)}")
            if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                raise SandboxError(f"{where}: refused: a file with {info.st_nlink} hard links")
        if write:
            self._check_writable(lexical, real, where)
        return real

    def _check_writable(self, lexical: Path, real: Path, where: str) -> None:
        if lexical != real:
            raise SandboxError(f"{where}: refused: writes do not go through symlinks")
        if any(real.is_relative_to(p) for p in self.config.read_only):
            raise SandboxError(f"{where}: refused: the path is read-only")
        if not any(real.is_relative_to(p) for p in self.config.writable):
            writable = ", ".join(self.rel(p) for p in self.config.writable) or "none"
            raise SandboxError(f"{where}: refused: not under a writable path (writable: {writable})")

    def _check_extension(self, real: Path) -> None:
        allowed = self.config.allowed_extensions
        if allowed is not None and real.suffix not in allowed:
            raise SandboxError(f"{self.rel(real)}: refused: extension {real.suffix or '(none)'} is not allowed")

    def _open_dir(self, real: Path) -> int:
        """A descriptor of the directory `real` (resolved, inside the root), walked with O_NOFOLLOW."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in real.relative_to(self.root).parts:
                next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = next_fd
        except OSError as exc:
            os.close(fd)
            raise self._open_error(real, exc) from None
        return fd

    def _open_error(self, real: Path, exc: OSError) -> Exception:
        # A symlink met on the walk (ELOOP, or ENOTDIR for one in a directory's place) was put there after
        # the check: a race, refused rather than followed.
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return SandboxError(f"{self.rel(real)}: refused: the path changed to a symlink while opening")
        return OSError(exc.errno, f"{self.rel(real)}: {exc.strerror}")

    def _open_file(self, real: Path, flags: int, mode: int = 0o644) -> int:
        """A descriptor of the regular file `real`, opened without following symlinks and checked again."""
        parent = self._open_dir(real.parent)
        try:
            fd = os.open(
                real.name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, mode, dir_fd=parent
            )
        except OSError as exc:
            raise self._open_error(real, exc) from None
        finally:
            os.close(parent)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
            os.close(fd)
            why = _kind(info.st_mode) if not stat.S_ISREG(info.st_mode) else f"{info.st_nlink} hard links"
            raise SandboxError(f"{self.rel(real)}: refused: changed while opening ({why})")
        return fd

    def read_bytes(self, path: str) -> bytes:
        """A file's bytes, within the size limit and allowed extensions."""
        return self._read(self.resolve(path))

    def read_text(self, path: str) -> str:
        """A text file's contents; SandboxError for a binary file (a NUL byte early on, or not UTF-8)."""
        real = self.resolve(path)
        data = self._read(real)
        if b"\0" in data[:BINARY_SNIFF_BYTES]:
            raise SandboxError(f"{self.rel(real)}: refused: a binary file")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise SandboxError(f"{self.rel(real)}: refused: a binary file (not UTF-8)") from None

    def _read(self, real: Path) -> bytes:
        if real.is_dir():
            raise SandboxError(f"{self.rel(real)}: is a directory")
        self._check_extension(real)
        limit = self.config.max_file_bytes
        with os.fdopen(self._open_file(real, os.O_RDONLY), "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size > limit:
                raise SandboxError(f"{self.rel(real)}: refused: {size} bytes is over the limit of {limit}")
            data = file.read(limit + 1)  # a file can grow after fstat
        if len(data) > limit:
            raise SandboxError(f"{self.rel(real)}: refused: over the limit of {limit} bytes")
        return data

    def write_text(self, path: str, text: str) -> Path:
        """Write (create or replace) a text file under a writable path; its parent must exist."""
        real = self.resolve(path, write=True)
        data = text.encode("utf-8")
        if len(data) > self.config.max_file_bytes:
            raise SandboxError(
                f"{self.rel(real)}: refused: {len(data)} bytes is over the limit of {self.config.max_file_bytes}"
            )
        self._check_extension(real)
        # No O_TRUNC: truncating happens only after fstat shows the file is ours (one link, a regular file).
        fd = self._open_file(real, os.O_WRONLY | os.O_CREAT)
        with os.fdopen(fd, "wb") as file:
            file.truncate(0)
            file.write(data)
        return real

    def scan(self, real: Path) -> list[Entry]:
        """The entries of the directory `real` (resolved), sorted by name; symlinks are listed, not followed."""
        fd = self._open_dir(real)
        try:
            names = sorted(os.listdir(fd))
            return [Entry(name, os.stat(name, dir_fd=fd, follow_symlinks=False)) for name in names]
        finally:
            os.close(fd)

    def bound(self, text: str) -> str:
        """`text` cut to the output limits, ending with a marker that counts the lines not shown in full."""
        lines = text.splitlines(keepends=True)
        budget = self.config.max_output_bytes
        shown = 0
        for line in lines[: self.config.max_output_lines]:
            size = len(line.encode())
            if size > budget:
                break
            shown += 1
            budget -= size
        if shown == len(lines):
            return text
        body = "".join(lines[:shown])
        if shown < self.config.max_output_lines and budget > 0:
            # Cut by bytes inside a line: show its start rather than nothing (one huge line, say).
            body += lines[shown].encode()[:budget].decode("utf-8", errors="ignore")
        if body and not body.endswith("\n"):
            body += "\n"
        return f"{body}[... cut: {len(lines) - shown} more lines]"
