"""Hostile and benign programs for the sandbox, each with the barrier that must stop it (or the output it
must produce). Used by tests/test_envs_sandbox_hostile.py.

A hostile program prints ESCAPED when it reached its goal; `barrier` is text the run must show instead
(an errno from the kernel, a limit, a kill). Placeholders in {braces} are filled by the test with host
resources that the program attacks: a world-readable host file, listeners on 127.0.0.1 and ::1 (TCP and
UDP), a unix socket by path and an abstract one, a marker token for processes that must not survive
(its reverse, SECRET, is in the worker's environment).
"""
PRELUDE = '''import errno, os, socket, sys
SECRET = "{token}"[::-1].encode()  # the worker's environment holds it; the program text does not
def blocked(e):
    print("BLOCKED", type(e).__name__, errno.errorcode.get(getattr(e, "errno", None) or 0, ""), flush=True)
'''

_CTYPES = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"


def _attempt(body: str, catch: str = "OSError") -> str:
    """A program that prints ESCAPED when `body` runs without raising `catch`."""
    lines = "\n".join("    " + line for line in body.strip().splitlines())
    return f"try:\n{lines}\n    print('ESCAPED', flush=True)\nexcept {catch} as e:\n    blocked(e)\n"


def _syscall_fails(call: str) -> str:
    """A ctypes call that escapes when it returns 0; prints its errno otherwise."""
    return (_CTYPES + f"r = {call}\nif r == 0:\n    print('ESCAPED')\nelse:\n"
            "    print('BLOCKED errno', errno.errorcode[ctypes.get_errno()])\n")


def _datagram(family: str, addr: str, port: str) -> str:
    """Send a UDP datagram to the host's listener (the host check shows whether it arrived)."""
    return (f"s = socket.socket({family}, socket.SOCK_DGRAM)\ntry:\n    s.sendto(b'hello', ({addr!r}, {port}))\n"
            "    print('sent into the sandbox only')\nexcept OSError as e:\n    blocked(e)\n")


