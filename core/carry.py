"""Carry one payload to the GPU machine in parts, and put it back together there.

A device call carries at most 64 MiB (working tree included), and what a GPU run needs beyond the
tree is larger: the onnxruntime-gpu wheel of the serving check (loadtest/gpu/) is 255.6 MB, the
embedded LLM of the teacher recipe (distill/teacher/gpu/) 98 MB. So that payload (wheels, weights,
data) is one uncompressed tar (the wheels and weights do not compress), split into parts of at most
``PART_MIB``; ``manifest.json`` records the sha256 of each part, of each tar member and of the whole.
Each device call carries the manifest and one part; ``receive`` keeps the parts that arrived (on the
machine's /tmp, which lives while the machine stays warm between consecutive calls), and once all are
there appends them in order into the tar, checks every hash and extracts it. ``install`` then puts the
wheels into a target folder with ``pip install --no-index --no-deps --target``.

Standard library only: on the GPU machine this runs before anything is installed. It lives in core
because both GPU recipes use it (one in loadtest, one in distill) and neither may import the other.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

# 64 MiB per call minus the working tree (about 3 MiB) and the manifest: a part and the tree fit.
PART_MIB = 58
MANIFEST_FILE = "manifest.json"
TAR_FILE = "payload.tar"
PART_PREFIX = "payload.tar.part-"
WHEELS_DIR = "wheels"  # inside the payload
PAYLOAD_DIR = "payload"  # extracted payload, inside the receiving folder
SITE_DIR = "site"  # pip --target, inside the receiving folder

# Where the GPU machine's python is 3.12 on x86-64 (KINDS.md), wheels are chosen for it; the dry run on
# another interpreter installs with the same flags, so it installs exactly what the GPU machine would.
GPU_PYTHON_VERSION = "3.12"
GPU_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
CHUNK = 1 << 20


class CarryError(RuntimeError):
    """A part or the payload does not match the manifest, or the install failed; names the file."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def part_name(index: int) -> str:
    return f"{PART_PREFIX}{index:02d}"


