"""A warm parent: a Python that has imported an environment's modules and forks each step's process.

The agent starts `python drover_warm.py` in a step environment with its control socket as
standard input and talks to it over that socket (see ARCHITECTURE.md, "Warm starts"). Each
request is a 4-byte big-endian length, a JSON object and file descriptors (SCM_RIGHTS), the
first always a socket for the answer:

- `{"op": "preload", "modules": [...]}`: imports them here; answers
  `{"imported": [...], "missing": [...], "threads_from": null}` on the answer socket. A module
  that started a thread (`threads_from`) makes this process unfit to fork: it answers, then exits.
- `{"op": "fork", "argv": [...], "env": {...}, "cwd": "...", "parent_only": [...]}` with the log
  pipe and a gate pipe (`parent_only`: variables the agent set for the parent alone):
  forks the step's process, answers `{"pid": N}` and, when it ends, `{"exit": CODE}` or
  `{"signal": N}`.

The parent never runs a step's code: the child does, once the agent has put it in its place
(process group, cgroup) and written a byte on the gate. No thread runs here, and the child
closes every descriptor of the parent's (the control socket, other steps' answer sockets)
before anything else.
"""

import importlib
import json
import os
import select
import signal
import socket
import struct
import sys
from typing import Any

# The answer socket of each running child, by pid.
_children: dict[int, socket.socket] = {}

# The BLAS/OpenMP pools of the preloaded libraries (a threadpoolctl ThreadpoolController), found
# after each preload: finding them costs a child about as much as its step's own work, setting
# their sizes through them almost nothing.
_pools: Any = None
_limited: Any = None


def _threads() -> int:
    """Threads of this process, as the kernel counts them (native ones too)."""
    return len(os.listdir("/proc/self/task"))


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _receive(ctl: socket.socket) -> tuple[dict[str, Any], list[int]]:
    head, fds, _flags, _addr = socket.recv_fds(ctl, 4, 8)
    if not head:
        raise EOFError
    head += _recv_exact(ctl, 4 - len(head))
    (length,) = struct.unpack(">I", head)
    request: dict[str, Any] = json.loads(_recv_exact(ctl, length))
    return request, fds


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    try:
        sock.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        pass  # the agent gave up on this request; it finds out otherwise


def _preload(modules: list[str]) -> dict[str, Any]:
    imported, missing = [], []
    for name in modules:
        try:
            _load(name)
        except BaseException:  # an import may fail any way; the step then imports it itself
            missing.append(name)
            continue
        imported.append(name)
        if _threads() > 1:
            return {"imported": imported, "missing": missing, "threads_from": name}
    _find_pools()
    _freeze()
    return {"imported": imported, "missing": missing, "threads_from": None}


def _freeze() -> None:
    """Objects that exist now are never collected nor listed in children, so their pages stay
    shared (`drover.runner.freeze`)."""
    importlib.import_module("drover.runner").freeze()


def _load(name: str) -> None:
    """Imports module `name`, or else loads it as an attribute of its package (`from a import
    b` preloads `a.b`: a submodule, or a name the package may only load when first asked for)."""
    try:
        importlib.import_module(name)
    except ImportError:
        package, _, attribute = name.rpartition(".")
        if package not in sys.modules:
            raise
        getattr(sys.modules[package], attribute)


def _find_pools() -> None:
    """Finds the BLAS/OpenMP pools of what is loaded now, for children to size."""
    global _pools
    _pools = None
    if not any(m in sys.modules for m in ("numpy", "scipy", "sklearn", "threadpoolctl")):
        return
    try:
        import threadpoolctl  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return
    controller = getattr(threadpoolctl, "ThreadpoolController", None)
    if controller is not None:  # threadpoolctl 3.0 and later; a child of older ones looks itself
        _pools = controller()


def _blas_threads(env: dict[str, str]) -> None:
    """Sizes the BLAS/OpenMP pools as a fresh process with the step's environment would: the
    parent pinned them to one thread."""
    if "threadpoolctl" not in sys.modules and not any(
        m in sys.modules for m in ("numpy", "scipy", "sklearn")
    ):
        return
    pools = _pools
    if pools is None:
        try:
            import threadpoolctl  # type: ignore[import-untyped,import-not-found,unused-ignore]
        except ImportError:
            return
        infos = threadpoolctl.threadpool_info()
    else:
        infos = [lib.info() for lib in pools.lib_controllers]
    cpus = len(os.sched_getaffinity(0))
    wanted: dict[str, int] = {}
    for info in infos:
        api = info.get("user_api")
        names = {
            "blas": (f"{info.get('internal_api', '').upper()}_NUM_THREADS", "OMP_NUM_THREADS"),
            "openmp": ("OMP_NUM_THREADS",),
        }.get(api, ())
        value = next((env[n] for n in names if n in env), None)
        try:
            wanted[info["prefix"]] = int(value.split(",")[0]) if value else cpus
        except ValueError:
            wanted[info["prefix"]] = cpus
    if not wanted:
        return
    if pools is None:
        threadpoolctl.threadpool_limits(limits=wanted)
    else:
        # Kept, so that nothing restores the parent's sizes when the limiter is collected.
        global _limited
        _limited = pools.limit(limits=wanted)


