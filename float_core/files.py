"""Files written whole or not at all: a temporary file beside the target, renamed into place.

Outputs (videos, checkpoints) are written under a hidden temporary name in the target's folder
and renamed when complete, so a crash never leaves a half-written file under the real name.
The finished file must have the permissions of any new file (0666 minus the process umask):
:func:`tempfile.mkstemp` creates its file with mode 0600 (private, as a temporary file should
be), a rename keeps the mode, and the finished video would be unreadable to the user's group
and to others (a web server, the shared output folder of a batch). :class:`AtomicFile`
therefore creates its temporary file with ``os.open(..., O_CREAT | O_EXCL, 0o666)``, so the
kernel applies the umask (and a folder's default ACL) as for any new file, ``O_EXCL`` keeping
mkstemp's guarantee that the name is new; and it sets that mode again before the rename,
because some writers replace the file they are given with their own private temporary
(safetensors' ``save_file`` does).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from types import TracebackType

__all__ = ["AtomicFile", "PARTIAL_SUFFIX"]

#: The suffix of a video being written (``.<stem>.<random>.partial.mp4`` beside its output):
#: a killed run leaves them, and a batch run that makes that output again removes them.
PARTIAL_SUFFIX = ".partial.mp4"

#: Attempts at a fresh random name before giving up (8 random hex digits rarely collide).
_ATTEMPTS = 100


class AtomicFile:
    """A new, empty temporary file beside ``target``: write :attr:`path`, then :meth:`commit`
    moves it onto ``target`` with the usual permissions; :meth:`discard` deletes it.

    As a context manager it commits when the block ends normally and discards on an exception::

        with AtomicFile(out) as tmp:
            write_somehow(tmp.path)

    The name is ``<prefix><8 hex digits><suffix>`` in ``target``'s folder; ``prefix`` defaults
    to ``"." + target.name + "."`` (hidden).

    Raises:
        OSError: the folder does not exist or is not writable.
    """

    def __init__(self, target: str | os.PathLike[str], prefix: str | None = None, suffix: str = ".tmp"):
        self.target = Path(target)
        prefix = f".{self.target.name}." if prefix is None else prefix
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        for _ in range(_ATTEMPTS):
            path = self.target.parent / f"{prefix}{secrets.token_hex(4)}{suffix}"
            try:
                fd = os.open(path, flags, 0o666)
            except FileExistsError:
                continue
            try:
                #: the mode the kernel gave a new file: 0666 minus the umask
                self.mode = stat.S_IMODE(os.fstat(fd).st_mode)
            finally:
                os.close(fd)
            #: the temporary file to write
            self.path = path
            return
        raise FileExistsError(f"no free temporary name {prefix}XXXXXXXX{suffix} in {self.target.parent} "
                              f"after {_ATTEMPTS} tries")

    def commit(self) -> Path:
        """Give the written file the usual permissions and rename it onto the target (atomic)."""
        os.chmod(self.path, self.mode)
        os.replace(self.path, self.target)
        return self.target

    def discard(self) -> None:
        """Delete the temporary file (nothing happens to the target). Safe to call twice."""
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