@dataclass(frozen=True)
class Manifest:
    parts: list[dict]  # {"file", "bytes", "sha256"} in order
    whole: dict  # {"file", "bytes", "sha256"}
    members: dict[str, str]  # tar member path -> sha256 (regular files)

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(data["parts"], data["whole"], data["members"])
        except FileNotFoundError:
            raise CarryError(
                f"{path}: no manifest (build the payload with its prepare step, and carry the manifest with each part)"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise CarryError(f"{path}: not a payload manifest ({exc})") from None

    def write(self, path: Path) -> None:
        body = {"parts": self.parts, "whole": self.whole, "members": self.members}
        path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")


def make_tar(source_dir: Path, tar_path: Path) -> dict[str, str]:
    """Tar the files under ``source_dir`` (paths relative to it, sorted); {member: sha256}."""
    members: dict[str, str] = {}
    with tarfile.open(tar_path, "w") as tar:
        for path in sorted(p for p in source_dir.rglob("*") if p.is_file()):
            name = path.relative_to(source_dir).as_posix()
            members[name] = sha256_of(path)
            tar.add(path, arcname=name, recursive=False)
    return members


def split(
    tar_path: Path, out_dir: Path, members: dict[str, str], part_bytes: int = PART_MIB << 20
) -> Manifest:
    """Split ``tar_path`` into parts of at most ``part_bytes`` in ``out_dir`` and write the manifest."""
    if part_bytes < 1:
        raise ValueError(f"part_bytes must be positive, not {part_bytes}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(PART_PREFIX + "*"):
        old.unlink()  # parts of an earlier payload would be carried by mistake
    parts, whole, total = [], hashlib.sha256(), 0
    with open(tar_path, "rb") as src:
        index = 1
        while block := src.read(part_bytes):
            path = out_dir / part_name(index)
            path.write_bytes(block)
            whole.update(block)
            total += len(block)
            parts.append(
                {"file": path.name, "bytes": len(block), "sha256": hashlib.sha256(block).hexdigest()}
            )
            index += 1
    manifest = Manifest(parts, {"file": TAR_FILE, "bytes": total, "sha256": whole.hexdigest()}, members)
    manifest.write(out_dir / MANIFEST_FILE)
    return manifest


@dataclass(frozen=True)
class Received:
    have: list[str]
    missing: list[str]
    payload: Path | None  # the extracted payload once every part arrived


def receive(carried: Path, into: Path) -> Received:
    """Keep the parts in ``carried`` that match the manifest; once all are in ``into``, reassemble,
    check and extract. Safe to call again (consecutive calls, or a repeated one)."""
    manifest = Manifest.read(carried / MANIFEST_FILE)
    parts_dir = into / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    previous = into / MANIFEST_FILE
    if previous.is_file() and Manifest.read(previous).whole != manifest.whole:
        # A new payload: parts of the old one must not be mixed in.
        shutil.rmtree(parts_dir)
        shutil.rmtree(into / PAYLOAD_DIR, ignore_errors=True)
        parts_dir.mkdir()
    shutil.copyfile(carried / MANIFEST_FILE, previous)
    payload = into / PAYLOAD_DIR
    if (payload / ".complete").is_file():
        return Received([p["file"] for p in manifest.parts], [], payload)
    for part in manifest.parts:
        arrived = carried / part["file"]
        if not arrived.is_file():
            continue
        actual = sha256_of(arrived)
        if actual != part["sha256"]:
            raise CarryError(
                f"{arrived}: sha256 {actual[:12]}… differs from {MANIFEST_FILE} ({part['sha256'][:12]}…); "
                "the part was damaged or belongs to another payload: carry it again"
            )
        shutil.copyfile(arrived, parts_dir / part["file"])
    have = [p["file"] for p in manifest.parts if (parts_dir / p["file"]).is_file()]
    missing = [p["file"] for p in manifest.parts if p["file"] not in have]
    if missing:
        return Received(have, missing, None)
    tar_path = into / TAR_FILE
    digest = hashlib.sha256()
    with open(tar_path, "wb") as out:  # the parts appended in order, each deleted once appended
        for part in manifest.parts:
            path = parts_dir / part["file"]
            with open(path, "rb") as src:
                while block := src.read(CHUNK):
                    digest.update(block)
                    out.write(block)
            path.unlink()
    if digest.hexdigest() != manifest.whole["sha256"]:
        raise CarryError(
            f"{tar_path}: sha256 of the reassembled payload {digest.hexdigest()[:12]}… differs from "
            f"{MANIFEST_FILE} ({manifest.whole['sha256'][:12]}…)"
        )
    shutil.rmtree(payload, ignore_errors=True)
    with tarfile.open(tar_path) as tar:
        tar.extractall(payload, filter="data")
    for name, expected in manifest.members.items():
        path = payload / name
        actual = sha256_of(path) if path.is_file() else "missing"
        if actual != expected:
            raise CarryError(f"{path}: sha256 {actual[:12]} differs from {MANIFEST_FILE} ({expected[:12]}…)")
    tar_path.unlink()
    (payload / ".complete").write_text("every member matched manifest.json\n")
    return Received(have, [], payload)


def install(payload: Path, target: Path, *, cross: bool = False) -> list[str]:
    """``pip install --no-index --no-deps --target`` of the payload's wheels; the wheel files installed.

    ``cross``: install for the GPU machine's python and platform from another interpreter (the dry run
    here), so the same wheels are chosen and unpacked as there."""
    wheels = sorted((payload / WHEELS_DIR).glob("*.whl"))
    if not wheels:
        raise CarryError(f"{payload / WHEELS_DIR}: no wheels in the payload")
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
    command += ["--no-cache-dir", "--disable-pip-version-check", "--upgrade", "--target", str(target)]
    if cross:
        command += ["--only-binary=:all:", "--python-version", GPU_PYTHON_VERSION, "--implementation", "cp"]
        for platform in GPU_PLATFORMS:
            command += ["--platform", platform]
    done = subprocess.run([*command, *map(str, wheels)], capture_output=True, text=True)
    if done.returncode != 0:
        raise CarryError(f"pip install into {target} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    installed = {p.name.split("-")[0].lower() for p in target.glob("*.dist-info")}
    absent = [w.name for w in wheels if w.name.split("-")[0].lower() not in installed]
    if absent:
        raise CarryError(f"{target}: no .dist-info for {', '.join(absent)} after pip install")
    return [w.name for w in wheels]


def pinned(name: str) -> str:
    """``NAME==VERSION`` of a distribution as installed here: the GPU machine gets the same version."""
    from importlib import metadata

    return f"{name}=={metadata.version(name)}"


def download_wheels(dest: Path, specs: list[str], log=print) -> list[Path]:
    """One wheel per ``NAME==VERSION`` spec for the GPU machine's python and platform (``pip download
    --no-deps``) into ``dest``; a distribution with a wheel there already is not downloaded again."""
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [a for p in GPU_PLATFORMS for a in ("--platform", p)]
    for spec in specs:
        name = spec.split("==")[0].replace("-", "_").lower()
        if any(p.name.lower().startswith(name + "-") for p in dest.glob("*.whl")):
            continue
        log(f"wheels: downloading {spec}")
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        command += ["--python-version", GPU_PYTHON_VERSION, "--implementation", "cp", *platforms]
        subprocess.run([*command, "-d", str(dest), spec], check=True)
    wheels = sorted(dest.glob("*.whl"))
    names = [w.name.split("-")[0].lower() for w in wheels]
    doubles = sorted({n for n in names if names.count(n) > 1})
    if doubles:
        raise CarryError(f"{dest}: more than one wheel of {', '.join(doubles)}; delete the old ones")
    return wheels


def pack(source_dir: Path, carry_dir: Path, device_command: str, log=print) -> Manifest:
    """Tar ``source_dir``, split it into ``carry_dir`` with its manifest, and print what was packed
    and the device calls to make, each running ``device_command``."""
    carry_dir.mkdir(parents=True, exist_ok=True)
    tar_path = carry_dir / TAR_FILE
    members = make_tar(source_dir, tar_path)
    manifest = split(tar_path, carry_dir, members)
    tar_path.unlink()
    log(
        f"carry: {manifest.whole['bytes'] / 2**20:.1f} MiB in {len(manifest.parts)} parts of ≤ {PART_MIB} MiB:"
    )
    for part in manifest.parts:
        log(f"  {carry_dir / part['file']}  {part['bytes'] / 2**20:.1f} MiB  sha256 {part['sha256'][:16]}…")
    for member in sorted(members):
        log(f"  member {member}  {(source_dir / member).stat().st_size / 2**20:.2f} MiB")
    log("device calls, consecutive (the machine keeps /tmp only while warm, 30 s between calls):")
    for part in manifest.parts:
        carried = f'["{carry_dir}/{MANIFEST_FILE}", "{carry_dir}/{part["file"]}"]'
        log(f'  run(command="{device_command}", carry={carried}, timeout_s=600)')
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.carry", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser(
        "receive", help="keep the carried parts; reassemble, check, extract once all arrived"
    )
    rec.add_argument("--carried", type=Path, default=Path(".gpu-carry"))
    rec.add_argument("--into", type=Path, required=True)
    ins = sub.add_parser("install", help="pip install the payload's wheels into INTO/site")
    ins.add_argument("--into", type=Path, required=True)
    ins.add_argument(
        "--cross", action="store_true", help="install for the GPU machine's python 3.12 (dry run)"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "receive":
            got = receive(args.carried, args.into)
            if got.payload is None:
                print(
                    f"carry: {len(got.have)} of {len(got.have) + len(got.missing)} parts here; next: {got.missing[0]}"
                )
                return 3  # not an error: the next call carries the next part
            print(f"carry: payload complete and checked in {got.payload}")
        else:
            names = install(args.into / PAYLOAD_DIR, args.into / SITE_DIR, cross=args.cross)
            print(f"carry: installed {len(names)} wheels into {args.into / SITE_DIR}")
    except CarryError as exc:
        print(f"carry: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
