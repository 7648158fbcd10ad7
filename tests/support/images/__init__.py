"""The test image: FROM scratch with the host's static busybox, built through the Docker SDK.

No registry is reachable in tests, so the build context is assembled here as a tar: the
`backend/` Dockerfile and entrypoint, `/bin/busybox` and a symlink per applet.
"""

from __future__ import annotations

import hashlib
import io
import struct
import subprocess
import tarfile
from pathlib import Path

import docker

BUSYBOX = Path("/bin/busybox")
CONTEXT = Path(__file__).resolve().parents[3] / "examples" / "demo" / "image"
REPOSITORY = "lbgen-test/backend"


def build_backend_image(client: docker.DockerClient) -> str:
    """Build (or find) the backend image on `client`'s daemon; returns its tag."""
    context = _context_tar()
    tag = f"{REPOSITORY}:{hashlib.sha256(context).hexdigest()[:12]}"
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        client.images.build(fileobj=io.BytesIO(context), custom_context=True, tag=tag, rm=True, forcerm=True)
    return tag


def _context_tar() -> bytes:
    binary = BUSYBOX.read_bytes()
    if _needs_loader(binary):
        raise RuntimeError(f"{BUSYBOX} is dynamically linked; install Debian's busybox-static")
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, timeout=10, check=True
    ).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _add(tar, "Dockerfile", (CONTEXT / "Dockerfile").read_bytes(), 0o644)
        _add(tar, "rootfs/entrypoint.sh", (CONTEXT / "entrypoint.sh").read_bytes(), 0o755)
        _add(tar, "rootfs/bin/busybox", binary, 0o755)
        for applet in sorted(set(applets) - {"busybox"}):
            link = tarfile.TarInfo(f"rootfs/bin/{applet}")
            link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(link)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _needs_loader(elf: bytes) -> bool:
    """Whether a 64-bit little-endian ELF has a PT_INTERP header (it would not run FROM scratch)."""
    if elf[:6] != b"\x7fELF\x02\x01":
        return True
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    return any(
        struct.unpack_from("<I", elf, phoff + i * phentsize)[0] == 3 for i in range(phnum)
    )
