"""Confinement: each worker in namespaces of its own, and frozen whenever it is not being called.

In the worker (:func:`confine`, before any program code runs) the process unshares a PID, mount, network and IPC
namespace (and a user namespace when it is not root) and forks: the child is PID 1 of the new PID namespace and
serves the program; the process in between stays outside as its watcher (it kills the worker when the harness is
gone, even a stopped one) and mirrors its exit. The child mounts a private ``/proc`` (it sees no process but its
own), a private tmpfs over the harness's scratch folder (its temporary folder, gone with it) and over ``/dev/shm``,
makes every other mount read-only (it can change no file of the host: not the installed libraries, the model caches
or another run's files), hides the folders and files the harness names (the dataset, the operator's input files)
under empty mounts, drops every capability and sets no-new-privileges, so the program can neither undo those mounts
nor see, signal, trace or read another worker or the harness. When PID 1 exits, the kernel kills everything the
program started: nothing outlives its unit. Where the kernel refuses the namespaces, the worker runs unconfined in a
session of its own (still without capabilities), and says so (:attr:`Confinement.confined`).

In the harness (:class:`Confinement`) a worker is stopped (``SIGSTOP``, every process of its namespace, forks
included) whenever it is not being called, so while one unit's batch is timed no other unit runs: threads that burn
the CPU while idle, daemons, output floods and signals to siblings cost nothing to anyone else. After each call, a
worker with a process it started still running is rejected.

Not a security boundary against the kernel, the GPU driver or a shared GPU: untrusted programs still belong in a
container or VM of their own (``--sandbox bwrap`` adds bubblewrap around the forkserver).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
from dataclasses import dataclass

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = (0x00020000, 0x08000000, 0x10000000,
                                                                        0x20000000, 0x40000000)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (1, 2, 4, 8, 32, 4096, 0x4000,
                                                                                 1 << 18)
# A mount's own options that a remount must keep (the kernel refuses to drop locked ones in a user namespace).
MOUNT_OPTION_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": 1024,
                      "nodiratime": 2048, "relatime": 1 << 21}
WRITABLE_MOUNTS = ("/proc", "/sys", "/dev")  # and below them; the scratch tmpfs too (the worker's own files)
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 4, 24, 38
_CAPABILITY_VERSION_3 = 0x20080522
SCRATCH_TMPFS_SIZE = "size=16g"  # a ceiling, not a reservation: a worker's temporary files (compile caches)


# ---------------------------------------------------------------------------------------------------------
# In the worker
# ---------------------------------------------------------------------------------------------------------

_libc = None


def _call(name: str, *args) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if getattr(_libc, name)(*args) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{name}: {os.strerror(error)}")


def _mount(source: str | None, target: str, kind: str | None, flags: int, data: str | None = None) -> None:
    encode = lambda text: text.encode() if text is not None else None  # noqa: E731
    _call("mount", encode(source), encode(target), encode(kind), ctypes.c_ulong(flags), encode(data))


def confine(hidden: list[str], scratch: str, lifeline: int, announce) -> bool:
    """Enter namespaces of our own where the kernel allows (see the module docstring) and return, in the process
    that goes on to serve the program, whether it is confined. The process that called this stays outside as the
    worker's watcher and never returns: it tells the harness ``announce({"pid": the serving process's host pid,
    "confined": bool, "reason": why not})``, then waits; when the harness is gone (``lifeline``, the read end of a
    pipe only the harness can write, reaches EOF) it kills the worker, which may be stopped and could not notice
    itself, and when the worker ends it ends the same way."""
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC
    reason = ""
    try:
        try:
            _call("unshare", flags)
        except PermissionError:  # not root: a user namespace of our own gives the rights the others need
            _call("prctl", PR_SET_DUMPABLE, 1, 0, 0, 0)
            _call("unshare", flags | CLONE_NEWUSER)
            for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
                with open(f"/proc/self/{name}", "w") as handle:
                    handle.write(text)
    except OSError as error:
        reason = f"the kernel refused namespaces ({error})"
    child = os.fork()
    if child:
        announce({"pid": child, "confined": not reason, "reason": reason})
        _watch(child, lifeline)
    os.close(lifeline)
    if reason:
        os.setsid()  # unconfined: a session of its own is what the harness stops and kills
    else:
        _private_mounts(hidden, scratch)
    _drop_capabilities()
    return not reason


def _watch(child: int, lifeline: int) -> None:
    """The watcher between the harness and the worker: kill the worker once the harness is gone; end as the
    worker ended."""
    for handle in range(3, 1024):  # nothing of the worker stays open here but the lifeline
        if handle != lifeline:
            try:
                os.close(handle)
            except OSError:
                pass
    worker = os.pidfd_open(child)
    ready, _, _ = select.select([worker, lifeline], [], [])
    if worker not in ready:  # the harness is gone, the worker is not: it goes too (SIGKILL ends a stopped one)
        os.kill(child, signal.SIGKILL)
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    os._exit(os.waitstatus_to_exitcode(status))


def _private_mounts(hidden: list[str], scratch: str) -> None:
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing mounted here propagates back to the host
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, f"{SCRATCH_TMPFS_SIZE},mode=0700")
    if os.path.isdir("/dev/shm"):
        _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for path in hidden:
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555")
        elif os.path.exists(path):
            _mount("/dev/null", path, None, MS_BIND)
    _read_only_mounts(keep=(scratch, "/dev/shm"))


def _read_only_mounts(keep: tuple[str, ...]) -> None:
    """Remount every mount of this namespace read-only but ``keep`` and :data:`WRITABLE_MOUNTS` (and what is
    below them). A mount that cannot be (rare: one the kernel locked) is named on stderr, the unit's log."""
    with open("/proc/self/mountinfo") as handle:
        mounts = [line.split() for line in handle]
    for fields in mounts:
        target = fields[4].encode().decode("unicode_escape")  # octal escapes: "\040" is a space
        options = set(fields[5].split(","))
        if "ro" in options or any(target == top or target.startswith(top.rstrip("/") + "/")
                                  for top in (*keep, *WRITABLE_MOUNTS)):
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for option in options:
            flags |= MOUNT_OPTION_FLAGS.get(option, 0)
        try:
            _mount(None, target, None, flags)
        except OSError as error:
            print(f"accelbench: could not make {target} read-only: {error}", file=sys.stderr)


