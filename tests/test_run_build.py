"""RUN through the whole engine (issue 4): namespaces seen from inside a step, whiteouts in the
produced layers, USER / exec form / heredocs / SHELL / streamed output, and ``pybuild run``.

Every build runs ``python -m builder.cli`` on a private copy of a busybox store; images are
read back with tests/ocireader.py, which shares no code with ``builder``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from ocireader import check_invariants, flatten, read_layout
from runutil import assert_clean, build, copy_context, layer_names, make_context, new_store, pybuild

pytestmark = [pytest.mark.root, pytest.mark.overlay]

NAMESPACES = ("ipc", "mnt", "pid", "uts", "net")
# Docker's default capability set (CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
# NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP)
DOCKER_DEFAULT_CAPS = "00000000a80425fb"


def _host_ns() -> dict[str, str]:
    return {n: os.readlink(f"/proc/self/ns/{n}") for n in NAMESPACES}


def _interfaces(netdev: str) -> set[str]:
    """Interface names of a /proc/net/dev text."""
    return {line.split(":", 1)[0].strip() for line in netdev.splitlines()[2:] if ":" in line}


def _step_ns(out: Path) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in (out / "out" / "ns").read_text().splitlines())


# ---- 1. namespaces -----------------------------------------------------------------------------

def test_namespaces_seen_from_inside_run(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    ctx = copy_context("namespaces", tmp_path / "ctx")
    out = tmp_path / "out"
    build(ctx, root, "--output", f"type=local,dest={out}").ok()

    host = _host_ns()
    step = _step_ns(out)
    assert set(step) == set(NAMESPACES)
    for n in ("ipc", "mnt", "pid", "uts"):
        assert step[n] != host[n], f"RUN shares the host's {n} namespace ({step[n]})"
    assert step["net"] == host["net"], "default network must be the host's"
    assert _interfaces((out / "out" / "netdev").read_text()) == _interfaces(Path("/proc/net/dev").read_text())

    hostname = (out / "out" / "hostname").read_text().strip()
    assert hostname and hostname != socket.gethostname()
    assert (out / "out" / "pid").read_text().strip() == "1", "the step's shell must be PID 1"

    # ps: only the step's shell (PID 1) and ps itself
    rows = [line.split(None, 1) for line in (out / "out" / "ps").read_text().splitlines()[1:] if line.strip()]
    pids = {int(pid): args for pid, args in rows}
    assert "readlink /proc/self/ns" in pids.get(1, "<no PID 1>"), f"PID 1 is not the step's shell: {pids}"
    others = {pid: args for pid, args in pids.items() if pid != 1}
    assert others and all("ps -o pid,args" in args for args in others.values()), \
        f"processes other than the step's in its PID namespace: {pids}"

    # RUN --network=none: its own namespace with only lo, up
    assert (out / "out" / "none" / "ns").read_text().strip() != host["net"]
    assert _interfaces((out / "out" / "none" / "netdev").read_text()) == {"lo"}
    iplink = (out / "out" / "none" / "iplink").read_text()
    links = [line for line in iplink.splitlines() if line[:1].isdigit()]
    assert len(links) == 1 and ": lo:" in links[0] and ",UP" in links[0], iplink

    # the rest of the sandbox as a step sees it
    status = dict(line.split(":\t", 1) for line in (out / "out" / "status").read_text().splitlines())
    assert status["CapEff"].strip() == DOCKER_DEFAULT_CAPS, status
    assert status["CapBnd"].strip() == DOCKER_DEFAULT_CAPS, status
    assert status["NoNewPrivs"].strip() == "1"
    assert (out / "out" / "fds").read_text().split() == ["0", "1", "2"], "fds beyond 0-2 leaked into the step"
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm"} <= set((out / "out" / "dev").read_text().split())
    assert (out / "out" / "sys-write").read_text().strip() != "0", "/sys is writable"
    assert_clean(root)


def test_network_none_on_the_command_line(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    ctx = copy_context("namespaces", tmp_path / "ctx")
    out = tmp_path / "out"
    build(ctx, root, "--network=none", "--output", f"type=local,dest={out}").ok()
    assert _step_ns(out)["net"] != _host_ns()["net"]
    assert _interfaces((out / "out" / "netdev").read_text()) == {"lo"}
    assert_clean(root)


def _nameservers(text: str) -> list[str]:
    return [line.split()[1] for line in text.splitlines() if line.startswith("nameserver") and len(line.split()) > 1]


def test_default_network_gets_the_hosts_dns_without_leaking_it(tmp_path: Path) -> None:
    """With the default (host) network, /etc/resolv.conf names the host's resolvers (so apt-get
    works) and /etc/hosts the step's hostname; neither file reaches the layer."""
    host_ns = _nameservers(Path("/etc/resolv.conf").read_text())
    if not host_ns or any(n.startswith("127.0.0.53") for n in host_ns):
        pytest.skip("host uses a local stub resolver")  # the engine swaps it; not comparable
    root = new_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", "FROM localhost/busybox:latest\n"
                       "RUN mkdir /out && cat /etc/resolv.conf > /out/resolv && cat /etc/hosts > /out/hosts"
                       " && hostname > /out/hostname\n")
    oci = tmp_path / "oci"
    build(ctx, root, "--output", f"type=oci,dest={oci},tar=false").ok()
    img = read_layout(oci)
    fs = flatten(img.layers)
    assert _nameservers(fs["out/resolv"].data.decode()) == host_ns, fs["out/resolv"].data
    hostname = fs["out/hostname"].data.decode().strip()
    assert hostname in fs["out/hosts"].data.decode()
    assert not {"etc/resolv.conf", "etc/hosts", "etc/hostname"} & set(layer_names(img.layers[-1]))
    assert_clean(root)


