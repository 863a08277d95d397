"""Removal of a folder tree that model-written code may have shaped, without recursion.

``shutil.rmtree`` recurses once per level (a candidate nesting a few thousand folders made it
raise ``RecursionError``) and path-based removal fails past ``PATH_MAX``. :func:`remove_tree`
walks with directory file descriptors and an explicit stack, never follows a symbolic link,
climbs back only to the folder it came from (checked by device and inode, so a folder moved
away meanwhile cannot lead it outside the tree), and reports failure instead of raising.
"""

from __future__ import annotations

import contextlib
import os
import stat

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _empty_one_level(fd: int) -> str | None:
    """Unlink the non-folders in ``fd``; return the name of one sub-folder left, if any."""
    with os.scandir(fd) as entries:
        names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    sub = None
    for name, is_dir in names:
        if is_dir:
            sub = sub or name
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)
    return sub


def _descend(fd: int, name: str) -> int:
    """Open sub-folder ``name`` of ``fd`` (made searchable first: a candidate may chmod 000)."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=fd)
    except PermissionError:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            raise
        os.chmod(name, 0o700, dir_fd=fd)
        return os.open(name, _DIR_FLAGS, dir_fd=fd)


def remove_tree(path: str | os.PathLike[str]) -> bool:
    """Delete ``path`` and everything under it; True when it is gone. Never raises.

    Holds at most two descriptors at a time (the folder it works in and, briefly, its parent),
    and keeps only the (device, inode) chain from ``path`` down, so depth is bounded by
    memory, not by the recursion limit, the open-file limit or ``PATH_MAX``.
    """
    path = os.fspath(path)
    try:
        top = os.lstat(path)
        if not stat.S_ISDIR(top.st_mode):
            os.unlink(path)
            return True
        fd = os.open(path, _DIR_FLAGS)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    chain = [(top.st_dev, top.st_ino)]
    names: list[str] = []  # the sub-folder taken at each level below ``path``
    try:
        while True:
            sub = _empty_one_level(fd)
            if sub is not None:
                child = _descend(fd, sub)
                st = os.fstat(child)
                os.close(fd)
                fd = child
                chain.append((st.st_dev, st.st_ino))
                names.append(sub)
                continue
            if len(chain) == 1:
                break
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            st = os.fstat(parent)
            os.close(fd)
            fd = parent
            chain.pop()
            if (st.st_dev, st.st_ino) != chain[-1]:
                return False  # moved while we worked: stop rather than leave the tree
            os.rmdir(names.pop(), dir_fd=fd)  # emptied just now; if it cannot go, give up
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
