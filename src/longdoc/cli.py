"""Command-line entry points: ``longdoc-train`` / ``longdoc-evaluate`` (console scripts) and the repository's
``train.py`` / ``evaluate.py``, all composing the configuration shipped in the package (``pkg://longdoc.conf``),
so they work from any directory after a non-editable ``pip install``.

Around Hydra's own handling:

* before Hydra composes anything, every ``group=option`` on the command line whose group is a config-group folder
  of ``longdoc/conf`` (``experiment``, ``data``, ``hydra/launcher``, ...) is checked: an option that does not exist
  ends the command with exit code 2 and one message naming the value, the close matches and every option of the
  group, nested ones (``lra/listops``) included (:func:`check_group_choices`); no directory is created;
* a :class:`longdoc.config.ConfigError` raised by the task prints ``Error: <message>`` on stderr (the traceback
  only with ``HYDRA_FULL_ERROR=1``, as Hydra does) and exits with code 2, and the run directory Hydra created for
  it is removed again when it holds nothing but Hydra's own files (:func:`remove_unused_run_dir`). In a multirun
  the failing job is logged and kept, the other jobs run, and the sweep then fails with the first error.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import hydra
from hydra.errors import CompactHydraException
from omegaconf import DictConfig

from .checks import ConfigError
from .resolvers import created_run_dirs, register_resolvers

register_resolvers()

log = logging.getLogger("longdoc")

#: The package holding the configuration (``config_path`` of the entry points).
CONF_PACKAGE = "longdoc.conf"
#: Exit code of a command stopped by a configuration error (argparse's code for bad arguments).
CONFIG_ERROR_EXIT = 2
#: What Hydra writes into a run directory before the task function runs: ``<output_subdir>/`` with these files,
#: and ``<job name>.log``.
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


class ConfigErrorInJob(CompactHydraException):
    """A :class:`longdoc.config.ConfigError` of one multirun job, handed to Hydra so that it is reported as the
    sweep's error in one line (Hydra prints a ``CompactHydraException`` without its traceback)."""


class _State:
    """This process: when it started, the run directory absent at start (``hydra.run.dir=<path>`` given on the
    command line), whether a configuration error stopped a job."""

    started = time.time()
    absent_run_dir: str | None = None
    config_error = False


# ---------------------------------------------------------------------------------------------------------------
# group=option checked before Hydra composes


def group_options(package: str = CONF_PACKAGE) -> dict[str, list[str]]:
    """Every config-group folder of ``package`` (``experiment``, ``experiment/lra``, ``hydra/launcher``, ...) and
    its options: the ``*.yaml`` files at any depth below it, named by their path without ``.yaml``
    (``listops_lsh_deep``, ``lra/listops``), sorted."""
    groups: dict[str, list[str]] = {}

    def walk(folder: Any, prefix: str) -> list[str]:
        options = []
        for entry in folder.iterdir():
            name = entry.name
            if name.startswith(("_", ".")):
                continue
            if entry.is_dir():
                sub = walk(entry, f"{prefix}{name}/")
                options += [f"{name}/{option}" for option in sub]
            elif name.endswith(".yaml") and prefix:
                options.append(name[: -len(".yaml")])
        if prefix:
            groups[prefix.rstrip("/")] = sorted(options)
        return options

    walk(resources.files(package), "")
    return dict(sorted(groups.items()))


def _hydra_group_options(group: str, config_name: str, searchpath: list[str]) -> list[str] | None:
    """The options Hydra itself knows for ``group``: the package's and those of its plugins (e.g.
    ``hydra/launcher=submitit_local``) and of ``hydra.searchpath``; None when Hydra cannot list them."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    try:
        with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
            return list(GlobalHydra.instance().config_loader().get_group_options(
                group, config_name=config_name, overrides=searchpath))
    except Exception:  # noqa: BLE001 - Hydra reports its own problems when it composes
        return None


def _chosen(value: Any) -> list[str] | None:
    """The option names an override value selects, or None when it is not simply checkable (interpolations,
    globs, ranges, non-strings)."""
    from hydra.core.override_parser.types import ChoiceSweep

    if isinstance(value, ChoiceSweep):
        value = value.list
    values = value if isinstance(value, list) else [value]
    if value is None or not values or not all(isinstance(v, str) and "${" not in v for v in values):
        return None
    return values


def close_matches(value: str, options: Iterable[str], n: int = 5) -> list[str]:
    """The options closest to ``value`` (:mod:`difflib`), comparing with the whole name (``lra/listops``) and with
    its last part (``listops``), best first."""
    scores = {}
    for option in options:
        tail = option.rsplit("/", 1)[-1]
        scores[option] = max(difflib.SequenceMatcher(None, value, option).ratio(),
                             difflib.SequenceMatcher(None, value.rsplit("/", 1)[-1], tail).ratio())
    return [o for o in sorted(scores, key=lambda o: -scores[o]) if scores[o] >= 0.6][:n]


def parse_command_line(argv: Sequence[str]) -> tuple[Any, list[Any]] | None:
    """``(flags, overrides)`` of a command line, parsed as ``hydra.main`` parses it (Hydra's argument parser, then
    its override parser: :class:`hydra.core.override_parser.types.Override` objects); None when either refuses it
    (Hydra then reports the error itself)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    def refuse(message: str) -> None:
        raise ValueError(message)

    try:
        from hydra._internal.utils import get_args_parser

        parser = get_args_parser()
        parser.error = refuse  # type: ignore[method-assign]  # instead of printing usage and exiting
        args = parser.parse_args(list(argv))
        return args, OverridesParser.create().parse_overrides(args.overrides)
    except Exception:  # noqa: BLE001 - argument / override syntax errors are Hydra's to report
        return None


