"""Push and pull a ~200 MB image (the bigcopy context as 4 gzip layers) to a local
docker-registry: pybuild's registry client vs ``skopeo copy`` of the same OCI layout.

Each round starts a fresh registry (so no side gets cross-repo mounts or "blob exists"
shortcuts from an earlier round) and runs, alternating who goes first:
ours push, skopeo push, ours pull, skopeo pull. Then the whole commands: ``pybuild pull`` of
the image into an empty store, and ``pybuild push`` of it from there to a second fresh
registry (interpreter start, store writes and verification included). Prints medians
(seconds, MB/s) and the peak RSS of this process (our client streams, so it should stay flat).

    python3 bench/registry_bench.py [--rounds 3] [--layers 4] [--chunk-size MiB] [--uncompressed] [--recompress]

``--recompress`` adds, per round, pushes that re-encode every layer, each against ``skopeo copy
--dest-compress-format`` from local storage: the pulled gzip image pushed as zstd, and a
plain-tar image of the same files (built once by pybuild, also written as an OCI dir) pushed as
gzip.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from builder.digest import Digest  # noqa: E402
from builder.registry.client import BLOB_LOCATIONS, RegistryClient  # noqa: E402
from builder.registry.destination import RegistryDestination  # noqa: E402
from builder.registry.source import RegistrySource  # noqa: E402
from registry_fixture import start_registry, stop  # noqa: E402

GEN = (Path(os.environ.get("PYBUILD_SHARED", REPO.parent / "shared")) / "bench" / "workloads" / "bigcopy"
       / "gen-context.sh")
CTX = Path("/tmp/bigcopy-ctx")


def sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            h.update(piece)
            size += len(piece)
    return h.hexdigest(), size


def build_layout(root: Path, layers: int, gzip: bool = True) -> tuple[Path, int]:
    """An OCI layout tagged ``big`` with the context split into ``layers`` gzip (or plain tar) layers."""
    if not CTX.is_dir():
        subprocess.run(["bash", str(GEN), str(CTX)], check=True, stdout=subprocess.DEVNULL)
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    entries = sorted(p.name for p in CTX.iterdir())
    groups = [entries[i::layers] for i in range(layers)]
    descs, diff_ids, total = [], [], 0
    gz = "pigz" if shutil.which("pigz") else "gzip"
    for i, group in enumerate(groups):
        tmp = root / f"layer{i}.tar.gz"
        tar = subprocess.Popen(["tar", "-C", str(CTX), "--sort=name", "--mtime=@0", "--owner=0", "--group=0",
                                "-cf", "-", *group], stdout=subprocess.PIPE)
        h = hashlib.sha256()
        with open(tmp, "wb") as out:
            comp = subprocess.Popen([gz, "-n", "-6"] if gzip else ["cat"], stdin=subprocess.PIPE, stdout=out)
            assert tar.stdout is not None and comp.stdin is not None
            for piece in iter(lambda: tar.stdout.read(1 << 20), b""):
                h.update(piece)
                comp.stdin.write(piece)
            comp.stdin.close()
            comp.wait()
            tar.wait()
        hexd, size = sha256_file(tmp)
        tmp.rename(blobs / hexd)
        total += size
        diff_ids.append("sha256:" + h.hexdigest())
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gzip else ""),
                      "digest": "sha256:" + hexd,
                      "size": size})
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids},
                         "config": {}}).encode()
    cd = hashlib.sha256(config).hexdigest()
    (blobs / cd).write_bytes(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": "sha256:" + cd, "size": len(config)},
                           "layers": descs}).encode()
    md = hashlib.sha256(manifest).hexdigest()
    (blobs / md).write_bytes(manifest)
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + md, "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "big"}}]}))
    return root, total


def ours_push(layout: Path, host: str, repo: str, chunk: int | None) -> None:
    index = json.loads((layout / "index.json").read_text())
    md = index["manifests"][0]["digest"]
    manifest = (layout / "blobs" / "sha256" / md.split(":")[1]).read_bytes()
    m = json.loads(manifest)
    client = RegistryClient(host, chunk_size=chunk, anonymous=True)
    with RegistryDestination(f"{host}/{repo}", client=client) as dest:
        for desc in [m["config"], *m["layers"]]:
            with open(layout / "blobs" / "sha256" / desc["digest"].split(":")[1], "rb") as f:
                dest.put_blob(Digest.parse(desc["digest"]), desc["size"], f)
        dest.put_manifest(manifest, m["mediaType"], ("big",))
    client.close()


def ours_pull(host: str, repo: str, out: Path) -> None:
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    with RegistrySource(f"{host}/{repo}:big") as src:
        manifest, _ = src.get_manifest()
        m = json.loads(manifest)
        for desc in [m["config"], *m["layers"]]:
            d = Digest.parse(desc["digest"])
            reader = src.open_blob(d, desc["size"])
            tmp = blobs / (d.hex + ".tmp")
            with reader, open(tmp, "wb") as f:
                shutil.copyfileobj(reader, f, 1 << 20)
            tmp.rename(blobs / d.hex)


def skopeo(*args: str) -> None:
    subprocess.run(["skopeo", *args], check=True, stdout=subprocess.DEVNULL)


def pybuild(store: Path, args: list[str]) -> None:
    """A whole ``pybuild`` command (installed, else from this tree) with its own store."""

    exe = shutil.which("pybuild")
    cmd = [exe] if exe else [sys.executable, "-m", "builder.cli"]
    env = dict(os.environ, PYBUILD_ROOT=str(store), PYTHONPATH=str(REPO))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run(cmd + args, check=True, stdout=subprocess.DEVNULL, env=env)


def timed(fn, *args) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--chunk-size", type=int, default=0, help="MiB; 0 = monolithic PUT")
    ap.add_argument("--uncompressed", action="store_true", help="plain tar layers (~240 MB) instead of gzip")
    ap.add_argument("--recompress", action="store_true",
                    help="also time pushes that re-compress (gzip->zstd, plain tar->gzip) against skopeo")
    args = ap.parse_args()
    chunk = args.chunk_size << 20 if args.chunk_size else None
    work = Path(tempfile.mkdtemp(prefix="registry-bench-"))
    try:
        layout, total = build_layout(work / "layout", args.layers, not args.uncompressed)
        tar_store, tar_layout = work / "tar-store", work / "tar-layout"
        if args.recompress:  # the same files as one plain-tar image, in a store and as an OCI dir
            df = work / "tar.Dockerfile"
            df.write_text("FROM scratch\nCOPY . /\n")
            pybuild(tar_store, ["-q", "-t", "bench/tar:big", "-f", str(df), "-o",
                                "type=image,compression=uncompressed", str(CTX)])
            pybuild(tar_store, ["-q", "-t", "bench/tar:big", "-f", str(df), "-o",
                                f"type=oci,dest={tar_layout},tar=false,compression=uncompressed,name=bench/tar:big", str(CTX)])
        mb = total / 1e6
        kind = "tar" if args.uncompressed else "gzip"
        print(f"image: {args.layers} {kind} layers, {mb:.1f} MB of blobs", flush=True)
        times: dict[str, list[float]] = {k: [] for k in ("ours push", "skopeo push", "ours pull", "skopeo pull",
                                                         "pybuild pull", "pybuild push")}
        for r in range(args.rounds):
            BLOB_LOCATIONS.clear()
            reg, proc = start_registry(work / f"reg{r}")
            try:
                host = reg.host
                push_jobs = [("ours push", lambda: ours_push(layout, host, "ours/big", chunk)),
                             ("skopeo push", lambda: skopeo("copy", "--quiet", "--dest-tls-verify=false",
                                                            f"oci:{layout}:big", f"docker://{host}/skopeo/big:big"))]
                pull_jobs = [("ours pull", lambda: ours_pull(host, "ours/big", work / f"pull-ours-{r}")),
                             ("skopeo pull", lambda: skopeo("copy", "--quiet", "--src-tls-verify=false",
                                                            f"docker://{host}/skopeo/big:big",
                                                            f"oci:{work / f'pull-skopeo-{r}'}:big"))]
                if r % 2:
                    push_jobs.reverse()
                    pull_jobs.reverse()
                for name, job in push_jobs + pull_jobs:
                    times[name].append(timed(job))
                    print(f"  round {r}: {name}: {times[name][-1]:.2f}s", flush=True)
                store = work / f"store{r}"
                reg2, proc2 = start_registry(work / f"reg{r}-b")
                try:
                    for name, cmd in (("pybuild pull", ["pull", f"{host}/ours/big:big"]),
                                      ("pybuild push", ["push", f"{host}/ours/big:big", f"{reg2.host}/cmd/big:big"])):
                        times[name].append(timed(pybuild, store, cmd))
                        print(f"  round {r}: {name}: {times[name][-1]:.2f}s", flush=True)
                    if args.recompress:
                        # push with re-compression, both from local storage: gzip -> zstd of
                        # the pulled image; and a plain-tar image -> gzip (the ISA-L path)
                        jobs = [
                            ("pybuild push gzip->zstd", lambda: pybuild(store, [
                                "push", "--compression", "zstd", f"{host}/ours/big:big", f"{reg2.host}/z/ours:big"])),
                            ("skopeo push gzip->zstd", lambda: skopeo(
                                "copy", "--quiet", "--dest-tls-verify=false", "--dest-compress-format", "zstd",
                                f"oci:{layout}:big", f"docker://{reg2.host}/z/skopeo:big")),
                            ("pybuild push tar->gzip", lambda: pybuild(tar_store, [
                                "push", "--compression", "gzip", "bench/tar:big", f"{reg2.host}/g/ours:big"])),
                            ("skopeo push tar->gzip", lambda: skopeo(
                                "copy", "--quiet", "--dest-tls-verify=false", "--dest-compress-format", "gzip",
                                f"oci:{tar_layout}:big", f"docker://{reg2.host}/g/skopeo:big")),
                        ]
                        if r % 2:
                            jobs = [jobs[1], jobs[0], jobs[3], jobs[2]]
                        for name, job in jobs:
                            times.setdefault(name, []).append(timed(job))
                            print(f"  round {r}: {name}: {times[name][-1]:.2f}s", flush=True)
                finally:
                    stop(proc2)
                    shutil.rmtree(work / f"reg{r}-b", ignore_errors=True)
                    shutil.rmtree(store, ignore_errors=True)
            finally:
                stop(proc)
                shutil.rmtree(work / f"reg{r}", ignore_errors=True)
                for d in (work / f"pull-ours-{r}", work / f"pull-skopeo-{r}"):
                    shutil.rmtree(d, ignore_errors=True)
        print(f"\nmedians over {args.rounds} rounds ({mb:.1f} MB):")
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"  {name:12s} {med:6.2f}s  {mb / med:7.1f} MB/s")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this process: {rss:.0f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
