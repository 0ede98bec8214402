"""core/carry.py's packing side, shared by both GPU recipes: pack (tar, split, the device calls) and
download_wheels (one wheel per distribution). The reassembly side is in tests/loadtest/test_gpu_carry.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import carry


def test_pack_splits_the_payload_and_prints_one_device_call_per_part(tmp_path: Path) -> None:
    source = tmp_path / "payload"
    (source / "data").mkdir(parents=True)
    (source / "data" / "a.bin").write_bytes(b"x" * 1000)
    (source / "b.txt").write_text("hello")
    lines: list[str] = []
    manifest = carry.pack(source, tmp_path / "carry", "bash some/on_device.sh", log=lines.append)
    assert set(manifest.members) == {"data/a.bin", "b.txt"} and len(manifest.parts) == 1
    assert (tmp_path / "carry" / carry.MANIFEST_FILE).is_file() and not (
        tmp_path / "carry" / carry.TAR_FILE
    ).exists()
    calls = [line for line in lines if line.strip().startswith("run(")]
    assert calls == [
        f'  run(command="bash some/on_device.sh", carry=["{tmp_path}/carry/manifest.json", '
        f'"{tmp_path}/carry/payload.tar.part-01"], timeout_s=600)'
    ]
    received = carry.receive(tmp_path / "carry", tmp_path / "device")
    assert received.payload is not None and (received.payload / "b.txt").read_text() == "hello"


def test_wheels_already_there_are_kept_and_two_of_one_distribution_refused(tmp_path: Path) -> None:
    (tmp_path / "demo_pkg-1.0-py3-none-any.whl").write_bytes(b"")
    assert carry.download_wheels(tmp_path, ["demo-pkg==1.0"], log=pytest.fail) == [
        tmp_path / "demo_pkg-1.0-py3-none-any.whl"
    ]  # present: pip is not called (log would fail the test)
    (tmp_path / "demo_pkg-2.0-py3-none-any.whl").write_bytes(b"")
    with pytest.raises(carry.CarryError, match="more than one wheel of demo_pkg"):
        carry.download_wheels(tmp_path, ["demo-pkg==1.0"], log=pytest.fail)


def test_pinned_names_the_installed_version() -> None:
    from importlib import metadata

    assert carry.pinned("pydantic") == f"pydantic=={metadata.version('pydantic')}"
