"""CPU settings for speed, applied by one explicit call before paddle is imported.

    from paddle_pale.utils.cpu import configure_cpu
    configure_cpu()      # first lines of a script; then import paddle, paddle_pale...

Importing this module changes nothing; it imports neither paddle nor the rest of the
package (``import paddle_pale`` is lazy), so the call can come first. Paddle reads
these variables once, when it is imported:

* ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``: paddle sets 1 thread when they are unset;
  we use one thread per physical core (hyper-threads only fight over the FMA units).
* ``MKL_DEBUG_CPU_TYPE=5`` on AMD CPUs: the MKL bundled with paddle picks its slow
  generic code path on non-Intel CPUs unless told to use the AVX2 one (a large fp32
  matmul runs several times faster with it).

* ``FLAGS_use_stride_kernel=0`` on hosts without an NVIDIA GPU: with stride kernels on
  (paddle 3's default) a transpose is a view that the next op copies with a generic
  strided-copy loop, many times slower than paddle's transpose kernel. Off is paddle 2's
  behaviour: views copy.

Every value is set with ``os.environ.setdefault``: a variable the user exported wins,
e.g. ``OMP_NUM_THREADS=1 python tools/benchmark.py``. The tools call
:func:`configure_cpu`; scripts of your own may call it too, or export the variables.

glibc's allocator is tuned too (:func:`tune_malloc`): by default it maps every block over
128 KB fresh from the kernel and unmaps it on free, so each new activation tensor pays a
page fault per 4 KB (a fresh tensor costs several times what reused memory does).
Every block comes from the heap, none is mapped on its own, and up to 1 GB of freed heap
is kept for reuse, as ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=1073741824`` would do; exporting any of them yourself leaves the
allocator alone. The threshold alone is not enough: glibc caps it at 32 MB, and a
batch's largest tensors (Pale-T's stage-1 attention scores at batch 8: 39 MB) are larger.
"""
import ctypes
import glob
import os
import platform
import sys

__all__ = ["physical_cores", "is_amd_cpu", "has_nvidia_gpu", "recommended_env",
           "tune_malloc", "apply", "configure_cpu"]

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
MALLOC_SETTINGS = {"MALLOC_MMAP_THRESHOLD_": (_M_MMAP_THRESHOLD, 32 << 20),
                   "MALLOC_MMAP_MAX_": (_M_MMAP_MAX, 0),
                   "MALLOC_TRIM_THRESHOLD_": (_M_TRIM_THRESHOLD, 1 << 30)}


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


def has_nvidia_gpu():
    """Whether an NVIDIA driver reports a GPU (the stride-kernel flag is left alone there:
    its effect on GPU kernels is not measured)."""
    return bool(glob.glob("/proc/driver/nvidia/gpus/*")) or os.path.exists("/dev/nvidia0")


def recommended_env(cpuinfo=None, environ=None, nvidia_gpu=None):
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
    if not (has_nvidia_gpu() if nvidia_gpu is None else nvidia_gpu):
        env["FLAGS_use_stride_kernel"] = "0"
    return env


def tune_malloc(environ=None):
    """Apply :data:`MALLOC_SETTINGS` through glibc's ``mallopt``; return what was set.

    Nothing is done off glibc, or when the user exported either variable (glibc read it
    at start-up).
    """
    environ = os.environ if environ is None else environ
    if any(name in environ for name in MALLOC_SETTINGS):
        return {}
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return {}
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return {}
    return {name: value for name, (param, value) in MALLOC_SETTINGS.items()
            if libc.mallopt(param, value) == 1}


def apply(environ=None, cpuinfo=None, nvidia_gpu=None):
    """Set the recommended values where unset; return the values now in effect."""
    environ = os.environ if environ is None else environ
    if environ is os.environ and "paddle" in sys.modules:
        print("configure_cpu: paddle is already imported, thread and MKL settings come too "
              "late", file=sys.stderr)
    return {key: environ.setdefault(key, value)
            for key, value in recommended_env(cpuinfo, environ, nvidia_gpu).items()}


def configure_cpu():
    """Apply the CPU environment (:func:`apply`) and the allocator settings
    (:func:`tune_malloc`) to this process; call before paddle is imported.

    Returns ``{"env": variables in effect, "malloc": allocator settings applied}``.
    """
    return {"env": apply(), "malloc": tune_malloc()}
