"""Per-process timing and peak-memory measurement: the shared machinery of ``evaluate.py mode=efficiency``
and of the benchmark scripts (``benchmarks/attention.py``, ``benchmarks/memory.py``).

Moved here from ``benchmarks/_harness.py`` with the same API (every public name and signature);
``benchmarks/_harness.py`` is now a re-export (``from longdoc.evaluation.harness import *``). One
addition: :func:`run_config` / :func:`run_measured` also take the worker command as a sequence of
interpreter arguments, e.g. ``["-m", "longdoc.evaluation.efficiency"]`` (a module inside a package),
besides a script path. Importing this module imports only the standard library (torch is imported
inside the functions that need it), so worker processes start fast.

Everything that is not specific to one measurement lives here, once:

* **Process isolation.** Every configuration runs in its own fresh Python process
  (``python <script> --worker '<json config>'``, see :func:`run_config`). Nothing leaks from one
  configuration into the next: allocator caches, the glibc heap, oneDNN/MKL scratch buffers, CUDA
  context, compiled kernels. The parent enforces a wall-clock timeout (status ``timeout``) and,
  optionally, a resident-memory limit by polling the child's ``VmRSS`` (status ``oom``), and kills
  the child's whole process group (only the process it started). A child killed by SIGKILL (the
  kernel's OOM killer) or one that raised ``MemoryError`` / an allocator error is recorded as ``oom``.

* **Two phases per configuration** (:func:`run_measured`). On CPU, time and memory are measured in
  two separate fresh processes, because the glibc settings that make resident memory trustworthy
  would slow the timed steps down (every large allocation becomes a fresh, page-faulted mapping).
  On CUDA one process does both (the CUDA allocator's statistics need no special settings).

* **Timing** (:func:`time_steps`, the 'time' phase): ``warmup`` untimed steps, then ``repeats``
  timed steps under the default allocator; the reported time is the median (``time_stat='min'``
  reports the minimum instead, which is more robust on a machine shared with other jobs; both are
  always recorded). On CUDA each step is bracketed by ``torch.cuda.synchronize()``; the clock is
  ``time.perf_counter``.

* **Peak memory** (:func:`peak_memory`, the 'memory' phase): one warm-up step (lazy library
  initialisation, thread pools, optimizer state), then one measured step. The figure is the *growth*
  during the step over what was live before it (callers add the bytes of persistent state, e.g.
  parameters and optimizer state, themselves: :func:`tensor_bytes`).

  - CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus
    ``memory_allocated()`` just before the step (``mem_method = cuda-max-allocated``).
  - CPU: the growth of the process's peak resident set size during the step
    (``mem_method = rss-hwm-reset+mmap-threshold-64k``). The memory process runs with
    ``MALLOC_MMAP_THRESHOLD_=65536`` and ``MALLOC_TRIM_THRESHOLD_=65536`` (:data:`MEMORY_PHASE_ENV`):
    every allocation of 64 KiB or more then gets its own mapping that is unmapped on free. Under
    glibc's default (a dynamic threshold that climbs to 32 MiB) freed tensors stay in the heap and
    are reused, and the RSS growth of a step depends on the heap's history and fragmentation rather
    than on the live tensors -- in tests it over-stated the peak by up to 1.6-2x and was not
    reproducible. Before the step the harness runs ``gc.collect()`` and ``malloc_trim(0)``, reads
    ``VmRSS`` from ``/proc/self/status`` as the baseline and resets the kernel's high-water mark by
    writing ``5`` to ``/proc/self/clear_refs``; after the step it reads ``VmHWM``. Peak = VmHWM -
    baseline: what the operating system actually had to provide (tensors, allocator overhead,
    library scratch buffers), at page granularity. If ``clear_refs`` cannot be written, the fallback
    (``rss-hwm-first-step``) skips the warm-up and uses the whole process's VmHWM minus the RSS
    before the first step -- slightly high, because that step also pays for lazy initialisation.
  - CPU cross-check (``alloc_peak_mib``): one further step under ``torch.profiler`` with
    ``profile_memory=True``; the maximum running sum of the c10 CPU allocator's allocation/free
    events, i.e. the peak of live *tensor* bytes allocated during the step -- the CPU analogue of
    CUDA's ``max_memory_allocated``. With the settings above it agrees with the RSS figure to within
    about 1 MiB plus non-tensor memory; a large disagreement flags a measurement problem.

The parent side also writes the outputs: CSV (:func:`write_csv`), markdown tables
(:func:`markdown_table`), log-log line plots (:func:`plot_panels`), and the machine header line
(:func:`machine_header`).
"""

from __future__ import annotations

import csv
import ctypes
import gc
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

