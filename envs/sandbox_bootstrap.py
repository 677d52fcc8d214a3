"""The sandboxed interpreter's bootstrap: rlimits, the optional audit hook, then the user's main.py.

Limits are set here, inside the sandbox, rather than before its namespaces exist: RLIMIT_NPROC set
before the user namespace is created would also cap the namespace's parent count, shared by every
sandbox of the same host uid. The audit hook (PEP 578) is not a security boundary; it is an extra layer
for the unisolated backend (and on request elsewhere).
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vagent_jax.envs.sandbox import SandboxLimits

# Runs in the child before the user's code: rlimits, the optional audit hook, then main.py.
BOOTSTRAP = r'''
import json, os, resource, sys
_cfg = json.loads(sys.argv[1])
for _name, _value in _cfg["rlimits"].items():
    resource.setrlimit(getattr(resource, _name), tuple(_value))
os.umask(0o077)
os.environ.pop("PWD", None)  # bwrap sets it
if _cfg["audit_hook"]:
    _ROOT = os.path.realpath(os.getcwd())
    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    _PATH_EVENTS = {"os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1), "os.link": (0, 1),
                    "os.symlink": (1,), "os.chmod": (0,), "os.chown": (0,), "os.truncate": (0,), "os.utime": (0,),
                    "shutil.rmtree": (0,), "shutil.copyfile": (1,), "shutil.move": (1,), "os.mkfifo": (0,),
                    "os.mknod": (0,)}
    _BLOCKED = ("subprocess.", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "ctypes.",
                "os.startfile", "pty.", "os.forkpty")

    def _inside(path):
        if isinstance(path, int) or path is None:
            return True
        full = os.path.realpath(os.fsdecode(path))
        return full == _ROOT or full.startswith(_ROOT + os.sep)

    def _hook(event, args):
        if event == "open":
            if args[2] & _WRITE_FLAGS and not _inside(args[0]):
                raise PermissionError(f"sandbox: writing outside the working directory is not allowed: {args[0]}")
        elif event in _PATH_EVENTS:
            for i in _PATH_EVENTS[event]:
                if i < len(args) and not _inside(args[i]):
                    raise PermissionError(f"sandbox: {event} outside the working directory is not allowed: {args[i]}")
        elif event.startswith(_BLOCKED):
            raise PermissionError(f"sandbox: {event} is not allowed")

    sys.addaudithook(_hook)
    del _hook
del _cfg
sys.argv = ["main.py"]
with open("main.py") as _f:
    _code = compile(_f.read(), "main.py", "exec")
exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
'''



def bootstrap_argv(python: str, limits: SandboxLimits, hook: bool) -> list[str]:
    """The interpreter command line that sets `limits` as rlimits, optionally the audit hook, then runs main.py."""
    rlimits = {"RLIMIT_CPU": (limits.cpu_s, limits.cpu_s + 1), "RLIMIT_AS": (limits.memory_bytes,) * 2,
               "RLIMIT_FSIZE": (limits.file_bytes,) * 2, "RLIMIT_NPROC": (limits.nproc,) * 2,
               "RLIMIT_NOFILE": (limits.nofile,) * 2, "RLIMIT_CORE": (0, 0)}
    cfg = json.dumps({"rlimits": rlimits, "audit_hook": hook})
    return [python, "-I", "-B", "-u", "-c", BOOTSTRAP, cfg]