def _child(request: dict[str, Any], fds: list[int], ctl: socket.socket, wake: list[int]) -> None:
    """The step's process, just forked: never returns."""
    code = 70
    try:
        os.setpgid(0, 0)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        answer, log, gate = fds
        ctl.close()
        for fd in wake:
            os.close(fd)
        for other in _children.values():
            other.close()
        _children.clear()
        os.close(answer)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        # Nothing of the step runs before the agent has it in its process group and cgroup.
        go = os.read(gate, 1)
        os.close(gate)
        if not go:
            os._exit(code)
        os.chdir(request["cwd"])
        env = _step_environ(request["env"], request.get("parent_only", []))
        _blas_threads(env)
        _fresh_state()
        sys.argv = list(request["argv"][1:])
        code = 0
        _run_main(sys.argv[0])
    except SystemExit as e:
        code = _exit_code(e)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    os._exit(code)


def _step_environ(env: dict[str, str], parent_only: list[str]) -> dict[str, str]:
    """Makes `os.environ` the step's `env` plus what the interpreter (C locale coercion) and the
    preloaded imports added to the parent's, as a new interpreter importing the same would
    have; only the variables that differ are set or removed, since each costs a call."""
    drop = set(parent_only) | set(env)
    wanted = {**{k: v for k, v in os.environ.items() if k not in drop}, **env}
    for key in [k for k in os.environ if k not in wanted]:
        del os.environ[key]
    for key, value in wanted.items():
        if os.environ.get(key) != value:
            os.environ[key] = value
    return wanted


# The harness beside this script, compiled once here rather than read and compiled again by
# every child: (its path, its code).
_harness: tuple[str, Any] | None = None


def _compile_harness() -> None:
    global _harness
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "drover_harness.py")
    try:
        with open(path, "rb") as f:
            _harness = (path, compile(f.read(), path, "exec"))
    except OSError:
        _harness = None  # every child then runs its script with runpy


def _run_main(path: str) -> None:
    """Runs the script at `path` as `__main__`, as `runpy.run_path(path, run_name="__main__")`
    does; the harness from the code compiled before the fork."""
    if _harness is None or _harness[0] != path:
        import runpy

        runpy.run_path(path, run_name="__main__")
        return
    module = type(sys)("__main__")
    module.__dict__.update(
        __file__=path,
        __cached__=None,
        __doc__=None,
        __loader__=None,
        __package__="",
        __spec__=None,
    )
    sys.modules["__main__"] = module
    exec(_harness[1], module.__dict__)


def _fresh_state() -> None:
    """What a new interpreter would not share with its siblings: random seeds, the temp dir."""
    import random

    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    tempfile: Any = sys.modules.get("tempfile")
    if tempfile is not None:
        tempfile.tempdir = None


def _exit_code(e: SystemExit) -> int:
    """The status the interpreter gives an uncaught SystemExit."""
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code & 0xFF
    print(e.code, file=sys.stderr)
    return 1


def _reap() -> None:
    while _children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        answer = _children.pop(pid, None)
        if answer is None:
            continue
        if os.WIFSIGNALED(status):
            _send(answer, {"signal": os.WTERMSIG(status)})
        else:
            _send(answer, {"exit": os.waitstatus_to_exitcode(status)})
        answer.close()


def _serve(ctl: socket.socket) -> None:
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _sig, _frame: None)
    while True:
        ready, _, _ = select.select([ctl.fileno(), wake_r], [], [])
        if wake_r in ready:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
            _reap()
        if ctl.fileno() not in ready:
            continue
        try:
            request, fds = _receive(ctl)
        except (EOFError, ConnectionError):
            os._exit(0)  # the agent is gone; running children go on without us
        if not fds:
            continue
        answer = socket.socket(fileno=fds[0])
        if request.get("op") == "preload":
            for fd in fds[1:]:
                os.close(fd)
            result = _preload(list(request.get("modules", [])))
            _send(answer, result)
            answer.close()
            if result["threads_from"]:
                os._exit(0)
            continue
        if len(fds) != 3 or request.get("op") != "fork":
            for fd in fds:
                os.close(fd)
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, fds, ctl, [wake_r, wake_w])
        os.close(fds[1])
        os.close(fds[2])
        _children[pid] = answer
        _send(answer, {"pid": pid})


def main() -> None:
    # Standard input is the control socket: it moves to another descriptor and standard input
    # becomes /dev/null, as a step's is.
    ctl = socket.socket(fileno=os.dup(0))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    # What every step runs: the harness's own modules, what a child imports before it runs
    # the harness (runpy and its pkgutil, random to reseed, traceback to report a failure) and
    # as it ends (atexit).
    for name in ("drover.runner", "runpy", "pkgutil", "random", "traceback", "atexit"):
        importlib.import_module(name)
    _compile_harness()
    _freeze()
    _serve(ctl)


if __name__ == "__main__":
    main()
