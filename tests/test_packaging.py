"""Packaging as a GPU-cluster user meets it: ranges, not pins, and no torch replaced.

The metadata is read from the wheel pip builds from this checkout (what an
install records), not from the source files.
"""
import email
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
NGC_TORCH = "2.8.0a0+5228986c39.nv25.05"  # the form of an NGC PyTorch container's build


@pytest.fixture(scope="module")
def metadata(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(ROOT)], check=True, cwd=out)
    (whl,) = out.glob("megatron_sicog-*.whl")
    with zipfile.ZipFile(whl) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(z.read(name))


def _requirements(metadata):
    reqs = [Requirement(r) for r in metadata.get_all("Requires-Dist")]
    return {r.name: r for r in reqs if r.marker is None}


def test_python_range_admits_3_10_to_3_12(metadata):
    from packaging.specifiers import SpecifierSet

    spec = SpecifierSet(metadata["Requires-Python"])
    assert all(Version(v) in spec for v in ("3.10.12", "3.11.7", "3.12.3")), spec


def test_torch_range_admits_releases_and_container_builds(metadata):
    torch_req = _requirements(metadata)["torch"]
    # pip accepts an installed pre-release that meets the range (prereleases=True), which is how
    # it keeps an NGC torch instead of downloading a release over it
    for v in ("2.6.0", "2.11.0", "2.13.0", NGC_TORCH):
        assert torch_req.specifier.contains(v, prereleases=True), (v, str(torch_req))


def test_no_exact_pins_in_install_requires(metadata):
    pinned = [str(r) for r in _requirements(metadata).values() if any(s.operator == "==" for s in r.specifier)]
    assert not pinned, f"exact pins in install_requires replace users' packages: {pinned}"


def test_constraints_pin_what_requirements_range(metadata):
    """The demo's exact versions (constraints.txt) lie inside the ranges an install accepts."""
    reqs = _requirements(metadata)
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            r = Requirement(line)
            pins[r.name] = next(iter(r.specifier)).version
    for name, req in reqs.items():
        assert name in pins, f"{name} has no pin in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (name, pins[name], str(req))


def test_no_deps_install_keeps_the_environments_torch(tmp_path):
    """`pip install --no-deps -e .` into a venv that has its own torch: torch untouched, package imports."""
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    # the venv "already has" this interpreter's packages (torch included), as a container would
    site = subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   text=True).strip()
    import torch

    theirs = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "outer.pth").write_text("\n".join(theirs) + "\n")
    before = subprocess.check_output([str(py), "-c", "import torch; print(torch.__version__, torch.__file__)"],
                                     text=True).strip()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "-e", str(ROOT)], check=True, env=env, cwd=tmp_path)
    after = subprocess.check_output(
        [str(py), "-c", "import torch, megatron_sicog.runtime as r; print(torch.__version__, torch.__file__); "
                        "print(r.__file__)"], text=True, env=env, cwd=tmp_path).strip().splitlines()
    assert after[0] == before == f"{torch.__version__} {torch.__file__}"
    assert after[1] == str(ROOT / "megatron_sicog" / "runtime.py")
    assert not list(Path(site).glob("torch*")), "pip installed a torch of its own"
