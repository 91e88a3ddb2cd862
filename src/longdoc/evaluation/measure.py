"""Worker-side measurement: what runs inside a fresh measuring process (``evaluate.py mode=efficiency`` and
``benchmarks/attention.py`` / ``benchmarks/memory.py``). The processes are started by :mod:`.runner`; the
reports are written by :mod:`.output`. Importing this module imports only the standard library (torch is
imported inside the functions that need it), so worker processes start fast.

* **Timing** (:func:`time_steps`, the 'time' phase): ``warmup`` untimed steps, then ``repeats`` timed steps;
  the reported time is the median (``time_stat='min'`` reports the minimum instead, which is more robust on a
  machine shared with other jobs; both are always recorded). On CUDA each step is bracketed by
  ``torch.cuda.synchronize()``; the clock is ``time.perf_counter``.

* **Peak memory** (:func:`peak_memory`, the 'memory' phase): one warm-up step (lazy library initialisation,
  thread pools, optimizer state), then one measured step. The figure is the *growth* during the step over what
  was live before it (callers add the bytes of persistent state, e.g. parameters and optimizer state,
  themselves: :func:`tensor_bytes`).

  - CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus
    ``memory_allocated()`` just before the step (``mem_method = cuda-max-allocated``).
  - CPU: the growth of the process's peak resident set size during the step
    (``mem_method = rss-hwm-reset+mmap-threshold-64k``). The memory process runs with
    :data:`MEMORY_PHASE_ENV` (``MALLOC_MMAP_THRESHOLD_=65536``, ``MALLOC_TRIM_THRESHOLD_=65536``): every
    allocation of 64 KiB or more then gets its own mapping that is unmapped on free, so resident memory follows
    the live allocations rather than the heap's history (benchmarks/README.md, "How time and memory are
    measured"). Before the step: ``gc.collect()``, ``malloc_trim(0)``, ``VmRSS`` from ``/proc/self/status``
    as the baseline, and the kernel's high-water mark reset by writing ``5`` to ``/proc/self/clear_refs``;
    after it ``VmHWM``. Peak = VmHWM - baseline, at page granularity. If ``clear_refs`` cannot be written, the
    fallback (``rss-hwm-first-step``) skips the warm-up and uses the whole process's VmHWM minus the RSS
    before the first step (slightly high: that step also pays for lazy initialisation).
  - CPU cross-check (``alloc_peak_mib``): one further step under ``torch.profiler`` with
    ``profile_memory=True``; the maximum running sum of the c10 CPU allocator's allocation/free events, i.e.
    the peak of live *tensor* bytes allocated during the step (the CPU analogue of CUDA's
    ``max_memory_allocated``).

A worker script calls :func:`worker_main` with its measuring function, which prints one result line
(:data:`RESULT_MARKER` + JSON) for :func:`longdoc.evaluation.runner.run_config` to read.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping

__all__ = [
    "RESULT_MARKER", "MIB", "GIB", "DTYPES", "MEMORY_PHASE_ENV",
    "proc_status", "rss_bytes", "hwm_bytes", "reset_peak_rss", "mem_available_bytes",
    "torch_dtype", "is_oom", "worker_setup", "device_description", "time_steps", "peak_memory", "measure",
    "tensor_bytes", "worker_main",
]

RESULT_MARKER = "@@LONGDOC_BENCH_RESULT@@"  # prefix of the one result line a worker prints
MIB = 1024 ** 2
GIB = 1024 ** 3
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}

# ----------------------------------------------------------------------------------------------
# /proc helpers (Linux)
# ----------------------------------------------------------------------------------------------


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """The ``Vm*`` / ``Rss*`` fields of ``/proc/<pid>/status`` in bytes (empty if unreadable)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, val = line.partition(":")
                parts = val.split()
                if len(parts) == 2 and parts[1] == "kB" and (key.startswith("Vm") or key.startswith("Rss")):
                    out[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


def rss_bytes(pid: int | str = "self") -> int:
    """Current resident set size of a process in bytes (0 if unknown)."""
    return proc_status(pid).get("VmRSS", 0)


def hwm_bytes() -> int:
    """Peak resident set size (VmHWM) of this process in bytes since start or the last reset."""
    return proc_status().get("VmHWM", 0)


# Environment of memory-phase workers (CPU): a fixed glibc mmap threshold (which also switches off
# glibc's dynamic threshold) so that every allocation of 64 KiB or more gets its own mapping that is
# returned to the OS on free. RSS then follows the live allocations instead of the heap's history.
MEMORY_PHASE_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Release freed heap memory to the OS and reset VmHWM to the current RSS.

    Returns True if the high-water mark was reset (``/proc/self/clear_refs`` accepted ``5``).
    """
    gc.collect()
    _malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return hwm_bytes() <= rss_bytes() + 1024 * 1024  # reset took effect (within 1 MiB of RSS)


def mem_available_bytes() -> int:
    """``MemAvailable`` from /proc/meminfo in bytes (0 if unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ----------------------------------------------------------------------------------------------
# worker side
# ----------------------------------------------------------------------------------------------


def torch_dtype(name: str):
    import torch

    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return getattr(torch, DTYPES[name])


def is_oom(err: BaseException) -> bool:
    """True for out-of-memory errors from Python, the CPU allocator or CUDA."""
    if isinstance(err, MemoryError):
        return True
    try:
        import torch

        if isinstance(err, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    msg = str(err).lower()
    return isinstance(err, RuntimeError) and (
        "out of memory" in msg or "can't allocate memory" in msg or "defaultcpuallocator" in msg
    )


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def worker_setup(cfg: Mapping) -> None:
    """Common worker preamble: threads, seed, CUDA device checks, and with ``cfg['cpu_allocator'] == 'tuned'``
    glibc's heap reuse (:func:`longdoc.runtime.tune_cpu_allocator`, ``train.py runtime.cpu_allocator=tuned``) in a
    timing-only process (CPU 'time' phase, or CUDA 'all') -- never where CPU memory is measured, whose RSS
    accounting relies on :data:`MEMORY_PHASE_ENV` (unless ``cfg['tuned_memory_phase']``: then the caller runs the
    memory phase without that environment, e.g. to judge whole-process peaks under the allocator users get)."""
    import torch

    phase, cuda = cfg.get("phase", "all"), str(cfg.get("device", "cpu")).startswith("cuda")
    timing_only = phase == "time" or (phase == "all" and cuda)
    if cfg.get("cpu_allocator", "default") == "tuned" and (timing_only or cfg.get("tuned_memory_phase")):
        from ..runtime import tune_cpu_allocator

        tune_cpu_allocator()

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(int(cfg.get("seed", 0)))
    if str(cfg.get("device", "cpu")).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but torch.cuda.is_available() is False")


def device_description(device: str) -> str:
    """Human-readable name of the compute device seen by this (worker) process."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        return f"{props.name} ({props.total_memory / GIB:.0f} GiB)"
    return f"cpu ({torch.get_num_threads()} torch threads)"


def _alloc_peak_profiled(step: Callable[[], None]) -> float | None:
    """Peak of live CPU tensor bytes allocated during ``step`` (torch.profiler memory events), bytes."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    try:
        events = prof.profiler.kineto_results.events()  # semi-private API: give up quietly if it moves
        mem = sorted((e.start_ns(), e.nbytes()) for e in events
                     if e.name() == "[memory]" and str(e.device_type()).endswith("CPU"))
    except AttributeError:
        return None
    run = peak = 0
    for _, nbytes in mem:
        run += nbytes
        peak = max(peak, run)
    return float(peak)


def time_steps(step: Callable[[], None], *, device: str, repeats: int, warmup: int,
               time_stat: str = "median") -> dict:
    """``warmup`` untimed steps, then ``repeats`` timed ones.

    Returns ``time_s`` (the ``time_stat``: 'median' or 'min'), ``time_median_s``, ``time_min_s``, ``times_s``.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    if time_stat not in ("median", "min"):
        raise ValueError(f"time_stat must be 'median' or 'min', got {time_stat!r}")
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"time_s": statistics.median(times) if time_stat == "median" else min(times),
            "time_median_s": statistics.median(times), "time_min_s": min(times), "times_s": times}


def peak_memory(step: Callable[[], None], *, device: str, warmup: int = 1, alloc_profile: bool = True) -> dict:
    """Peak memory growth of one ``step`` over what was live before it (see the module docstring).

    ``warmup`` steps first (lazy library initialisation, thread pools, optimizer state), then one
    measured step, then (CPU, ``alloc_profile``) one step under the profiler.

    Returns ``peak_mem_mib``, ``alloc_peak_mib`` (CPU cross-check or None), ``rss_peak_total_mib``
    (whole-process VmHWM during the measured step; CPU), ``mem_step_s`` (wall time of the measured
    step) and ``mem_method``.
    """
    import torch

    cuda = device.startswith("cuda")
    rss_start = rss_bytes()
    for _ in range(warmup):
        step()
    alloc_peak = rss_total = None
    if cuda:
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        step_s = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() - base
        method = "cuda-max-allocated"
    else:
        if reset_peak_rss():
            before = rss_bytes()
            t0 = time.perf_counter()
            step()
            step_s = time.perf_counter() - t0
            method = "rss-hwm-reset"
        else:  # no reset possible: the high-water mark covers the whole process; use the first step's peak
            before, step_s = rss_start, float("nan")
            method = "rss-hwm-first-step"
        if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
            method += f"+mmap-threshold-{int(os.environ['MALLOC_MMAP_THRESHOLD_']) // 1024}k"
        rss_total = hwm_bytes()
        peak = rss_total - before
        if alloc_profile:
            gc.collect()
            alloc_peak = _alloc_peak_profiled(step)
    return {"peak_mem_mib": peak / MIB, "alloc_peak_mib": None if alloc_peak is None else alloc_peak / MIB,
            "rss_peak_total_mib": None if rss_total is None else rss_total / MIB,
            "mem_step_s": step_s, "mem_method": method}


def measure(step: Callable[[], None], cfg: Mapping) -> dict:
    """Run the phase ``cfg['phase']`` of a measurement in this worker: 'time', 'memory' or 'all'
    (both, in this order, in one process -- used on CUDA where the two do not disturb each other).

    Uses ``cfg['device']``, ``cfg['repeats']``, ``cfg['warmup']`` (the caller has usually already
    run one step to fail fast, and passes ``warmup - 1``), ``cfg['time_stat']``, ``cfg['alloc_profile']``.
    """
    phase, device = cfg.get("phase", "all"), cfg["device"]
    out: dict = {"device_name": device_description(device)}
    if phase in ("time", "all"):
        out.update(time_steps(step, device=device, repeats=int(cfg["repeats"]), warmup=int(cfg["warmup"]),
                              time_stat=cfg.get("time_stat", "median")))
        out.pop("times_s")
    if phase in ("memory", "all"):
        out.update(peak_memory(step, device=device, warmup=0 if phase == "all" else int(cfg.get("mem_warmup", 1)),
                               alloc_profile=bool(cfg.get("alloc_profile", True))))
    return out


def tensor_bytes(tensors: Iterable) -> int:
    """Total storage of the distinct tensors in ``tensors`` (nested lists / dicts / optimizer state ok)."""
    import torch

    seen, total, stack = set(), 0, [tensors]
    while stack:
        obj = stack.pop()
        if isinstance(obj, torch.Tensor):
            key = (obj.untyped_storage().data_ptr(), obj.device)
            if key not in seen:
                seen.add(key)
                total += obj.untyped_storage().nbytes()
        elif isinstance(obj, Mapping):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set)):
            stack.extend(obj)
    return total


def worker_main(run: Callable[[dict], dict]) -> None:
    """Entry point of a worker process: ``<script> --worker '<json>'``.

    Calls ``run(cfg)`` and prints one line ``RESULT_MARKER + json`` with ``status`` 'ok', 'oom' or
    'error' (plus ``note``). The exit code is 0 whenever a result line was printed.
    """
    cfg = json.loads(sys.argv[sys.argv.index("--worker") + 1])
    try:
        result = {"status": "ok", **run(cfg)}
    except BaseException as err:  # noqa: BLE001 -- everything becomes a recorded status
        if isinstance(err, KeyboardInterrupt):
            raise
        status = "oom" if is_oom(err) else "error"
        traceback.print_exc(file=sys.stderr)
        result = {"status": status, "note": f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"}
    sys.stdout.flush()
    print(RESULT_MARKER + json.dumps(result), flush=True)
