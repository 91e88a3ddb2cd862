"""The installable package: a wheel built from the repository, installed without `-e` into a fresh virtualenv, runs
`longdoc-train` and `longdoc-evaluate` from an empty directory (configuration shipped inside the package, once: the
repository's root `conf` link to `src/longdoc/conf` adds no second copy to the wheel or the source distribution)."""

import os
import shutil
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_and_runs_from_an_empty_directory(tmp_path, data_dir):
    source = tmp_path / "source"  # a copy, so that setuptools' build/ directory stays out of the checkout
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    os.symlink(os.readlink(ROOT / "conf"), source / "conf")  # the root conf/ -> src/longdoc/conf link, as committed
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(source)], check=True, timeout=600)
    (wheel,) = dist.glob("longdoc-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    # every configuration file of the package, once, under longdoc/conf/; the root link adds no top-level conf/
    shipped = sorted(n for n in names if n.endswith(".yaml"))
    expected = sorted(f"longdoc/conf/{p.relative_to(ROOT / 'src' / 'longdoc' / 'conf').as_posix()}"
                      for p in (ROOT / "src" / "longdoc" / "conf").rglob("*.yaml"))
    assert "longdoc/conf/train.yaml" in expected and "longdoc/conf/attention/lsh.yaml" in expected
    assert shipped == expected
    assert len(names) == len(set(names)) and not [n for n in names if n.split("/")[0] == "conf"]
    # the source distribution (python -m build; `wheel`, a build requirement pip does not need, may be absent) holds
    # the configuration once, inside the package
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--skip-dependency-check", "-o",
                    str(tmp_path / "sdist"), str(source)], check=True, timeout=600, capture_output=True)
    (sdist,) = (tmp_path / "sdist").glob("longdoc-*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = [m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name]
    assert sorted(m for m in members if m.endswith(".yaml")) == [f"src/{n}" for n in expected]
    assert not [m for m in members if m.split("/")[0] == "conf"]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    # the dependencies (torch, Lightning, ...) come from this environment's site-packages, added as a plain path:
    # its .pth files (among them the editable install of longdoc) are not run, so only the wheel provides longdoc
    venv_site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip()
    (Path(venv_site) / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   timeout=600)

    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_", "PYTHONPATH"))}
    where = subprocess.run([str(py), "-c", "import longdoc; print(longdoc.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(venv_site), where  # the wheel's copy, not the repository's source
    tiny = ["data.num_train=64", "data.num_val=16", "data.num_test=16", "data.min_length=10", "data.max_length=30",
            "model.d_model=16", "model.n_heads=2", "model.d_ff=32", f"paths.data_dir={data_dir}",
            "trainer.enable_progress_bar=false"]
    train = subprocess.run([str(venv / "bin" / "longdoc-train"), "trainer.fast_dev_run=true", *tiny], cwd=work,
                           env=env, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
    assert list(work.glob("outputs/train/runs/*/metrics.json"))
    pattern = subprocess.run([str(venv / "bin" / "longdoc-evaluate"), "mode=attention_pattern", "pattern.length=32"],
                             cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert pattern.returncode == 0, pattern.stdout[-2000:] + pattern.stderr[-2000:]
    assert list(work.glob("outputs/evaluate/runs/*/*.png"))