# (name, program, barrier): what must appear in the observation text (alternatives split by |)
HOSTILE = [
    # ---- reads of host files: by path, through a symlink, through /proc, through devices
    ("read_host_file", _attempt("print(open({host_file!r}).read())"), "BLOCKED FileNotFoundError ENOENT"),
    ("read_etc_passwd", _attempt("print(open('/etc/passwd').read())"), "BLOCKED FileNotFoundError ENOENT"),
    ("read_etc_shadow", _attempt("print(open('/etc/shadow').read())"), "BLOCKED FileNotFoundError ENOENT"),
    ("read_repo_file", _attempt("print(open({repo_file!r}).read())"), "BLOCKED FileNotFoundError ENOENT"),
    ("read_via_symlink", _attempt("os.symlink({host_file!r}, 'link')\nprint(open('link').read())"),
     "BLOCKED FileNotFoundError ENOENT"),
    ("read_via_proc_root", _attempt("print(open('/proc/1/root' + {host_file!r}).read())"),
     "BLOCKED FileNotFoundError ENOENT|BLOCKED PermissionError EACCES"),
    ("read_host_disk_device", _attempt("print(open('/dev/vda', 'rb').read(16))"), "BLOCKED FileNotFoundError ENOENT"),
    ("read_sys", _attempt("print(os.listdir('/sys'))"), "BLOCKED FileNotFoundError ENOENT"),
    # pid 1 of the namespace backend is a fork of the worker: its environment and memory hold the host's
    ("environ_of_init", "try:\n    data = open('/proc/1/environ', 'rb').read()\n"
                        "    print('ESCAPED' if SECRET in data else 'BLOCKED init holds no secret')\n"
                        "except OSError as e:\n    blocked(e)\n", "BLOCKED"),
    ("memory_of_init", "found = False\ntry:\n    mem = open('/proc/1/mem', 'rb')\n"
                       "    for line in open('/proc/1/maps').read().splitlines():\n"
                       "        lo, hi = (int(x, 16) for x in line.split()[0].split('-'))\n"
                       "        if line.split()[1].startswith('rw') and hi - lo < 2**26:\n"
                       "            try:\n                mem.seek(lo)\n"
                       "                found |= SECRET in mem.read(hi - lo)\n"
                       "            except OSError:\n                pass\n"
                       "    print('ESCAPED' if found else 'BLOCKED init memory holds no secret')\n"
                       "except OSError as e:\n    blocked(e)\n", "BLOCKED"),
    ("other_processes_in_proc",
     "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
     "print('ESCAPED' if len(pids) > 3 else 'BLOCKED pid namespace', pids)\n"
     "for p in pids:\n    try:\n        data = open(f'/proc/{{p}}/environ', 'rb').read()\n"
     "        print('ESCAPED' if SECRET in data else 'no secret')\n    except OSError as e:\n        blocked(e)\n",
     "BLOCKED pid namespace"),
    # ---- writes and deletes outside the work dir
    ("write_usr", _attempt("open('/usr/lib/vagent_escape', 'w').write('x')"), "BLOCKED OSError EROFS"),
    ("write_host_tmp_path", "open({host_tmp_target!r}, 'w').write('x')\nprint('wrote to the private /tmp only')\n",
     "private /tmp"),  # the host check: no such file on the host
    ("delete_interpreter", _attempt("os.remove(sys.executable)"), "BLOCKED OSError EROFS"),
    ("chmod_interpreter", _attempt("os.chmod(sys.executable, 0o777)"), "BLOCKED OSError EROFS"),
    ("write_by_dir_fd", _attempt("d = os.open('/usr', os.O_RDONLY)\n"
                                 "os.open('vagent_escape', os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=d)"),
     "BLOCKED OSError EROFS"),
    ("sysrq_trigger", _attempt("open('/proc/sysrq-trigger', 'w').write('h')"),
     "BLOCKED PermissionError EACCES|BLOCKED FileNotFoundError ENOENT"),
    ("disk_flood", "n = 0\ntry:\n    while True:\n        with open(f'f{{n}}', 'wb') as f:\n"
                   "            f.write(b'x' * 2**19)\n        n += 1\nexcept OSError as e:\n    blocked(e)\n"
                   "print('files', n)\n", "BLOCKED OSError ENOSPC"),
    ("single_file_flood", _attempt("open('big', 'wb').write(b'x' * (64 * 2**20))"), "BLOCKED OSError EFBIG"),
    # ---- network: the host's loopback over TCP and UDP, unix sockets by path and abstract, the outside
    # bwrap brings up the sandbox's own loopback (nothing listens there), the namespace backend leaves it down;
    # UDP datagrams may leave the socket, and the host check shows that the host listener got none
    ("tcp_127", _attempt("socket.create_connection(('127.0.0.1', {tcp4}), timeout=2)"),
     "ENETUNREACH|ECONNREFUSED"),
    ("tcp_ipv6_loopback", _attempt("socket.create_connection(('::1', {tcp6}), timeout=2)"), "BLOCKED"),
    ("udp_127", _datagram("socket.AF_INET", "127.0.0.1", "{udp4}"), "ENETUNREACH|sent into the sandbox only"),
    ("udp_ipv6_loopback", _datagram("socket.AF_INET6", "::1", "{udp6}"), "BLOCKED|sent into the sandbox only"),
    ("unix_socket_by_path", _attempt("s = socket.socket(socket.AF_UNIX)\ns.connect({unix_path!r})"),
     "BLOCKED FileNotFoundError ENOENT"),
    ("abstract_unix_socket", _attempt("s = socket.socket(socket.AF_UNIX)\ns.connect('\\0' + {abstract!r})"),
     "BLOCKED ConnectionRefusedError ECONNREFUSED"),
    ("internet", _attempt("socket.create_connection(('8.8.8.8', 53), timeout=2)"), "ENETUNREACH"),
    # ---- processes: bombs, memory, output floods, daemons, signals, fd leaks
    ("fork_bomb", "import time\nwhile True:\n    try:\n        os.fork()\n    except OSError as e:\n"
                  "        blocked(e)\n        time.sleep(0.05)\n", "BLOCKED BlockingIOError EAGAIN"),
    ("thread_bomb", "import threading, time\nn = 0\ntry:\n    while True:\n"
                    "        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n        n += 1\n"
                    "except RuntimeError as e:\n    print('BLOCKED thread limit', n, e)\n    os._exit(0)\n",
     "BLOCKED thread limit"),
    ("huge_allocation", _attempt("x = bytearray(10 * 2**30)", "MemoryError"), "BLOCKED MemoryError"),
    ("gradual_allocation", _attempt("chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 2**20))",
                                    "MemoryError"), "BLOCKED MemoryError"),
    ("stdout_flood", "while True:\n    sys.stdout.write('x' * 65536)\n", "bytes cut"),
    ("daemon_survives_the_call",
     "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
     "        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', '{token}'])\n"
     "    os._exit(0)\nprint('BLOCKED? daemon started; the pid namespace must end it')\n",
     "daemon started"),
    ("kill_everything_visible", "import signal\nfor target in (os.getppid(), -1):\n    try:\n"
                                "        os.kill(target, signal.SIGKILL)\n    except OSError as e:\n"
                                "        blocked(e)\nprint('signals sent; the host sleeper must live')\n",
     "signals sent"),
    ("ignore_signals_and_sleep", "import signal, time\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n"
                                 "    signal.signal(s, signal.SIG_IGN)\ntime.sleep(60)\n", "wall-clock timeout"),
    ("cpu_loop_ignoring_sigxcpu", "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n"
                                  "    pass\n", "terminated by SIGKILL|wall-clock timeout"),
    ("inherited_fds", "found = [fd for fd in range(3, 256) if os.path.exists(f'/proc/self/fd/{{fd}}')]\n"
                      "secret = b''\nfor fd in found:\n    try:\n        secret += os.pread(fd, 100, 0)\n"
                      "    except OSError:\n        pass\n"
                      "print('ESCAPED' if b'{token}' in secret else 'BLOCKED no fd', found)\n",
     "BLOCKED no fd"),
    # ---- ctypes and raw syscalls
    ("nested_user_namespace", _syscall_fails("libc.unshare(0x10000000)"), "BLOCKED errno"),
    ("mount_tmpfs", _syscall_fails("libc.mount(b'none', b'/work', b'tmpfs', 0, None)"), "BLOCKED errno EPERM"),
    ("remount_usr_rw", _syscall_fails("libc.mount(None, b'/usr', None, 32 | 4096, None)"), "BLOCKED errno EPERM"),
    ("raw_setuid_root", _syscall_fails("libc.syscall(105, 0)"), "BLOCKED errno EINVAL|BLOCKED errno EPERM"),
    # refused by the seccomp filter (without it: EFAULT / EINVAL for these arguments)
    ("io_uring", _syscall_fails("libc.syscall(425, 1, None)"), "BLOCKED errno EPERM"),
    ("perf_event_open", _syscall_fails("libc.syscall(298, None, 0, -1, -1, 0)"), "BLOCKED errno EPERM"),
    ("raw_reboot", _syscall_fails("libc.syscall(169, 0xfee1dead, 672274793, 0x4321fedc, None)"),
     "BLOCKED errno EPERM"),
    # attaching to pid 1 fails where it holds the worker's memory; bwrap's pid 1 holds nothing of the host's
    ("ptrace_init", _CTYPES + "if libc.ptrace(16, 1, None, None) != 0:\n"
                    "    print('BLOCKED errno', errno.errorcode[ctypes.get_errno()])\n"
                    "else:\n    data = open('/proc/1/environ', 'rb').read()\n"
                    "    print('ESCAPED' if SECRET in data else 'BLOCKED init holds no secret')\n",
     "BLOCKED errno EPERM|BLOCKED init holds no secret"),
]