__all__ = [
    "RESULT_MARKER", "STATUSES", "MIB", "GIB", "DTYPES", "MEMORY_PHASE_ENV",
    "proc_status", "rss_bytes", "hwm_bytes", "reset_peak_rss", "mem_available_bytes",
    "torch_dtype", "is_oom", "worker_setup", "device_description", "time_steps", "peak_memory", "measure",
    "tensor_bytes", "worker_main", "run_config", "run_measured", "default_mem_limit_bytes",
    "cpu_model", "machine_info", "machine_header",
    "write_csv", "write_json", "markdown_table", "fmt_time", "fmt_mib", "ratio", "fmt_ratio", "cell", "value",
    "plot_panels", "log",
]

RESULT_MARKER = "@@LONGDOC_BENCH_RESULT@@"
STATUSES = ("ok", "skipped", "timeout", "oom", "error")
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


# ----------------------------------------------------------------------------------------------
# parent side: launching workers
# ----------------------------------------------------------------------------------------------


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker's own session: only what we started
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _script_args(script: str | Path | Sequence[str]) -> list[str]:
    """Interpreter arguments that start a worker: ``[script]`` for a path, the sequence itself otherwise."""
    if isinstance(script, (str, Path)):
        return [str(script)]
    args = [str(a) for a in script]
    if not args:
        raise ValueError("script must be a path or a non-empty sequence of interpreter arguments, "
                         "e.g. ['-m', 'longdoc.evaluation.efficiency']")
    return args


def run_config(script: str | Path | Sequence[str], cfg: Mapping, *, timeout: float, mem_limit_bytes: int | None = None,
               poll_s: float = 0.05, echo_stderr: bool = False, env: Mapping[str, str] | None = None) -> dict:
    """Run ``python <script> --worker '<json cfg>'`` in a fresh process and return its result dict.

    ``script``: a script path, or a sequence of interpreter arguments (``["-m", "package.module"]``).

    The child runs in its own session (process group). It is killed when it runs longer than
    ``timeout`` seconds (``status='timeout'``) or when its resident set exceeds ``mem_limit_bytes``
    (``status='oom'``, polled every ``poll_s`` seconds; a spike shorter than that can slip through,
    which is why workers also report their own VmHWM). A child that dies from SIGKILL without a
    result (the kernel OOM killer) is ``oom``; other deaths are ``error`` with the last stderr line.
    Always returns a dict with at least ``status``, ``wall_s`` and ``note``.
    """
    cmd = [sys.executable, *_script_args(script), "--worker", json.dumps(dict(cfg))]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, start_new_session=True, text=True,
                                env={**os.environ, **env} if env else None)
        killed_for = None
        max_rss = 0
        try:
            while True:
                try:
                    proc.wait(timeout=poll_s)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if time.perf_counter() - t0 > timeout:
                    killed_for = "timeout"
                    _kill_group(proc)
                    break
                if mem_limit_bytes:
                    rss = rss_bytes(proc.pid)
                    max_rss = max(max_rss, rss)
                    if rss > mem_limit_bytes:
                        killed_for = "mem_limit"
                        _kill_group(proc)
                        break
        except BaseException:  # Ctrl-C etc.: the worker has its own session and would outlive us
            _kill_group(proc)
            raise
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if echo_stderr and stderr.strip():
        sys.stderr.write(stderr)
    if killed_for == "timeout":
        return {"status": "timeout", "wall_s": wall, "note": f"killed after {timeout:.0f} s"}
    if killed_for == "mem_limit":
        return {"status": "oom", "wall_s": wall,
                "note": f"RSS {max_rss / MIB:.0f} MiB exceeded the limit {mem_limit_bytes / MIB:.0f} MiB"}
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            res = json.loads(line[len(RESULT_MARKER):])
            res["wall_s"] = wall
            res.setdefault("note", "")
            return res
    tail = [ln for ln in stderr.strip().splitlines() if ln.strip()][-1:] or [""]
    if proc.returncode == -signal.SIGKILL:
        return {"status": "oom", "wall_s": wall, "note": "killed by SIGKILL (kernel OOM killer?) " + tail[0][:200]}
    status = "oom" if any(s in stderr for s in ("MemoryError", "can't allocate memory", "out of memory")) else "error"
    return {"status": status, "wall_s": wall, "note": f"exit code {proc.returncode}: {tail[0][:300]}"}