def check_group_choices(argv: Sequence[str], config_name: str, package: str = CONF_PACKAGE) -> str | None:
    """Check the ``group=option`` overrides of a command line (Hydra's own argument and override parsers) against
    the config groups of ``package``; ``+group=option`` / ``++group=option``, ``group@pkg=option``, lists and
    ``a,b`` / ``choice(a,b)`` sweeps too. Deletions (``~group``), interpolations, globs, ranges and keys that are no
    group folder are left to Hydra, as are command lines with ``--config-path`` (another config tree) and options
    missing from the package under ``--config-dir``. An option not in the package is looked up in Hydra's search
    path before it is refused (plugins' options such as ``hydra/launcher=submitit_local``, ``hydra.searchpath``).

    Returns:
        None when every checked option exists, else the error message: the override, the close matches and every
        option of the group.
    """
    parsed = parse_command_line(argv)
    if parsed is None:
        return None
    args, overrides = parsed
    if args.config_path is not None or args.shell_completion or args.experimental_rerun is not None:
        return None
    groups = group_options(package)
    searchpath = [o.input_line for o in overrides if o.get_key_element() == "hydra.searchpath"]
    for override in overrides:
        group = override.key_or_group.lstrip("/")
        if override.is_delete() or group not in groups:
            continue
        values = _chosen(override.value())
        for value in values or ():
            if value in groups[group]:
                continue
            if args.config_dir is not None:
                return None  # another config directory may hold it: Hydra decides
            known = _hydra_group_options(group, args.config_name or config_name, searchpath)
            if known is None or value in known:
                continue
            options = sorted(set(groups[group]) | set(known))
            similar = close_matches(value, options)
            hint = f"; did you mean {' or '.join(similar)}?" if similar else ""
            where = f"longdoc/conf/{group}/" + (" and Hydra's plugins" if set(known) - set(groups[group]) else "")
            return (f"{override.input_line}: the config group {group} has no option {value!r}{hint}\n"
                    f"  options of {group} (the YAML files under {where}): {', '.join(options)}")
    return None


def note_absent_run_dir(argv: Sequence[str]) -> None:
    """Remember a ``hydra.run.dir=<path>`` of the command line that does not exist yet (before Hydra creates it):
    the run directory this process may remove again after a configuration error."""
    parsed = parse_command_line(argv)
    for override in parsed[1] if parsed else ():
        if override.get_key_element() == "hydra.run.dir" and isinstance(override.value(), str):
            path = str(override.value())
            if "${" not in path and not os.path.lexists(path):
                _State.absent_run_dir = os.path.abspath(path)


# ---------------------------------------------------------------------------------------------------------------
# configuration errors raised by the task


def _close_file_logs(run_dir: Path) -> None:
    """Close and detach every logging file handler writing inside ``run_dir`` (Hydra's ``<job name>.log``)."""
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for handler in list(lg.handlers):
            name = getattr(handler, "baseFilename", None)
            if name and Path(name).resolve().is_relative_to(run_dir):
                lg.removeHandler(handler)
                handler.close()