# (name, program, text its stdout must contain)
BENIGN = [
    ("fractions", "from fractions import Fraction\nprint(Fraction(2, 4) + Fraction(1, 4))", "3/4"),
    ("big_int_math", "import math\nprint(sum(map(int, str(math.factorial(100)))))", "648"),
    ("files_in_workdir", "open('a.txt', 'w').write('hi')\nprint(open('a.txt').read(), os.getcwd())", "hi /work"),
    ("tempfile", "import tempfile\nwith tempfile.NamedTemporaryFile('w+') as f:\n    f.write('t')\n    f.seek(0)\n"
                 "    print('tmp', f.read(), f.name.startswith('/tmp/'))", "tmp t True"),
    ("threads", "import threading\nout = []\nts = [threading.Thread(target=out.append, args=(i,)) for i in range(8)]\n"
                "[t.start() for t in ts]\n[t.join() for t in ts]\nprint(sorted(out))", "[0, 1, 2, 3, 4, 5, 6, 7]"),
    ("fork_and_wait", "pid = os.fork()\nif pid == 0:\n    os._exit(7)\n"
                      "print('child', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))",
     "child 7"),
    ("subprocess_python", "import subprocess\nprint(subprocess.run([sys.executable, '-c', 'print(6*7)'], "
                          "capture_output=True, text=True).stdout.strip())", "42"),
    ("stdlib_mix", "import json, re, decimal, itertools, collections, statistics, hashlib\n"
                   "print(json.dumps({'m': statistics.median([3, 1, 2])}), hashlib.sha256(b'a').hexdigest()[:8])",
     '{"m": 2} ca978112'),
    ("reads_own_program", "print(open('main.py').read().count('reads_own'))", "1"),
    ("traceback_is_shown", "def f():\n    raise ValueError('the bug')\nf()", "ValueError: the bug"),
]