def _drop_capabilities() -> None:
    """No capability left, now or after an exec: the program cannot unmount what hides the harness's files."""
    with open("/proc/sys/kernel/cap_last_cap") as handle:
        last = int(handle.read())
    for capability in range(last + 1):
        _call("prctl", PR_CAPBSET_DROP, capability, 0, 0, 0)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Sets(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    _call("capset", ctypes.byref(Header(_CAPABILITY_VERSION_3, 0)), (Sets * 2)())
    _call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


# ---------------------------------------------------------------------------------------------------------
# In the harness
# ---------------------------------------------------------------------------------------------------------


def _processes() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: state, ppid, pgrp, session, ...; None for a process gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


@dataclass
class Confinement:
    """The harness's view of one worker: ``pid`` serves the program (PID 1 of its namespace when ``confined``;
    else the leader of its own session)."""

    pid: int
    confined: bool
    reason: str = ""

    def __post_init__(self):
        self._namespace = self._pid_namespace(self.pid) if self.confined else None
        self.frozen = False

    @staticmethod
    def _pid_namespace(pid: int) -> str | None:
        try:
            return os.readlink(f"/proc/{pid}/ns/pid")
        except OSError:
            return None

    def members(self, live: bool = False) -> list[int]:
        """Every process of the worker: its PID namespace's, or (unconfined) its session's. ``live``: without
        zombies (exited, not yet reaped)."""
        found = []
        for pid in _processes():
            if self.confined:
                if self._pid_namespace(pid) != self._namespace:
                    continue
                fields = _stat_fields(pid) if live else None
            else:
                fields = _stat_fields(pid)
                if fields is None or int(fields[3]) != self.pid:
                    continue
            if live and (fields is None or fields[0] == "Z"):
                continue
            found.append(pid)
        return found

    def _signal_all(self, signum: int) -> None:
        """``signum`` to every process of the worker, again for the ones that appear meanwhile (forks), until a
        pass finds none new (a stopped process forks no more)."""
        done: set[int] = set()
        while pending := [pid for pid in self.members() if pid not in done]:
            for pid in pending:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
                done.add(pid)

    def freeze(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGSTOP)  # the program's own process at once, before the namespace's scan
        self._signal_all(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        self._signal_all(signal.SIGCONT)
        self.frozen = False

    def strays(self) -> list[str]:
        """The processes the program started that still run (each ``pid: command``), besides the worker."""
        found = []
        for pid in self.members(live=True):
            if pid == self.pid:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    command = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
                if not command:  # caught between fork and exec, or exiting: its name at least
                    with open(f"/proc/{pid}/comm", "rb") as handle:
                        command = f"[{handle.read().decode(errors='replace').strip()}]"
            except OSError:
                continue
            found.append(f"{pid}: {command[:80] or '?'}")
        return found

    def kill(self) -> None:
        """SIGKILL the worker and everything it started (PID 1's death ends its namespace)."""
        for pid in [self.pid] + ([] if self.confined else self.members()):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def protect_harness() -> None:
    """Make the harness's memory unreadable to a same-user process outside a namespace (no ptrace attach, no
    /proc/<pid>/mem): for hosts where workers run unconfined."""
    if sys.platform.startswith("linux"):
        try:
            _call("prctl", PR_SET_DUMPABLE, 0, 0, 0, 0)
        except OSError:
            pass