def remove_unused_run_dir(run_dir: str | os.PathLike, job_name: str, output_subdir: str | None = ".hydra",
                          created: Iterable[str] = (), since: float = 0.0) -> bool:
    """Remove the run directory Hydra made for a job that stopped at a configuration error, with the log file
    handlers writing into it (closed first), if and only if it is safe:

    * this process created it: it is one of ``created`` (directories that did not exist when the process
      started: :func:`longdoc.resolvers.created_run_dirs`, or a ``hydra.run.dir=<path>`` absent at start), so a
      directory that existed before (a resumed run's, one given with ``hydra.run.dir``) is never removed;
    * it holds nothing but ``<output_subdir>/{config,hydra,overrides}.yaml`` and ``<job_name>.log``, every one
      written at or after ``since`` (the process's start).

    Returns:
        Whether it was removed (False: kept as it is, e.g. it holds a checkpoint or another file).
    """
    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir() or str(run_dir) not in {str(Path(p).resolve()) for p in created}:
        return False
    allowed = {run_dir / f"{job_name}.log"}
    sub = run_dir / output_subdir if output_subdir else None
    if sub is not None:
        allowed |= {sub / name for name in HYDRA_FILES}
    found = [p for p in run_dir.rglob("*")]
    files = [p for p in found if not p.is_dir() or p.is_symlink()]
    folders = [p for p in found if p.is_dir() and not p.is_symlink()]
    if any(p not in allowed for p in files) or any(p != sub for p in folders):
        return False
    if any(p.stat().st_mtime < since - 2.0 for p in files):  # 2 s: coarse file system clocks
        return False
    _close_file_logs(run_dir)
    try:
        for path in files:
            path.unlink()
        for folder in folders:
            folder.rmdir()
        run_dir.rmdir()  # fails when something appeared meanwhile: then it stays
    except OSError:
        return False
    return True


def _handle_config_error(err: Exception) -> None:
    """Report ``err`` (a ConfigError from the task) the way the module docstring describes; returns only in a
    multirun or under ``HYDRA_FULL_ERROR=1``, where the caller re-raises."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    _State.config_error = True
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        log.error("configuration error in job #%s (%s): %s", hc.job.num, " ".join(hc.overrides.task), err)
        return
    created = [*created_run_dirs(), *([_State.absent_run_dir] if _State.absent_run_dir else [])]
    remove_unused_run_dir(hc.runtime.output_dir, hc.job.name, hc.output_subdir, created, _State.started)
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return
    sys.stderr.write(f"Error: {err}\n")
    sys.stderr.flush()
    sys.exit(CONFIG_ERROR_EXIT)


def _run_task(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """``task(cfg)``, with a ConfigError handled by :func:`_handle_config_error`."""
    try:
        return task(cfg)
    except ConfigError as err:
        _handle_config_error(err)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        raise ConfigErrorInJob(f"Error: {err}") from None


def _main(hydra_main: Callable[[], Any], config_name: str) -> Any:
    """Check the command line's group choices, then run ``hydra_main``; exit code 2 for a configuration error."""
    message = check_group_choices(sys.argv[1:], config_name)
    if message:
        sys.stderr.write(f"Error: {message}\n")
        sys.exit(CONFIG_ERROR_EXIT)
    note_absent_run_dir(sys.argv[1:])
    try:
        return hydra_main()
    except SystemExit as exit_:
        if exit_.code == 1 and _State.config_error:  # Hydra reported a multirun job's ConfigErrorInJob
            raise SystemExit(CONFIG_ERROR_EXIT) from None
        raise
    except Exception:  # reaches here only under HYDRA_FULL_ERROR=1: Hydra re-raises instead of printing
        if not _State.config_error:
            raise
        traceback.print_exc()
        sys.exit(CONFIG_ERROR_EXIT)


def _train_task(cfg: DictConfig) -> float | None:
    from .train import optimized_value, train

    return optimized_value(cfg, train(cfg))


def _evaluate_task(cfg: DictConfig) -> None:
    from .evaluate import evaluate

    evaluate(cfg)


@hydra.main(version_base="1.3", config_path="pkg://longdoc.conf", config_name="train")
def _hydra_train(cfg: DictConfig) -> float | None:
    return _run_task(_train_task, cfg)


@hydra.main(version_base="1.3", config_path="pkg://longdoc.conf", config_name="evaluate")
def _hydra_evaluate(cfg: DictConfig) -> None:
    return _run_task(_evaluate_task, cfg)


def train_main(cfg: DictConfig | None = None) -> float | None:
    """``longdoc-train [group=option ...] [key=value ...]``: train, test the best checkpoint, and return the best
    validation value of ``optimized_metric`` to a sweeper (never a test metric). With ``cfg`` (a composed config):
    run on it directly, without Hydra.

    Raises:
        SystemExit: code 2 for a group option that does not exist or a :class:`longdoc.config.ConfigError` (see
            the module docstring), Hydra's code 1 for its own errors and other exceptions.
    """
    if cfg is not None:
        return _train_task(cfg)
    return _main(_hydra_train, "train")


def evaluate_main(cfg: DictConfig | None = None) -> None:
    """``longdoc-evaluate mode=<metrics|lra_table|efficiency|attention_pattern> ...``; with ``cfg``: run on it
    directly, without Hydra.

    Raises:
        SystemExit: as :func:`train_main`.
    """
    if cfg is not None:
        return _evaluate_task(cfg)
    return _main(_hydra_evaluate, "evaluate")