# ---- 2. whiteouts ------------------------------------------------------------------------------

SANDBOX_FILES = {"etc/hosts", "etc/resolv.conf", "etc/hostname", "dev/null", "dev/pts", "dev/shm", "run/secrets"}
RUNTIME_DIRS = {"proc", "sys", "dev"}  # runc's mount points stay in BuildKit's layer when the image lacks them


def test_whiteouts_through_builds(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    ctx = copy_context("whiteouts", tmp_path / "ctx")
    oci = tmp_path / "oci"
    build(ctx, root, "--output", f"type=oci,dest={oci},tar=false").ok()
    img = read_layout(oci)
    check_invariants(img)

    # base (1 layer) + five RUNs; the last two change nothing and get an empty layer, as in
    # BuildKit (history not marked empty_layer)
    assert len(img.layers) == 6, [layer_names(layer) for layer in img.layers]
    assert img.layers[4] == [] and img.layers[5] == []
    history = img.config["history"]
    runs = [h for h in history if h.get("created_by", "").startswith("RUN")]
    assert len(runs) == 5
    assert [bool(h.get("empty_layer")) for h in runs] == [False] * 5

    first, second, third = (dict(zip(layer_names(layer), layer, strict=True)) for layer in img.layers[1:4])
    # the base has no /proc, /sys, /dev: the first RUN's layer keeps runc's empty mount points
    assert RUNTIME_DIRS <= set(first) and all(first[d].type == "dir" and first[d].mode == 0o755 for d in RUNTIME_DIRS)
    assert not RUNTIME_DIRS & (set(second) | set(third))
    assert {"gone-file", "gone-dir/sub/x", "opq/old/y", "opq/z", "keep/k", "swap"} <= set(first)

    # deletions become .wh.NAME, the recreated directory is opaque, the new dir replaces the file
    for wh in (".wh.gone-file", ".wh.gone-dir", "opq/.wh..wh..opq"):
        assert wh in second, f"{wh} missing from the second RUN's layer: {sorted(second)}"
        assert second[wh].type == "file" and second[wh].size == 0
    assert second["opq"].type == "dir" and second["opq/new/n"].data == b"n\n"
    assert second["swap"].type == "dir" and second["swap/inner"].data == b"in\n"
    assert not any(n.startswith("gone-dir/") for n in second)
    # ... and back: a regular file where the directory was
    assert third["swap"].type == "file" and third["swap"].data == b"back\n"

    for i, layer in enumerate(img.layers[1:], 1):
        for m in layer:
            assert m.type not in ("char", "block"), f"layer {i}: device {m.name} (an overlay whiteout?)"
            assert not any(k.startswith(("trusted.overlay.", "user.overlay.")) for k in m.xattrs), \
                f"layer {i}: overlay xattr on {m.name}: {m.xattrs}"
        leaked = SANDBOX_FILES & set(layer_names(layer))
        assert not leaked, f"layer {i}: sandbox files reached the layer: {leaked}"

    fs = flatten(img.layers)
    for gone in ("gone-file", "gone-dir", "gone-dir/sub", "gone-dir/sub/x", "opq/old", "opq/old/y", "opq/z",
                 "swap/inner"):
        assert gone not in fs, f"{gone} survived its deletion"
    assert fs["opq/new/n"].data == b"n\n"
    assert fs["keep/k"].data == b"k\n"
    assert fs["swap"].type == "file" and fs["swap"].data == b"back\n"
    assert fs["bin/busybox"].type == "file"
    assert_clean(root)


# ---- 5. USER, exec form, heredocs, SHELL, output -----------------------------------------------

def test_user_forms_heredocs_shell_and_output(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    ctx = copy_context("user", tmp_path / "ctx")
    dest = tmp_path / "out"
    res = build(ctx, root, "--output", f"type=local,dest={dest}").ok()
    out = dest / "out"

    def read(name: str) -> str:
        return (out / name).read_text().strip()

    assert (read("uid-nobody"), read("gid-nobody")) == ("65534", "65534")
    assert set(read("groups-nobody").split()) == {"65534", "2001"}
    assert (read("uid-1000"), read("gid-1000")) == ("1000", "1000")
    assert (read("uid-app"), read("gid-app")) == ("1000", "1000")
    assert set(read("groups-app").split()) == {"1000", "2000", "2001"}

    assert read("exec0") == "/bin/sh"
    assert read("heredoc").splitlines() == ["heredoc-script-line", "pid=1"]
    assert read("shebang") == "awk ran the shebang script"
    assert read("fed").splitlines() == ["first fed line", "second fed line"]
    assert read("shell0") == "/bin/ash"
    assert read("pwd") == "/made/by/workdir"

    err_lines = res.err.splitlines()
    for want in ("streamed-line-one", "streamed-line-two"):
        assert any(want in line and "echo" not in line for line in err_lines), \
            f"step output {want!r} not streamed:\n{res.err}"
    assert_clean(root)


# ---- 6. pybuild run ----------------------------------------------------------------------------

def test_pybuild_run_prints_output_and_returns_exit_code(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    ctx = copy_context("runimage", tmp_path / "ctx")
    build(ctx, root, tag="runme:1").ok()

    res = pybuild(["run", "runme:1"], root)
    assert res.rc == 5, res
    assert "run-output-line" in res.out and "args: " in res.out
    assert "Traceback" not in res.out + res.err

    res = pybuild(["run", "runme:1", "/bin/sh", "/entry.sh", "a", "b"], root)
    assert res.rc == 5 and "args: a b" in res.out, res
    assert_clean(root)


def test_pybuild_run_command_found_through_path(tmp_path: Path) -> None:
    """``pybuild run IMAGE sh -c 'exit 7'``: a bare command name is looked up in PATH (Docker's
    default PATH when the image sets none, as for the busybox base)."""
    root = new_store(tmp_path)
    ctx = copy_context("runimage", tmp_path / "ctx")
    build(ctx, root, tag="runme:1").ok()
    res = pybuild(["run", "runme:1", "sh", "-c", "echo via-path; exit 7"], root)
    assert "Traceback" not in res.out + res.err, res
    assert res.rc == 7, res
    assert "via-path" in res.out and "run-output-line" not in res.out, "a given command must replace CMD"
    assert_clean(root)


def test_exec_form_with_a_bare_command_name(tmp_path: Path) -> None:
    """``RUN ["sh", ...]``: exec form without a path searches PATH, like Docker."""
    root = new_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", 'FROM localhost/busybox:latest\n'
                                         'RUN ["sh", "-c", "echo $0 > /exec-bare"]\n')
    out = tmp_path / "out"
    res = build(ctx, root, "--output", f"type=local,dest={out}")
    assert "Traceback" not in res.err, res.err
    res.ok()
    assert (out / "exec-bare").read_text().strip() == "sh"
    assert_clean(root)
