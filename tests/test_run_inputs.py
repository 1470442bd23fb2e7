"""RUN's build-wide inputs (issue 15): ``RUN --mount=type=ssh`` with ``--ssh default`` (an
ssh-agent started by the test), ``--ssh ID=KEYFILE`` (a private agent pybuild starts and stops)
and ``ID=SOCKET``; ``--add-host`` (also host-gateway), ``--shm-size`` and ``--ulimit``. Nothing
of the agent or its key reaches a layer, the history, the cache or the printed log."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from inpututil import ssh_add_context, ssh_agent
from ocireader import read_layout
from runutil import assert_clean, build, files_containing, make_context, new_store

pytestmark = [pytest.mark.root, pytest.mark.overlay]


def _agents_running(token: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "ssh-agent" in cmd and token in cmd:
            found.append(cmd)
    return found


def test_ssh_mount_forwards_the_agent_and_leaves_nothing(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    ctx = ssh_add_context(tmp_path / "ctx", (
        "RUN --mount=type=ssh ssh-add -l > /default-keys; echo \"sock=$SSH_AUTH_SOCK\" > /sock\n"
        "RUN --mount=type=ssh,id=deploy,target=/tmp/agent.sock,mode=0640,uid=12,gid=34 "
        "stat -c '%a %u %g' /tmp/agent.sock > /sockstat && SSH_AUTH_SOCK=/tmp/agent.sock ssh-add -l > /deploy-keys\n"))
    import glob

    def ssh_dirs() -> set[str]:
        return set(glob.glob("/tmp/pybuild-ssh-*")) | set(glob.glob("/tmp/pybuild-sshfw-*"))

    before = ssh_dirs()
    with ssh_agent(tmp_path / "agent") as (sock, key, fingerprint):
        out, oci = tmp_path / "out", tmp_path / "oci"
        r = build(ctx, root, "--ssh", "default", "--ssh", f"deploy={key}",
                  "--output", f"type=local,dest={out}", "--output", f"type=oci,dest={oci},tar=false",
                  env={"SSH_AUTH_SOCK": sock}).ok()
        assert fingerprint in (out / "default-keys").read_text()
        assert fingerprint in (out / "deploy-keys").read_text(), "the key file went into a private agent"
        assert (out / "sock").read_text() == "sock=/run/buildkit/ssh_agent.0\n"
        assert (out / "sockstat").read_text().split() == ["640", "12", "34"]
        names = {m.name.rstrip("/") for layer in read_layout(oci).layers for m in layer}
        assert "run/buildkit/ssh_agent.0" not in names and "tmp/agent.sock" not in names
        assert _agents_running("pybuild-ssh-") == [], "the private ssh-agent was stopped"
        assert ssh_dirs() <= before, "the agent's and the forwarding sockets' directories are gone"
        private = key.read_text().splitlines()[1].encode()  # a line of the private key
        public = key.with_suffix(".pub").read_text().split()[1].encode()
        for needle in (private, public, sock.encode()):
            assert files_containing(root, needle) == [] and files_containing(out, needle) == []
            assert needle.decode() not in r.err + r.out
        # the agent is not part of the cache key: another agent, same steps, all cached
    with ssh_agent(tmp_path / "agent2") as (sock2, key2, _fp2):
        again = build(ctx, root, "--ssh", "default", "--ssh", f"deploy={key2}", env={"SSH_AUTH_SOCK": sock2}).ok()
        assert again.err.count("CACHED") >= 3, again.err
    assert_clean(root)


def test_required_ssh_mount_without_ssh_flag_is_an_error(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", "FROM localhost/busybox:latest\n"
                                         "RUN --mount=type=ssh,id=deploy,required=true true\n")
    r = build(ctx, root)
    assert r.rc == 1 and "Dockerfile:2" in r.err and "--ssh deploy" in r.err, r.err
    assert "Traceback" not in r.err
    optional = make_context(tmp_path / "opt", "FROM localhost/busybox:latest\n"
                                              "RUN --mount=type=ssh test ! -e /run/buildkit/ssh_agent.0\n")
    build(optional, root).ok()
    bad = build(optional, root, "--ssh", "x=/does/not/exist")
    assert bad.rc == 2 and "--ssh x=/does/not/exist" in bad.err
    # a failing step with a key-file agent: the agent is stopped all the same
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    failing = make_context(tmp_path / "fail", "FROM localhost/busybox:latest\n"
                                              "RUN --mount=type=ssh,id=deploy test -S $SSH_AUTH_SOCK && exit 7\n")
    r = build(failing, root, "--ssh", f"deploy={key}")
    assert r.rc == 1 and "exit code 7" in r.err, r.err
    assert _agents_running("pybuild-ssh-") == []
    assert_clean(root)


def test_add_host_shm_size_and_ulimit(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", (
        "FROM localhost/busybox:latest\n"
        "RUN cp /etc/hosts /hosts-seen && df -k /dev/shm | tail -n 1 > /shm && "
        "ulimit -n > /nofile && ulimit -Hn > /nofile-hard\n"))
    out, oci = tmp_path / "out", tmp_path / "oci"
    build(ctx, root, "--add-host", "db.internal:10.11.12.13", "--add-host", "gw:host-gateway",
          "--add-host", "v6host=fd00::1", "--shm-size", "7m", "--ulimit", "nofile=123:456",
          "--output", f"type=local,dest={out}", "--output", f"type=oci,dest={oci},tar=false").ok()
    hosts = (out / "hosts-seen").read_text()
    assert "10.11.12.13\tdb.internal" in hosts and "127.0.0.1\tgw" in hosts and "fd00::1\tv6host" in hosts
    assert (out / "shm").read_text().split()[1] == str(7 * 1024)
    assert (out / "nofile").read_text().strip() == "123" and (out / "nofile-hard").read_text().strip() == "456"
    names = {m.name.rstrip("/") for layer in read_layout(oci).layers[1:] for m in layer}
    assert "etc/hosts" not in names, "the extra hosts stay out of the image"
    # they are part of the RUN's meaning (BuildKit's exec op): another host, a new step
    r = build(ctx, root, "--add-host", "db.internal:10.11.12.14", "--shm-size", "7m", "--ulimit", "nofile=123:456")
    assert "CACHED" not in r.ok().err.split("RUN cp", 1)[1].splitlines()[0]


@pytest.mark.parametrize("flag, value, message", [
    ("--add-host", "nohostip", "invalid IP address"),
    ("--add-host", "h:300.1.1.1", "invalid IP address"),
    ("--ulimit", "nofile=9:3", "soft limit must not exceed the hard limit"),
    ("--ulimit", "bogus=1", "expected TYPE=SOFT[:HARD]"),
    ("--shm-size", "lots", "expected a size"),
    ("--annotation", "nokey", "expected [TYPE:]KEY=VALUE"),
])
def test_bad_run_flags_name_the_flag(tmp_path: Path, flag: str, value: str, message: str) -> None:
    root = new_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", "FROM localhost/busybox:latest\n")
    r = build(ctx, root, flag, value)
    assert r.rc == 2 and flag in r.err and message in r.err, r.err
    assert "Traceback" not in r.err


def test_annotations_on_the_manifest(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", "FROM localhost/busybox:latest\nLABEL a=b\n")
    oci = tmp_path / "oci"
    build(ctx, root, "--annotation", "org.opencontainers.image.title=demo",
          "--annotation", "manifest:com.example.level=manifest",
          "--annotation", "manifest[linux/s390x]:com.example.other=not-this-platform",
          "--output", f"type=oci,dest={oci},tar=false").ok()
    img = read_layout(oci)
    assert img.manifest["annotations"] == {"com.example.level": "manifest",
                                           "org.opencontainers.image.title": "demo"}
    r = build(ctx, root, "--annotation", "index:com.example.i=1")
    assert r.rc == 2 and "index annotations not supported for single platform export" in r.err
    r = build(ctx, root, "--annotation", "manifest-descriptor:com.example.d=1")
    assert r.rc == 2 and "not supported yet" in r.err and "Traceback" not in r.err


def test_build_arg_without_value_comes_from_the_environment(tmp_path: Path) -> None:
    root = new_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", "FROM localhost/busybox:latest\nARG FROM_ENV\nARG UNSET=default\n"
                                         "RUN echo \"$FROM_ENV/$UNSET\" > /v\n")
    out = tmp_path / "out"
    env = {"FROM_ENV": "env-value"}
    build(ctx, root, "--build-arg", "FROM_ENV", "--build-arg", "UNSET",
          "--output", f"type=local,dest={out}", env=env).ok()
    assert (out / "v").read_text() == "env-value/default\n", "an unset NAME is skipped, as docker does"


def test_index_and_per_platform_manifest_annotations(tmp_path: Path) -> None:
    """Two platforms make an index: ``index:`` annotations go on it, ``manifest[PLATFORM]:``
    only on that platform's manifest, plain ones on every manifest (buildx syntax)."""
    import json

    root = new_store(tmp_path)
    ctx = make_context(tmp_path / "ctx", "FROM scratch\nCOPY f /f\n", {"f": "x\n"})
    oci = tmp_path / "oci"
    build(ctx, root, "--platform", "linux/amd64,linux/arm64",
          "--annotation", "index:com.example.idx=on-index",
          "--annotation", "com.example.all=every-manifest",
          "--annotation", "manifest[linux/arm64]:com.example.arm=arm-only",
          "--annotation", "manifest-descriptor[linux/amd64]:com.example.desc=amd64-descriptor",
          "--output", f"type=oci,dest={oci},tar=false").ok()
    top = json.loads((oci / "index.json").read_text())["manifests"][0]
    index = json.loads((oci / "blobs" / "sha256" / top["digest"].split(":")[1]).read_text())
    assert index["annotations"] == {"com.example.idx": "on-index"}
    seen = {}
    descriptors = {}
    for m in index["manifests"]:
        doc = json.loads((oci / "blobs" / "sha256" / m["digest"].split(":")[1]).read_text())
        seen[m["platform"]["architecture"]] = doc.get("annotations")
        descriptors[m["platform"]["architecture"]] = m.get("annotations")
    assert descriptors == {"amd64": {"com.example.desc": "amd64-descriptor"}, "arm64": None}
    assert seen == {"amd64": {"com.example.all": "every-manifest"},
                    "arm64": {"com.example.all": "every-manifest", "com.example.arm": "arm-only"}}