def run_measured(script: str | Path | Sequence[str], cfg: Mapping, *, timeout: float, mem_limit_bytes: int | None = None,
                 phases: Sequence[str] | None = None, memory_env: Mapping[str, str] | None = MEMORY_PHASE_ENV) -> dict:
    """Measure one configuration: on CPU a timing process, then a memory process (its own glibc
    settings, :data:`MEMORY_PHASE_ENV`); on CUDA one process doing both. Results are merged; the
    status is the first one that is not 'ok' (a failed phase skips the rest). ``wall_s`` sums the
    processes, each of which gets ``timeout`` seconds. ``memory_env``: the CPU memory process's extra
    environment (``None``: none).
    """
    cuda = str(cfg.get("device", "cpu")).startswith("cuda")
    phases = list(phases or (["all"] if cuda else ["time", "memory"]))
    merged: dict = {"status": "ok", "note": "", "wall_s": 0.0}
    for phase in phases:
        res = run_config(script, {**cfg, "phase": phase}, timeout=timeout, mem_limit_bytes=mem_limit_bytes,
                         env=memory_env if (phase == "memory" and not cuda) else None)
        wall = merged["wall_s"] + res.pop("wall_s", 0.0)
        merged.update({k: v for k, v in res.items() if k not in ("status", "note")})
        merged["wall_s"] = wall
        if res["status"] != "ok":
            merged["status"] = res["status"]
            merged["note"] = f"{phase} phase: {res.get('note', '')}"
            break
    return merged


def default_mem_limit_bytes(fraction: float = 0.9) -> int | None:
    """A protective RSS limit for CPU workers: ``fraction`` of the memory available right now."""
    avail = mem_available_bytes()
    return int(avail * fraction) if avail else None


# ----------------------------------------------------------------------------------------------
# machine description
# ----------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str, dtype: str, device_name: str | None = None) -> dict:
    """CPU model, core counts, memory, library versions and device of this machine."""
    import torch

    try:
        import transformers

        tf_version = transformers.__version__
    except ImportError:
        tf_version = "not installed"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem_total = 0
    try:
        with open("/proc/meminfo") as fh:
            mem_total = int(fh.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable,
        "mem_total_gib": round(mem_total / GIB, 1), "python": platform.python_version(),
        "torch": torch.__version__, "transformers": tf_version, "device": device,
        "device_name": device_name or device, "dtype": dtype,
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def machine_header(info: Mapping) -> str:
    """One line describing the machine, e.g. for the top of a markdown report."""
    return (f"Machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
            f"{info['mem_total_gib']} GiB RAM; torch {info['torch']}, transformers {info['transformers']}, "
            f"python {info['python']}; device {info['device']} = {info['device_name']}; dtype {info['dtype']}"
            + (f"; load average {info['load_avg_1m']} at start" if info.get("load_avg_1m") is not None else ""))


# ----------------------------------------------------------------------------------------------
# outputs
# ----------------------------------------------------------------------------------------------


def write_csv(path: str | Path, rows: Sequence[Mapping], fields: Sequence[str]) -> None:
    """Write ``rows`` with ``fields`` first (other keys appended in first-seen order); floats as %.6g."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = list(fields)
    for r in rows:
        for k in r:
            if k not in cols and not isinstance(r[k], (list, dict)):
                cols.append(k)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v)) for k, v in r.items()})


def write_json(path: str | Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=str) + "\n")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub markdown table; the first column is left-aligned, the others right-aligned."""
    header = [str(h) for h in header]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def fmt_time(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s"


def fmt_mib(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.0f}" if abs(x) >= 10 else f"{x:.1f}"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0 or a < 0:
        return None
    return a / b


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def cell(row: Mapping | None, key: str, fmt: Callable[[float | None], str]) -> str:
    """Format ``row[key]`` for a table: the value for status 'ok', else the status itself."""
    if row is None:
        return "-"
    if row.get("status") != "ok":
        return str(row.get("status", "-"))
    return fmt(row.get(key))


def value(row: Mapping | None, key: str) -> float | None:
    """``row[key]`` as float when the row is 'ok', else None."""
    if row is None or row.get("status") != "ok" or row.get(key) in (None, ""):
        return None
    return float(row[key])


def plot_panels(path: str | Path, panels: Sequence[dict], title: str = "") -> bool:
    """Save side-by-side log-log line plots.

    Each panel: ``{"title", "xlabel", "ylabel", "series": {label: [(x, y), ...]}, "logx": True,
    "logy": True, "xticks": [...]}``. Points with y None are dropped. Returns False (and writes
    nothing) when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot written", file=sys.stderr)
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.8), squeeze=False)
    for ax, p in zip(axes[0], panels):
        for label, pts in p["series"].items():
            pts = [(x, y) for x, y in pts if y is not None and y > 0]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", label=label)
        if p.get("logx", True):
            ax.set_xscale("log", base=2)
        if p.get("logy", True):
            ax.set_yscale("log")
        if p.get("xticks"):
            ax.set_xticks(p["xticks"])
            ax.set_xticklabels([str(x) for x in p["xticks"]])
        ax.set_title(p.get("title", ""))
        ax.set_xlabel(p.get("xlabel", ""))
        ax.set_ylabel(p.get("ylabel", ""))
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        import textwrap

        fig.suptitle(textwrap.fill(title, 90 * len(panels)), fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
