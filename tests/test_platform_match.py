"""Platform lists, containerd-style matching and the binfmt_misc reader (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import UsageError
from builder.platform import Platform, match_score, parse_platforms
from builder.sandbox.binfmt import elf_header, emulation_problem, parse_handler

QEMU_AARCH64_CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")


def test_platform_list_keeps_order_and_drops_duplicates() -> None:
    got = parse_platforms("linux/amd64, linux/arm64,linux/aarch64,linux/arm64/v8")
    assert [str(p) for p in got] == ["linux/amd64", "linux/arm64"]
    assert parse_platforms(None) == () == parse_platforms(" ")
    with pytest.raises(UsageError, match="empty entry"):
        parse_platforms("linux/amd64,,linux/arm64")
    # the old bug: the whole list parsed as one platform
    assert all("," not in p.architecture for p in parse_platforms("linux/amd64,linux/arm64"))
    # one word: an OS (host arch) or an architecture (host OS); anything else is refused, as containerd
    assert str(Platform.parse("arm64")).endswith("/arm64") and Platform.parse("linux").os == "linux"
    with pytest.raises(UsageError, match="unknown operating system or architecture"):
        Platform.parse("foo")


@pytest.mark.parametrize("want,have,score", [
    ("linux/arm64", "linux/arm64/v8", 2),
    ("linux/arm64/v8", "linux/arm64", 2),
    ("linux/aarch64", "linux/arm64", 2),
    ("linux/arm", "linux/arm/v7", 2),        # arm alone means v7
    ("linux/arm/v7", "linux/arm", 2),
    ("linux/arm/v6", "linux/arm/v7", None),
    ("linux/arm", "linux/arm/v6", None),      # arm alone is arm/v7, not v6
    ("linux/amd64", "linux/amd64/v1", 2),
    ("linux/amd64", "linux/amd64/v3", 1),
    ("linux/amd64/v3", "linux/amd64", None),
    ("linux/amd64", "linux/arm64", None),
    ("windows/amd64", "linux/amd64", None),
])
def test_match_score_normalises_like_containerd(want: str, have: str, score: int | None) -> None:
    parts = have.split("/")
    assert match_score(Platform.parse(want), Platform(parts[0], parts[1], parts[2] if len(parts) > 2 else "")) == score


def _qemu_handler() -> object:
    """QEMU's registration line (``:name:M:offset:magic:mask:interpreter:flags``) as the kernel
    would show it in /proc/sys/fs/binfmt_misc/NAME."""
    if not QEMU_AARCH64_CONF.exists():
        pytest.skip("qemu-user-static is not installed")
    _, name, _kind, offset, magic, mask, interp, flags = QEMU_AARCH64_CONF.read_text().strip().split(":")
    def unesc(s: str) -> bytes:
        return bytes.fromhex(s.replace("\\x", ""))

    text = (f"enabled\ninterpreter {interp}\nflags: {flags}\noffset {offset or 0}\n"
            f"magic {unesc(magic).hex()}\nmask {unesc(mask).hex()}\n")
    return parse_handler(name, text)


def test_qemu_handler_matches_our_elf_header_and_only_arm64() -> None:
    h = _qemu_handler()
    assert h is not None
    assert h.matches(elf_header("arm64"))  # type: ignore[attr-defined]
    for other in ("amd64", "arm", "riscv64", "s390x"):
        assert not h.matches(elf_header(other))  # type: ignore[attr-defined]
    # and the host's real busybox is no arm64 binary
    assert not h.matches(Path("/bin/busybox").read_bytes()[:20])  # type: ignore[attr-defined]


def _binfmt_dir(tmp_path: Path, entries: dict[str, str], status: str = "enabled") -> Path:
    d = tmp_path / "binfmt"
    d.mkdir(parents=True)
    (d / "status").write_text(status + "\n")
    (d / "register").write_text("")
    for name, text in entries.items():
        (d / name).write_text(text)
    return d


ARM64_ENTRY = ("{state}\ninterpreter /usr/bin/qemu-aarch64-static\nflags: {flags}\noffset 0\n"
               "magic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n")


def test_emulation_problem_says_why(tmp_path: Path) -> None:
    assert emulation_problem("amd64", "amd64") is None
    assert emulation_problem("386", "amd64") is None  # runs natively
    assert "not mounted" in (emulation_problem("arm64", "amd64", root=tmp_path / "nothing") or "")
    off = _binfmt_dir(tmp_path / "a", {}, status="disabled")
    assert "disabled" in (emulation_problem("arm64", "amd64", root=off) or "")
    empty = _binfmt_dir(tmp_path / "b", {})
    assert "no binfmt_misc handler for aarch64" in (emulation_problem("arm64", "amd64", root=empty) or "")
    fixed = _binfmt_dir(tmp_path / "c", {"qemu-aarch64": ARM64_ENTRY.format(state="enabled", flags="OCF")})
    assert emulation_problem("arm64", "amd64", root=fixed) is None
    assert emulation_problem("s390x", "amd64", root=fixed) is not None
    disabled = _binfmt_dir(tmp_path / "d", {"qemu-aarch64": ARM64_ENTRY.format(state="disabled", flags="OCF")})
    assert "is disabled" in (emulation_problem("arm64", "amd64", root=disabled) or "")
    # without F the interpreter must be inside the image
    plain = _binfmt_dir(tmp_path / "e", {"qemu-aarch64": ARM64_ENTRY.format(state="enabled", flags="")})
    why = emulation_problem("arm64", "amd64", root=plain, exists_in_root=lambda p: False)
    assert why is not None and "lacks the F flag" in why and "/usr/bin/qemu-aarch64-static" in why
    assert emulation_problem("arm64", "amd64", root=plain,
                             exists_in_root=lambda p: p == "/usr/bin/qemu-aarch64-static") is None
