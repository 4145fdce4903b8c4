"""Small I/O helpers shared by every stage: JSONL, hashes, atomic output directories, manifests
(:func:`stage_manifest`)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def dumps_line(obj: dict[str, Any]) -> str:
    """One JSONL line; key order is the dict's, so equal inputs give byte-identical files."""
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")) + "\n"


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` (``.NAME.tmp-PID``) to write; it becomes ``path`` only when the block ends
    without an error, so a reader (or a resumed run) never sees half a file."""
    p = Path(path)
    if p.is_symlink():  # write through the link, as a plain open() would: replacing the link leaves its target stale
        p = p.resolve()
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    # created here, exclusively and without following links: a link planted at this predictable name (in a
    # directory others can write) is removed, never written through
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), 0o666))
    try:
        yield tmp
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)


def trim_torn_tail(path: str | Path) -> int:
    """Cut a last line that has no newline (a write killed mid-line) off ``path``; returns the whole lines left."""
    n = keep = 0
    with open(path, "rb") as f:
        for line in f:  # streamed: a resumed file may be large
            if line.endswith(b"\n"):
                n, keep = n + 1, keep + len(line)
    if keep != Path(path).stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(keep)
    return n


def usable_cpus() -> int:
    """Logical CPUs this process may run on: a container or ``taskset`` may allow fewer than the machine has."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def open_bytes(path: str | Path) -> Any:
    """The file's bytes for reading, un-gzipped as they are read when its name ends in ``.gz``; the caller closes it."""
    return gzip.open(path, "rb") if str(path).lower().endswith(".gz") else open(path, "rb")


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """``rows`` as JSON Lines, written whole or not at all; returns their number."""
    n = 0
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(dumps_line(row))
            n += 1
    return n


def write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as indented JSON, written whole or not at all."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2, sort_keys=False)
        f.write("\n")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def die_with_parent(parent: int) -> None:
    """Worker-pool initializer: on Linux the kernel kills this worker when its parent process dies, so a stage
    killed with SIGKILL (or by the OOM killer) leaves no workers blocked on a pipe nobody reads; elsewhere a no-op."""
    import ctypes
    import signal
    import sys

    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


OWNER_FILE = ".owner"  # the pid of the process writing a work directory


def claim(directory: Path, what: str) -> None:
    """Mark ``directory`` (which exists) as this process's work, in ``OWNER_FILE``; a claim by another live process is
    a one-line error naming ``what`` and the pid, a dead one's (a killed run) is taken over."""
    from .errors import NewsbiasError

    lock = directory / OWNER_FILE
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            pid = int(lock.read_text(encoding="utf-8").strip() or 0)
        except (OSError, ValueError):
            pid = 0
        if pid and pid != os.getpid() and _pid_alive(pid):
            raise NewsbiasError(f"{what} is being written by another newsbias process (pid {pid}); wait for it to "
                                f"finish or write somewhere else") from None
        lock.write_text(str(os.getpid()), encoding="utf-8")
        return
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(str(os.getpid()))


def remove_dead_leftovers(out: Path) -> list[Path]:
    """Remove ``.NAME.tmp-PID`` / ``.NAME.old-PID`` siblings of ``out`` whose process is gone (a killed run).

    An ``.old`` copy with no ``out`` beside it is a run killed between moving the earlier output aside and moving
    its own in (:func:`atomic_dir`): it is the only copy, and is put back as ``out`` instead."""
    removed = []
    for p in sorted(out.parent.glob(f".{out.name}.*-*")):
        kind, _, pid = p.name[len(out.name) + 2:].partition("-")
        if kind in ("tmp", "old") and pid.isdigit() and not _pid_alive(int(pid)):
            if kind == "old" and not out.exists() and not out.is_symlink():
                os.replace(p, out)
                continue
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def read_json(path: str | Path, strict: bool = True) -> dict[str, Any] | None:
    """A JSON object written by a stage (manifest, settings, checkpoint state).

    ``strict``: a missing, unreadable or malformed file is a one-line error naming it; otherwise None.
    """
    from .errors import NewsbiasError

    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if strict:
            raise NewsbiasError(f"{p} not found; rerun the stage that writes it") from None
        return None
    except (OSError, ValueError) as exc:
        if strict:
            raise NewsbiasError(f"{p} is not valid JSON ({str(exc)[:120]}); copy it again or rerun the stage "
                                f"that wrote it") from None
        return None
    if not isinstance(data, dict):
        if strict:
            raise NewsbiasError(f"{p} holds a JSON {type(data).__name__}, not an object; rerun the stage that wrote it")
        return None
    return data


def holds(directory: Path, path: Path) -> bool:
    """``path`` is ``directory`` or lies under it (both resolved): writing ``directory`` would touch it."""
    return path == directory or directory in path.parents


def check_output_dir(out_dir: str | Path, stage: str, marker: str, inputs: Iterable[str | Path] = ()) -> Path:
    """``out_dir`` resolved, after checking that ``stage`` may write (and replace) it.

    Allowed: a directory that does not exist yet, an empty one, or one a previous run of the
    same stage wrote (its ``marker`` file records ``"stage": stage``) holding only what that run
    wrote (the marker's ``"files"``, listed by :func:`atomic_dir`). Anything else — a file, a
    directory holding other files, a directory that contains one of ``inputs`` — is a
    :class:`~newsbias.errors.NewsbiasError` naming it, so a user's files are never deleted.
    """
    from .errors import NewsbiasError

    out = Path(out_dir).expanduser().resolve()
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise NewsbiasError(f"cannot write {stage} output under {parent}: it is a file, not a directory")
    if out.exists() and not out.is_dir():
        raise NewsbiasError(f"{stage} output {out} is an existing file; give a directory path (new or empty)")
    for inp in inputs:
        ip = Path(inp).expanduser().resolve()
        if holds(out, ip):
            raise NewsbiasError(f"the input {ip} is inside the {stage} output directory {out}, which {stage} "
                                f"replaces; write the output somewhere else")
    if out.is_dir() and any(out.iterdir()):
        manifest = read_json(out / marker, strict=False) or {}
        if manifest.get("stage") != stage:
            shown = sorted(p.name for p in out.iterdir())[:3]
            raise NewsbiasError(f"{out} is not empty ({', '.join(shown)}{', ...' if len(shown) == 3 else ''}) and was "
                                f"not written by newsbias {stage}; choose a new or empty output directory")
        listed = manifest.get("files")
        foreign = sorted({p.name for p in out.iterdir()} - set(listed)) if isinstance(listed, list) else []
        if foreign:
            raise NewsbiasError(f"{out} holds files that newsbias {stage} did not write ({', '.join(foreign[:3])}"
                                f"{', ...' if len(foreign) > 3 else ''}), which replacing it would delete; move them "
                                f"out or choose another output directory")
    return out


@contextlib.contextmanager
def staged_files(out: Path, last: Iterable[str] = ()) -> Iterator[Path]:
    """A hidden directory inside ``out`` for a stage's files, moved into ``out`` (each replaced atomically, the
    ``last`` ones after the rest) only when the block succeeds: a failed or killed run leaves the earlier files as
    they were, never half of a new set beside half of an old one. Files of ``out`` not written in the block stay."""
    for old in out.glob(".staged-*"):  # a killed run's
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    tmp = out / f".staged-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        names = sorted(p.name for p in tmp.iterdir())
        last = [n for n in last if n in names]
        for name in [n for n in names if n not in last] + last:
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def writable_dir(out_dir: str | Path, stage: str) -> Path:
    """``out_dir``, created if needed, for a stage that writes its files beside any others there; a one-line
    error when it or a directory above it is a file."""
    from .errors import NewsbiasError

    out = Path(out_dir)
    for p in (out, *out.parents):
        if p.exists() and not p.is_dir():
            raise NewsbiasError(f"cannot write {stage} output to {out}: {p} is a file; give a directory path")
    out.mkdir(parents=True, exist_ok=True)
    return out


def honour_umask(directory: str | Path, recursive: bool = False, pattern: str = "*.safetensors") -> None:
    """Give the files matching ``pattern`` in ``directory`` (and below, if ``recursive``) the permissions the
    process's umask asks for.

    safetensors writes its files 0600 whatever the umask, which leaves a trained model unreadable to a
    serving account, a container running as another user, or a teammate on a shared machine.
    """
    mask = os.umask(0)
    os.umask(mask)
    for path in (Path(directory).rglob if recursive else Path(directory).glob)(pattern):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o666 & ~mask)


@contextlib.contextmanager
def atomic_dir(out_dir: str | Path, marker: str | None = None) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``out_dir`` only if the block succeeds.

    A failed or killed run leaves the previous output untouched and no partial files behind
    (the temporary directory is a hidden sibling, removed on failure; one left by a killed
    process is removed by the next run). Check ``out_dir`` with :func:`check_output_dir` first:
    this replaces whatever is there. ``marker``: the stage's manifest in the block's output, to
    which the names of everything the block wrote are added (``"files"``), so that a later run
    can tell them from files a user put beside them.
    """
    from .errors import NewsbiasError

    out = Path(out_dir).expanduser().resolve()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_leftovers(out)
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as exc:
        raise NewsbiasError(f"cannot create the output directory {out}: {exc.strerror or exc}") from None
    try:
        yield tmp
        honour_umask(tmp, recursive=True)
        if marker and (tmp / marker).is_file():
            manifest = read_json(tmp / marker)
            write_json(tmp / marker, {**manifest, "files": sorted(p.name for p in tmp.iterdir())})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def package_versions(names: Iterable[str] = ("newsbias", "torch", "transformers", "peft", "accelerate", "pandas",
                                             "scikit-learn", "ftfy", "numpy", "pydantic", "onnxruntime"),
                     ) -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _plain(config: Any) -> Any:
    """A pydantic config (or a dict of them) as JSON-ready data."""
    if isinstance(config, dict):
        return {k: _plain(v) for k, v in config.items()}
    return config.model_dump(mode="json") if hasattr(config, "model_dump") else config


_INVOKED: dict[str, Any] = {}


def record_command_line(command: str, argv: list[str]) -> None:
    """Remember the command this process runs (``newsbias COMMAND ...``) for the manifests it writes."""
    _INVOKED.update(command=command, line=shlex.join(["newsbias", *argv]))


def command_line(stage: str) -> str:
    """The command that ran ``stage``: the whole command line when the user typed this stage, else its name."""
    return _INVOKED["line"] if _INVOKED.get("command") == stage else f"newsbias {stage}"


def stage_manifest(stage: str, config: Any, started: float, **extra: Any) -> dict[str, Any]:
    """The record each stage keeps of a run: its config, package versions, git commit, start and duration.

    ``config`` is the stage's pydantic section (or a dict of sections), ``started`` the run's
    ``time.time()`` at its start; ``extra`` are the stage's own keys (inputs, outputs, counts ...).
    ``cwd`` is where it ran: the paths in its config are as the user typed them, often relative to it.
    """
    return {"stage": stage, "command": command_line(stage), "config": _plain(config), "versions": package_versions(),
            "git_commit": git_commit(), "cwd": os.getcwd(),
            "started": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.time() - started, 3), **extra}


def git_commit() -> str | None:
    """newsbias's git commit (with '-dirty' when the tree has changes) when it runs from its own source checkout; None
    for an installed package (even one inside another project's repository, whose commit is not newsbias's)."""
    cwd = Path(__file__).resolve().parents[2]  # src/newsbias/io.py -> the repository root
    if not (cwd / "src" / "newsbias" / "io.py").is_file():
        return None
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True, text=True,
                             timeout=10)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != cwd:
            return None
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
