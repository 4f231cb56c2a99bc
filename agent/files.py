"""Reading files a user names: regular files only, opened so that nothing else can hang the reader.

A FIFO blocks its reader until something writes to it, a device such as ``/dev/zero`` never ends,
and both report a size of 0, so a size limit checked on the path never applies to them. Every
file the agent reads because a command line or a config names it (configs, playbooks, scenarios,
traces, the CSV inputs of ``aiops detect`` and ``aiops forecast``) is opened here: checked before
opening (opening a device can do something), opened non-blocking (so that a FIFO swapped in
meanwhile cannot hang the open), and checked again on the open descriptor.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_SPECIAL_FILES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class NotRegularFileError(OSError):
    """A path names a FIFO, a device, a directory or a socket, which are not read."""


def _check_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = next((what for test, what in _SPECIAL_FILES if test(mode)), "a special file")
        msg = f"{kind}, not a regular file"
        raise NotRegularFileError(msg)


def open_regular(path: Path, *, follow_links: bool = True) -> int:
    """A blocking read-only descriptor of the regular file at ``path`` (the caller closes it).

    :class:`NotRegularFileError` for anything else; OSError when it cannot be opened, and, with
    ``follow_links`` false, when ``path`` is a symbolic link (``ELOOP``, as ``O_NOFOLLOW`` gives).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    if follow_links:
        _check_regular(os.stat(path).st_mode)
    else:
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))
        _check_regular(mode)
        flags |= os.O_NOFOLLOW
    fd = os.open(path, flags)
    try:
        _check_regular(os.fstat(fd).st_mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular_file(path: Path, max_bytes: int | None = None, *, follow_links: bool = True) -> bytes:
    """The regular file at ``path``; with ``max_bytes``, at most ``max_bytes + 1`` of its bytes (more
    than ``max_bytes`` means too large, a file that grew since its size was read too).

    :class:`NotRegularFileError` for anything but a regular file; OSError when it cannot be read
    (and for a symbolic link, with ``follow_links`` false).
    """
    with os.fdopen(open_regular(path, follow_links=follow_links), "rb") as fh:
        return fh.read() if max_bytes is None else fh.read(max_bytes + 1)
