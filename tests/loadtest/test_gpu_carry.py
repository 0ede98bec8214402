"""The GPU payload's journey: tar → parts → consecutive calls → reassembled, hash-checked, installed."""

from __future__ import annotations

import ensurepip
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from core import carry


def _fake_wheel(folder: Path) -> Path:
    """A minimal, valid pure-Python wheel (fake_gpu_pkg 0.1) built by hand."""
    files = {
        "fake_gpu_pkg/__init__.py": "ANSWER = 42\n",
        "fake_gpu_pkg-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: fake-gpu-pkg\nVersion: 0.1\n",
        "fake_gpu_pkg-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{name},sha256={_b64(text)},{len(text)}" for name, text in files.items()]
    record.append("fake_gpu_pkg-0.1.dist-info/RECORD,,")
    path = folder / "fake_gpu_pkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        for name, text in files.items():
            whl.writestr(name, text)
        whl.writestr("fake_gpu_pkg-0.1.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def _b64(text: str) -> str:
    import base64

    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()


def _real_wheel() -> Path:
    """pip's own wheel, as CPython ships it for ensurepip: a real wheel on every machine, no network."""
    bundled = sorted((Path(ensurepip.__file__).parent / "_bundled").glob("pip-*.whl"))
    if not bundled:
        pytest.skip("this Python has no ensurepip wheels (a distribution stripped them)")
    return bundled[-1]


@pytest.fixture
def payload(tmp_path) -> Path:
    root = tmp_path / "payload-src"
    (root / carry.WHEELS_DIR).mkdir(parents=True)
    _fake_wheel(root / carry.WHEELS_DIR)
    real = _real_wheel()
    (root / carry.WHEELS_DIR / real.name).write_bytes(real.read_bytes())
    (root / "bundles" / "cross").mkdir(parents=True)
    (root / "bundles" / "cross" / "model.onnx").write_bytes(bytes(range(256)) * 4000)  # ~1 MB, not text
    return root


def _carry_call(split_dir: Path, parts: list[str], call_dir: Path) -> Path:
    """What one device call brings: the manifest and the named parts, nothing else."""
    call_dir.mkdir(parents=True)
    for name in [carry.MANIFEST_FILE, *parts]:
        (call_dir / name).write_bytes((split_dir / name).read_bytes())
    return call_dir


def test_parts_over_consecutive_calls_reassemble_check_and_install(payload, tmp_path):
    members = carry.make_tar(payload, tmp_path / carry.TAR_FILE)
    split_dir = tmp_path / "split"
    manifest = carry.split(tmp_path / carry.TAR_FILE, split_dir, members, part_bytes=400_000)
    names = [p["file"] for p in manifest.parts]
    assert len(names) >= 3 and all(p["bytes"] <= 400_000 for p in manifest.parts)
    assert (
        sum(p["bytes"] for p in manifest.parts)
        == manifest.whole["bytes"]
        == (tmp_path / carry.TAR_FILE).stat().st_size
    )
    assert manifest.whole["sha256"] == carry.sha256_of(tmp_path / carry.TAR_FILE)

    into = tmp_path / "device"
    first = carry.receive(_carry_call(split_dir, names[:1], tmp_path / "call-1"), into)
    assert first.payload is None and first.have == names[:1] and first.missing == names[1:]
    # The rest arrive in later calls, last part first: order of arrival does not matter.
    carry.receive(_carry_call(split_dir, names[-1:], tmp_path / "call-2"), into)
    last = carry.receive(_carry_call(split_dir, names[1:-1], tmp_path / "call-3"), into)
    assert last.payload is not None and last.missing == []
    for name, digest in members.items():
        assert carry.sha256_of(last.payload / name) == digest
    assert not (into / carry.TAR_FILE).exists()  # the tar is removed once extracted

    installed = carry.install(last.payload, into / carry.SITE_DIR)
    assert sorted(installed) == sorted(p.name for p in (payload / carry.WHEELS_DIR).glob("*.whl"))
    probe = "import fake_gpu_pkg, pip; print(fake_gpu_pkg.ANSWER, pip.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(into / carry.SITE_DIR), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    answer, pip_file = done.stdout.split()
    assert answer == "42" and Path(pip_file).is_relative_to(into / carry.SITE_DIR)


def test_cross_install_for_the_gpu_python_chooses_its_wheels(payload, tmp_path):
    """The dry run installs for python 3.12 manylinux from this interpreter, as the GPU machine would."""
    target = tmp_path / "site"
    carry.install(payload, target, cross=True)
    assert (target / "fake_gpu_pkg" / "__init__.py").is_file()
    assert list(target.glob("pip-*.dist-info"))


def test_a_damaged_part_is_refused_with_its_name(payload, tmp_path):
    members = carry.make_tar(payload, tmp_path / carry.TAR_FILE)
    split_dir = tmp_path / "split"
    manifest = carry.split(tmp_path / carry.TAR_FILE, split_dir, members, part_bytes=400_000)
    call = _carry_call(split_dir, [p["file"] for p in manifest.parts], tmp_path / "call")
    damaged = call / manifest.parts[1]["file"]
    data = bytearray(damaged.read_bytes())
    data[100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(carry.CarryError, match=manifest.parts[1]["file"]):
        carry.receive(call, tmp_path / "device")


def test_a_new_payload_discards_the_parts_of_the_old_one(payload, tmp_path):
    members = carry.make_tar(payload, tmp_path / carry.TAR_FILE)
    old = carry.split(tmp_path / carry.TAR_FILE, tmp_path / "old", members, part_bytes=400_000)
    into = tmp_path / "device"
    carry.receive(_carry_call(tmp_path / "old", [old.parts[0]["file"]], tmp_path / "c1"), into)
    (payload / "extra.txt").write_text("changed payload\n")
    members = carry.make_tar(payload, tmp_path / carry.TAR_FILE)
    new = carry.split(tmp_path / carry.TAR_FILE, tmp_path / "new", members, part_bytes=400_000)
    got = carry.receive(_carry_call(tmp_path / "new", [new.parts[1]["file"]], tmp_path / "c2"), into)
    assert got.have == [new.parts[1]["file"]]  # the old payload's first part was not kept


def test_receive_cli_says_which_part_comes_next(payload, tmp_path, capsys):
    members = carry.make_tar(payload, tmp_path / carry.TAR_FILE)
    manifest = carry.split(tmp_path / carry.TAR_FILE, tmp_path / "split", members, part_bytes=400_000)
    call = _carry_call(tmp_path / "split", [manifest.parts[0]["file"]], tmp_path / "call")
    assert carry.main(["receive", "--carried", str(call), "--into", str(tmp_path / "device")]) == 3
    assert manifest.parts[1]["file"] in capsys.readouterr().out
    json.loads((tmp_path / "device" / carry.MANIFEST_FILE).read_text())  # kept for the next call


@pytest.mark.slow
def test_carried_wheels_cover_what_the_service_imports():
    """Every distribution a serving process imports is carried, on the GPU image, or an optional import."""
    from loadtest.gpu import prepare

    script = """
import sys, importlib.metadata as md
import distill.cli, service.server, uvicorn.loops.auto, uvicorn.protocols.http.auto, uvicorn.lifespan.on
from service.settings import Settings
from service.app import create_app
from service.scorer import Scorer
from service.state import app_state
import loadtest.gpu.run, loadtest.bench, distill.baselines.bundle, distill.export.checks
settings = Settings(bundle="models/minilm-zero-shot-bi", provider="cpu")
app = create_app(settings)
Scorer(settings, app_state(app).metrics).check()
names = md.packages_distributions()
print(sorted({d.lower().replace("_", "-") for m in list(sys.modules) for d in names.get(m.split(".")[0], [])}))
"""
    if not Path("models/minilm-zero-shot-bi/bundle.json").is_file():
        pytest.skip("models/minilm-zero-shot-bi not built (make default-bundle)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    imported = set(eval(done.stdout.strip().splitlines()[-1]))  # noqa: S307 - our own subprocess' list
    known = set(prepare.CARRIED_DISTRIBUTIONS) | set(prepare.GPU_IMAGE_HAS) | set(prepare.OPTIONAL_IMPORTS)
    known |= {"relevance-distill", "onnxruntime"}  # the source tree travels; onnxruntime-gpu replaces it
    assert imported - known == set()
