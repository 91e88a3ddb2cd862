"""The parent side of a measurement: every configuration in its own fresh Python process.

* **Process isolation.** :func:`run_config` starts ``python <script> --worker '<json config>'`` (or
  ``python -m <module> --worker ...``) in its own session, so nothing leaks from one configuration into the
  next: allocator caches, the glibc heap, oneDNN/MKL scratch buffers, CUDA context, compiled kernels. It
  enforces a wall-clock timeout (status ``timeout``) and, optionally, a resident-memory limit by polling the
  child's ``VmRSS`` (status ``oom``), and kills the child's whole process group (only the process it started).
  A child killed by SIGKILL (the kernel's OOM killer) or one that raised ``MemoryError`` / an allocator error
  is recorded as ``oom``.
* **Two phases per configuration** (:func:`run_measured`). On CPU, time and memory are measured in two
  separate fresh processes, the memory one under :data:`longdoc.evaluation.measure.MEMORY_PHASE_ENV` (glibc
  settings that make resident memory follow the live allocations but would slow the timed steps down); on
  CUDA one process does both.

The worker side is :mod:`.measure` (:func:`~longdoc.evaluation.measure.worker_main` prints the result line
read here). Importing this module imports only the standard library.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .measure import MEMORY_PHASE_ENV, MIB, RESULT_MARKER, mem_available_bytes, rss_bytes

__all__ = ["STATUSES", "run_config", "run_measured", "default_mem_limit_bytes"]

STATUSES = ("ok", "skipped", "timeout", "oom", "error")  # the ``status`` of a measured (or skipped) configuration


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
