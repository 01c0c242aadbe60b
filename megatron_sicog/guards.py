"""What every tool checks before it works: its outputs, its paths, its temp files.

* `UsageError`: a mistake of the user (a flag, a file); `cli()` prints it as
  one line ``<tool>: error: <message>`` and returns exit status 2, without a
  traceback (``--debug`` or ``SICOG_DEBUG=1`` shows it).
* `check_outputs(inputs, outputs, overwrite=..., resume=...)`: no output may
  be an input, another output or a directory, and an existing output is
  replaced only with ``--overwrite`` (or continued with ``--resume``).
* `confined_path(root, rel, allow_outside)`: a record's image path, resolved
  (symlinks included) and refused when it leaves ``--image-root`` unless
  ``--allow-outside-image-root`` says so.
* `make_temp(path, suffix)`: a temp file beside `path` whose name carries this
  host and pid, after removing (and saying so) those of dead processes left by
  killed runs.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence, Union

log = logging.getLogger("sicog")
PathLike = Union[str, os.PathLike]


class UsageError(ValueError):
    """A user mistake, reported in one line naming the flag or the file (exit status 2)."""


def debug_requested(argv: Optional[Sequence[str]] = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get("SICOG_DEBUG", "") not in ("", "0")


def add_debug_flag(parser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")


def cli(prog: str, main: Callable[[], int], argv: Optional[Sequence[str]] = None) -> int:
    """Run a tool's main(): a UsageError becomes one line on stderr and exit status 2."""
    try:
        return main()
    except UsageError as e:
        if debug_requested(argv):
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2


# -- outputs -----------------------------------------------------------------------
def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _nonempty(p: Path) -> bool:
    return p.is_file() and p.stat().st_size > 0


def check_outputs(inputs: Mapping[str, Iterable[PathLike]], outputs: Mapping[str, Optional[PathLike]], *,
                  overwrite: bool = False, resume: Optional[bool] = None) -> None:
    """Refuse outputs that would destroy an input or an existing file, or that are directories.

    `inputs` / `outputs` map a flag name to its path(s); `resume` is None when
    the tool has no ``--resume``, else its value (an existing output is then
    continued, not refused).
    """
    outs = [(flag, Path(p)) for flag, p in outputs.items() if p is not None]
    ins = [(flag, Path(p)) for flag, ps in inputs.items() for p in ps]
    for i, (oflag, out) in enumerate(outs):
        if out.is_dir() or str(outputs[oflag]).endswith(os.sep):
            raise UsageError(f"{oflag} {out} is a directory; give a file path")
        for iflag, inp in ins:
            if _same_file(out, inp):
                raise UsageError(f"{oflag} {out} is also {iflag}: writing it would destroy the input; "
                                 "choose another output path")
        for oflag2, out2 in outs[:i]:
            if _same_file(out, out2):
                raise UsageError(f"{oflag} and {oflag2} are the same file {out}")
    if overwrite or resume:
        return
    for oflag, out in outs:
        if _nonempty(out):
            hint = "--overwrite to replace it" + (", or --resume to continue it" if resume is not None else "")
            raise UsageError(f"{oflag} {out} already exists; pass {hint}")


def add_overwrite_flag(parser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


# -- paths under a root ----------------------------------------------------------------
def confined_path(root: Optional[PathLike], rel: str, allow_outside: bool = False) -> str:
    """`rel` under `root`, resolved; ValueError when it leaves the root.

    Without a root (no ``--image-root``) the path is used as given.
    """
    if not isinstance(rel, str) or not rel:
        raise ValueError(f"'image' entries must be non-empty strings, got {rel!r}")
    if root is None or allow_outside:
        return os.path.join(root or "", rel)
    if os.path.isabs(rel):
        raise ValueError(f"image path {rel!r} is absolute; it must be relative to --image-root "
                         "(or pass --allow-outside-image-root)")
    base = os.path.realpath(root)
    full = os.path.realpath(os.path.join(base, rel))
    if full != base and not full.startswith(base.rstrip(os.sep) + os.sep):
        raise ValueError(f"image path {rel!r} leads outside --image-root {root} (to {full}); "
                         "pass --allow-outside-image-root to allow it")
    return full


def add_image_root_flags(parser, help_root: str = "folder the records' 'image' paths are relative to") -> None:
    parser.add_argument("--image-root", default=None, help=help_root)
    parser.add_argument("--allow-outside-image-root", action="store_true",
                        help="follow image paths that are absolute or lead outside --image-root (.., symlinks)")


# -- temp files of killed runs -------------------------------------------------------
_HOST = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path: PathLike) -> list[Path]:
    """Remove temp files of `path` (``.<name>.<host>.<pid>.*``) whose process on this host is gone."""
    path = Path(path)
    d = path.parent if str(path.parent) else Path(".")
    if not d.is_dir():
        return []
    pat = re.compile(rf"^\.{re.escape(path.name)}\.([A-Za-z0-9_-]+)\.(\d+)\.")
    removed = []
    for p in d.iterdir():
        m = pat.match(p.name)
        if m and m.group(1) == _HOST and int(m.group(2)) != os.getpid() and not _pid_alive(int(m.group(2))):
            size = p.stat().st_size if p.is_file() else 0
            try:
                p.unlink()
            except OSError:
                continue
            removed.append(p)
            log.warning(f"removed {p} ({size / 1e6:.1f} MB), a temporary file of a killed run "
                        f"(pid {m.group(2)})")
    return removed


def make_temp(path: PathLike, suffix: str = ".tmp") -> Path:
    """Create an empty temp file beside `path` (mode from the umask), after removing stale ones."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # like any file the tools write, not mkstemp's 0600
    return Path(tmp)


def fsync_dir(d: PathLike) -> None:
    """Make a rename or a new entry in `d` durable."""
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
