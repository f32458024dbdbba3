"""CPU settings for speed; import this module BEFORE paddle (and so before paddle_pale).

    import cpu_env  # noqa: F401  (first import of a tools/ script)

Paddle reads these variables once, when it is imported:

* ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``: paddle sets 1 thread when they are unset;
  we use one thread per physical core (hyper-threads only fight over the FMA units).
* ``MKL_DEBUG_CPU_TYPE=5`` on AMD CPUs: the MKL bundled with paddle picks its slow
  generic code path on non-Intel CPUs unless told to use the AVX2 one (measured 1024^3
  fp32 matmul here: about 23 GFLOP/s without, 65-82 with).

Every value is set with ``os.environ.setdefault``: a variable the user exported wins,
e.g. ``OMP_NUM_THREADS=1 python tools/benchmark.py``. Stand-alone on purpose (no paddle
import), so it can run first.
"""
import os
import sys

__all__ = ["physical_cores", "is_amd_cpu", "recommended_env", "apply", "APPLIED"]


def _cpuinfo():
    try:
        with open("/proc/cpuinfo") as handle:
            return handle.read()
    except OSError:
        return ""


def physical_cores(cpuinfo=None):
    """Physical cores this process may run on (hyper-thread siblings counted once)."""
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = set(range(os.cpu_count() or 1))
    cores = set()
    for block in cpuinfo.strip().split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {key.strip(): value.strip() for key, value in fields.items()}
        if "processor" not in fields or int(fields["processor"]) not in allowed:
            continue
        cores.add((fields.get("physical id", "0"), fields.get("core id", fields["processor"])))
    return max(len(cores), 1) if cores else max(len(allowed), 1)


def is_amd_cpu(cpuinfo=None):
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    return "AuthenticAMD" in cpuinfo


def recommended_env(cpuinfo=None, environ=None):
    """The variables :func:`apply` would set, as a dict.

    Under ``paddle.distributed.launch`` the processes of one node share its cores
    (``PADDLE_LOCAL_SIZE`` of them), so each takes its share, at least one.
    """
    environ = os.environ if environ is None else environ
    try:
        local_processes = max(int(environ.get("PADDLE_LOCAL_SIZE", "1")), 1)
    except ValueError:
        local_processes = 1
    threads = str(max(physical_cores(cpuinfo) // local_processes, 1))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    if is_amd_cpu(cpuinfo):
        env["MKL_DEBUG_CPU_TYPE"] = "5"
    return env


def apply(environ=None, cpuinfo=None):
    """Set the recommended values where unset; return the values now in effect."""
    environ = os.environ if environ is None else environ
    if environ is os.environ and "paddle" in sys.modules:
        print("cpu_env: paddle is already imported, thread and MKL settings come too late",
              file=sys.stderr)
    return {key: environ.setdefault(key, value)
            for key, value in recommended_env(cpuinfo, environ).items()}


APPLIED = apply()
