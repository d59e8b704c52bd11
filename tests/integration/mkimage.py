#!/usr/bin/env python3
"""Build an OCI image layout from local files, for prepull's integration tests.

Standard library only (plus the `zstd` command for zstd layers).

Layers are given in order, bottom first, with repeated --layer SPEC:
  busybox:COMP               /bin/busybox (busybox-static) + /bin/sh, /bin/echo symlinks
  random:COMP:SIZE[:SEED]    /data/random-SEED.bin, SIZE bytes of seeded random data
                             (incompressible; SIZE like 200M, 64K, 1000)
  bf16:COMP:SIZE[:SEED]      /data/weights-SEED.bf16, SIZE bytes of bf16-like numbers
                             (random mantissas, exponents of small weights: compresses
                             like model weights, about 0.8 with gzip -6)
  text:COMP:SIZE[:SEED]      /data/text-SEED.txt, SIZE bytes of text-like words
                             (Zipf-distributed vocabulary; compresses like prose)
  file:COMP:PATH=TEXT        one regular file with TEXT as content
  files:COMP:COUNT           COUNT small files /many/D/F (a layer that is small
                             compressed yet slow to unpack)
  whiteout:COMP:PATH         an OCI whiteout (.wh.NAME) deleting PATH
COMP is gzip, zstd or none (uncompressed tar). bf16 and text layers are compressed at
gzip -6 (with pigz when installed: same format, two cores) and zstd -3.

Single-platform image (default linux/amd64, --platform os/arch[/variant]) or, with
--multiarch, an index with linux/amd64 and linux/arm64/v8 (each gets the shared layers
plus its own small layer /etc/arch and its own config), optionally with an
attestation manifest entry (--attestation).

With --reuse-layers, a layer spec already built into --out by an earlier run with
--reuse-layers is taken from there (same blob, same diff_id) instead of being built again.

The layout in --out is created or extended: the new top-level descriptor is added
to index.json with org.opencontainers.image.ref.name = --tag (an existing entry
with that tag is replaced). A JSON summary is printed on stdout:
  {"tag", "digest", "mediaType", "size", "platforms": {"linux/amd64": {"manifest",
   "config", "layers": [...]}, ...}, "blobs": [all digests], "bytes": sum of sizes}
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}
CREATED = "2024-01-01T00:00:00Z"
BUSYBOX = "/bin/busybox"
CHUNK = 1 << 20


def parse_size(s):
    s = s.strip()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if s and s[-1].upper() in mult:
        return int(float(s[:-1]) * mult[s[-1].upper()])
    return int(s)


class Layout:
    def __init__(self, root):
        self.root = root
        self.blobdir = os.path.join(root, "blobs", "sha256")
        os.makedirs(self.blobdir, exist_ok=True)
        with open(os.path.join(root, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        self.written = []

    def put_bytes(self, data):
        dg = hashlib.sha256(data).hexdigest()
        path = os.path.join(self.blobdir, dg)
        if not os.path.exists(path):
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.rename(path + ".tmp", path)
        self.written.append("sha256:" + dg)
        return "sha256:" + dg, len(data)

    def put_file(self, tmp):
        """Move a finished temp file into the store under its digest."""
        h = hashlib.sha256()
        size = 0
        with open(tmp, "rb") as f:
            while True:
                b = f.read(CHUNK * 4)
                if not b:
                    break
                h.update(b)
                size += len(b)
        dg = h.hexdigest()
        path = os.path.join(self.blobdir, dg)
        if os.path.exists(path):
            os.unlink(tmp)
        else:
            os.chmod(tmp, 0o644)
            os.rename(tmp, path)
        self.written.append("sha256:" + dg)
        return "sha256:" + dg, size

    def put_json(self, obj):
        return self.put_bytes(json.dumps(obj, indent=2, sort_keys=True).encode())


class HashingWriter(io.RawIOBase):
    """File-like sink: hashes the uncompressed tar stream (the diff_id) and hands the
    bytes to the compressor."""

    def __init__(self, sink):
        self.sink = sink
        self.h = hashlib.sha256()

    def writable(self):
        return True

    def write(self, b):
        self.h.update(b)
        self.sink.write(b)
        return len(b)


class RandomReader(io.RawIOBase):
    """SIZE bytes from a seeded generator (fast: randbytes in 1 MiB pieces)."""

    def __init__(self, size, seed):
        self.left = size
        self.rng = random.Random(seed)

    def readable(self):
        return True

    def read(self, n=-1):
        if n is None or n < 0:
            n = self.left
        n = min(n, self.left)
        if n <= 0:
            return b""
        self.left -= n
        return self.rng.randbytes(n)


class Bf16Reader(io.RawIOBase):
    """SIZE bytes of little-endian bf16-like values: a random low byte (mantissa), a
    high byte (sign + exponent) drawn from the few exponents small weights have."""

    HIGH = bytes((0x3C, 0xBC) * 30 + (0x3D, 0xBD) * 12 + (0x3B, 0xBB) * 6 + (0x3A, 0xBA) * 2 +
                 (0x3E, 0xBE) * 2 + (0x39, 0xB9) * 2)[:256].ljust(256, b"\x3c")

    def __init__(self, size, seed):
        self.left = size
        self.rng = random.Random(seed)

    def readable(self):
        return True

    def read(self, n=-1):
        if n is None or n < 0:
            n = self.left
        n = min(n, self.left)
        if n <= 0:
            return b""
        self.left -= n
        r = self.rng.randbytes(n + (n & 1))
        out = bytearray(r)
        out[1::2] = r[1::2].translate(self.HIGH)
        return bytes(out[:n])


class TextReader(io.RawIOBase):
    """SIZE bytes of text-like lines: words from a Zipf-weighted vocabulary, a pool of
    lines (more than zstd -3's window) drawn at random (drawing lines, not words, is
    what makes it fast enough for a GiB)."""

    def __init__(self, size, seed):
        self.left = size
        self.rng = random.Random(seed)
        letters = "etaoinshrdlucmfwypvbgkjqxz"
        vocab = []
        for i in range(8192):
            k = 1 + int(self.rng.expovariate(0.25)) % 12
            vocab.append("".join(self.rng.choice(letters[:6 + i % 20]) for _ in range(k)))
        acc, cum = 0.0, []
        for i in range(len(vocab)):
            acc += 1.0 / (i + 1)
            cum.append(acc)
        words = self.rng.choices(vocab, cum_weights=cum, k=12 * 65536)
        self.lines = [(" ".join(words[i:i + 12]) + "\n").encode() for i in range(0, len(words), 12)]
        self.buf = b""

    def readable(self):
        return True

    def read(self, n=-1):
        if n is None or n < 0:
            n = self.left
        n = min(n, self.left)
        if n <= 0:
            return b""
        while len(self.buf) < n:
            self.buf += b"".join(self.rng.choices(self.lines, k=16384))
        out, self.buf = self.buf[:n], self.buf[n:]
        self.left -= n
        return out


def tarinfo(name, kind=tarfile.REGTYPE, size=0, mode=0o644, link=""):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.size = size
    ti.mode = mode
    ti.mtime = 1704067200
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    ti.linkname = link
    return ti


def add_dirs(tf, path, seen):
    parts = path.strip("/").split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d not in seen:
            seen.add(d)
            tf.addfile(tarinfo(d, tarfile.DIRTYPE, mode=0o755))


def write_layer_tar(tf, spec):
    kind, arg = spec["kind"], spec.get("arg")
    seen = set()
    if kind == "busybox":
        if not os.path.exists(BUSYBOX):
            sys.exit("mkimage: %s not found (install busybox-static)" % BUSYBOX)
        size = os.path.getsize(BUSYBOX)
        add_dirs(tf, "bin/busybox", seen)
        with open(BUSYBOX, "rb") as f:
            tf.addfile(tarinfo("bin/busybox", size=size, mode=0o755), f)
        for name in ("sh", "echo", "cat", "ls"):
            tf.addfile(tarinfo("bin/" + name, tarfile.SYMTYPE, mode=0o777, link="busybox"))
    elif kind == "random":
        size, seed = arg
        name = "data/random-%s.bin" % seed
        add_dirs(tf, name, seen)
        tf.addfile(tarinfo(name, size=size), RandomReader(size, seed))
    elif kind in ("bf16", "text"):
        size, seed = arg
        name = "data/weights-%s.bf16" % seed if kind == "bf16" else "data/text-%s.txt" % seed
        add_dirs(tf, name, seen)
        reader = Bf16Reader(size, seed) if kind == "bf16" else TextReader(size, seed)
        tf.addfile(tarinfo(name, size=size), reader)
    elif kind == "file":
        path, text = arg
        data = text.encode()
        add_dirs(tf, path, seen)
        tf.addfile(tarinfo(path.strip("/"), size=len(data)), io.BytesIO(data))
    elif kind == "files":
        for i in range(arg):
            name = "many/%03d/f%06d" % (i // 1000, i)
            data = b"%d\n" % i
            add_dirs(tf, name, seen)
            tf.addfile(tarinfo(name, size=len(data)), io.BytesIO(data))
    elif kind == "whiteout":
        path = arg.strip("/")
        d, base = os.path.split(path)
        wh = (d + "/" if d else "") + ".wh." + base
        add_dirs(tf, wh, seen)
        tf.addfile(tarinfo(wh, size=0))
    else:
        raise ValueError(kind)


def build_layer(layout, spec, tmpdir):
    """Returns (descriptor, diff_id)."""
    comp = spec["comp"]
    fd, tmp = tempfile.mkstemp(dir=tmpdir)
    os.close(fd)
    with open(tmp, "wb") as out:
        proc = None
        if comp == "gzip" and spec["kind"] in ("bf16", "text") and shutil.which("pigz"):
            proc = subprocess.Popen(["pigz", "-6", "-n", "-c"], stdin=subprocess.PIPE, stdout=out)
            sink = proc.stdin
        elif comp == "gzip":
            # Large incompressible layers get level 1: same bytes, much faster.
            level = 1 if spec["kind"] == "random" else 6
            sink = gzip.GzipFile(fileobj=out, mode="wb", compresslevel=level, mtime=0, filename="")
        elif comp == "zstd":
            proc = subprocess.Popen(["zstd", "-q", "-3", "-T0", "-c"], stdin=subprocess.PIPE, stdout=out)
            sink = proc.stdin
        elif comp == "none":
            sink = out
        else:
            sys.exit("mkimage: unknown compression %r" % comp)
        hw = HashingWriter(sink)
        with tarfile.open(fileobj=hw, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK) as tf:
            write_layer_tar(tf, spec)
        if proc:
            proc.stdin.close()
            if proc.wait() != 0:
                sys.exit("mkimage: %s failed" % proc.args[0])
        elif comp == "gzip":
            sink.close()
    digest, size = layout.put_file(tmp)
    return {"mediaType": MT_LAYER[comp], "digest": digest, "size": size}, "sha256:" + hw.h.hexdigest()


def parse_layer(s):
    parts = s.split(":", 2)
    if len(parts) < 2:
        sys.exit("mkimage: bad --layer %r" % s)
    kind, comp = parts[0], parts[1]
    rest = parts[2] if len(parts) > 2 else ""
    spec = {"kind": kind, "comp": comp, "text": s}
    if kind == "busybox":
        pass
    elif kind in ("random", "bf16", "text"):
        p = rest.split(":")
        spec["arg"] = (parse_size(p[0]), int(p[1]) if len(p) > 1 else 1)
    elif kind == "file":
        path, _, text = rest.partition("=")
        spec["arg"] = (path, text)
    elif kind == "files":
        spec["arg"] = int(rest)
    elif kind == "whiteout":
        spec["arg"] = rest
    else:
        sys.exit("mkimage: unknown layer kind %r" % kind)
    return spec


def make_manifest(layout, plat, layers, diff_ids, label):
    os_, arch, variant = plat
    config = {
        "created": CREATED,
        "architecture": arch,
        "os": os_,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": {"prepull.test": label},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": CREATED, "created_by": "mkimage.py layer %d" % i} for i in range(len(layers))],
    }
    if variant:
        config["variant"] = variant
    cdg, csize = layout.put_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": cdg, "size": csize},
        "layers": layers,
    }
    mdg, msize = layout.put_json(manifest)
    return {"mediaType": MT_MANIFEST, "digest": mdg, "size": msize}, cdg


def make_attestation(layout, subject_digest):
    statement = {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://spdx.dev/Document",
        "subject": [{"name": "prepull-test", "digest": {"sha256": subject_digest.split(":")[1]}}],
        "predicate": {"spdxVersion": "SPDX-2.3", "name": "prepull-test-sbom"},
    }
    ldg, lsize = layout.put_json(statement)
    config = {"architecture": "unknown", "os": "unknown", "config": {},
              "rootfs": {"type": "layers", "diff_ids": [ldg]}}
    cdg, csize = layout.put_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": cdg, "size": csize},
        "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": ldg, "size": lsize,
                    "annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document"}}],
    }
    mdg, msize = layout.put_json(manifest)
    return {
        "mediaType": MT_MANIFEST, "digest": mdg, "size": msize,
        "platform": {"architecture": "unknown", "os": "unknown"},
        "annotations": {"vnd.docker.reference.digest": subject_digest,
                        "vnd.docker.reference.type": "attestation-manifest"},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="OCI layout directory (created or extended)")
    ap.add_argument("--tag", required=True, help="ref.name of the new index.json entry")
    ap.add_argument("--layer", action="append", default=[], help="layer spec, bottom first (see above)")
    ap.add_argument("--platform", default="linux/amd64", help="single-platform image's os/arch[/variant]")
    ap.add_argument("--multiarch", action="store_true", help="index with linux/amd64 and linux/arm64/v8")
    ap.add_argument("--no-arm-variant", action="store_true", help="arm64 entry without variant v8")
    ap.add_argument("--attestation", action="store_true", help="add an attestation-manifest entry (multiarch)")
    ap.add_argument("--reuse-layers", action="store_true",
                    help="take a layer built earlier into --out from the same spec (recorded in "
                         "OUT/.mkimage-layers.json) instead of building it again")
    ap.add_argument("--label", default="", help="config label prepull.test (changes the config digest)")
    args = ap.parse_args()

    if not args.layer:
        args.layer = ["busybox:gzip"]
    layout = Layout(args.out)
    tmpdir = tempfile.mkdtemp(dir=args.out, prefix=".mkimage-")
    try:
        shared, shared_diffs = [], []
        memo_path = os.path.join(args.out, ".mkimage-layers.json")
        memo = {}
        if args.reuse_layers and os.path.exists(memo_path):
            memo = json.load(open(memo_path))
        for s in args.layer:
            m = memo.get(s)
            if m and os.path.exists(os.path.join(layout.blobdir, m[0]["digest"].split(":")[1])):
                d, diff = m
                layout.written.append(d["digest"])
            else:
                d, diff = build_layer(layout, parse_layer(s), tmpdir)
                memo[s] = [d, diff]
            shared.append(d)
            shared_diffs.append(diff)
        if args.reuse_layers:
            with open(memo_path + ".tmp", "w") as f:
                json.dump(memo, f)
            os.rename(memo_path + ".tmp", memo_path)

        platforms = {}
        if args.multiarch:
            entries = []
            for arch, variant in (("amd64", ""), ("arm64", "" if args.no_arm_variant else "v8")):
                spec = parse_layer("file:gzip:/etc/arch=%s %s\n" % (arch, args.label))
                d, diff = build_layer(layout, spec, tmpdir)
                layers, diffs = shared + [d], shared_diffs + [diff]
                desc, cdg = make_manifest(layout, ("linux", arch, variant), layers, diffs, args.label + arch)
                plat = {"architecture": arch, "os": "linux"}
                if variant:
                    plat["variant"] = variant
                desc["platform"] = plat
                entries.append(desc)
                platforms["linux/" + arch] = {"manifest": desc["digest"], "config": cdg,
                                              "layers": [l["digest"] for l in layers]}
            if args.attestation:
                att = make_attestation(layout, entries[0]["digest"])
                entries.append(att)
                platforms["unknown/unknown"] = {"manifest": att["digest"]}
            index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": entries}
            dg, size = layout.put_json(index)
            top = {"mediaType": MT_INDEX, "digest": dg, "size": size}
        else:
            p = args.platform.split("/")
            plat = (p[0], p[1], p[2] if len(p) > 2 else "")
            top, cdg = make_manifest(layout, plat, shared, shared_diffs, args.label)
            platforms["/".join(p[:2])] = {"manifest": top["digest"], "config": cdg,
                                          "layers": [l["digest"] for l in shared]}
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)

    idx_path = os.path.join(args.out, "index.json")
    idx = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": []}
    if os.path.exists(idx_path):
        idx = json.load(open(idx_path))
    idx["manifests"] = [m for m in idx.get("manifests", [])
                        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != args.tag]
    entry = dict(top)
    entry["annotations"] = {"org.opencontainers.image.ref.name": args.tag}
    idx["manifests"].append(entry)
    with open(idx_path + ".tmp", "w") as f:
        json.dump(idx, f, indent=2)
    os.rename(idx_path + ".tmp", idx_path)

    blobs = sorted(set(layout.written))
    total = sum(os.path.getsize(os.path.join(layout.blobdir, b.split(":")[1])) for b in blobs)
    json.dump({"tag": args.tag, "digest": top["digest"], "mediaType": top["mediaType"], "size": top["size"],
               "platforms": platforms, "blobs": blobs, "bytes": total}, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
