#!/usr/bin/env python3
"""Helpers for test_unpack_oracle.sh (standard library only).

  unpack_oracle.py oci-archive OUT.tar NAME LAYER:MEDIATYPE:DIFFID...
      an OCI image archive (what `ctr images import` reads) holding the given
      layer blobs, bottom first, for linux/amd64; the index entry is named NAME.
  unpack_oracle.py compare DIR_A DIR_B [--no-mtime REL]...
      walks both trees without following symlinks and prints every
      difference in names, types, modes, owners, sizes, contents, mtimes,
      symlink targets, device numbers, xattrs and hardlink groups; exit 1 when
      there is one.  The roots themselves are not compared.
  unpack_oracle.py hostile-tar OUT.tar
      a layer that tries to leave its root: `..` and absolute names, files
      written "through" symlinks that point out, a symlink replaced by a
      file, symlink chains, hardlinks to symlinks and with `..` in the target.
  unpack_oracle.py chain DIFFID...
      prints the chain ID of the last layer of the stack.
"""
import hashlib
import io
import json
import os
import stat
import sys
import tarfile


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def oci_archive(out, name, specs):
    blobs = {}
    layers, diff_ids = [], []
    for s in specs:
        path, mt, diff_id = s.split(":", 2)
        data = open(path, "rb").read()
        d = sha(data)
        blobs[d] = data
        layers.append({"mediaType": mt, "digest": d, "size": len(data)})
        diff_ids.append(diff_id)
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }, sort_keys=True).encode()
    blobs[sha(config)] = config
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(config), "size": len(config)},
        "layers": layers,
    }, sort_keys=True).encode()
    blobs[sha(manifest)] = manifest
    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha(manifest), "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]},
        }],
    }, sort_keys=True).encode()
    with tarfile.open(out, "w") as tf:
        def add(n, b):
            ti = tarfile.TarInfo(n)
            ti.size = len(b)
            tf.addfile(ti, io.BytesIO(b))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index)
        for d, b in blobs.items():
            add("blobs/sha256/" + d.split(":")[1], b)


def hostile_tar(out):
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        def add(name, kind=tarfile.REGTYPE, data=b"", link="", mode=0o644):
            ti = tarfile.TarInfo(name)
            ti.type = kind
            ti.mode = mode
            ti.mtime = 1600000000
            ti.linkname = link
            ti.size = len(data) if kind == tarfile.REGTYPE else 0
            tf.addfile(ti, io.BytesIO(data) if ti.size else None)
        add("../dotdot", data=b"1\n")
        add("/abs", data=b"2\n")
        add("a/../../../up", data=b"3\n")
        add("toroot", tarfile.SYMTYPE, link="/", mode=0o777)
        add("toroot/through-abs", data=b"4\n")
        add("out", tarfile.SYMTYPE, link="../..", mode=0o777)
        add("out/through-rel", data=b"5\n")
        add("out/dir", tarfile.DIRTYPE, mode=0o750)
        add("tovictim", tarfile.SYMTYPE, link="../victim", mode=0o777)
        add("tovictim", data=b"6\n")
        add("c1", tarfile.SYMTYPE, link="c2", mode=0o777)
        add("c2", tarfile.SYMTYPE, link="/sub/../../sub", mode=0o777)
        add("c1/chained", data=b"7\n")
        add("sl", tarfile.SYMTYPE, link="../victim", mode=0o777)
        add("hl-to-sl", tarfile.LNKTYPE, link="sl")
        add("hl-dotdot", tarfile.LNKTYPE, link="../../sub/chained")
        add("etc/./x/../y", data=b"8\n")


def chain(diff_ids):
    c = diff_ids[0]
    for d in diff_ids[1:]:
        c = sha((c + " " + d).encode())
    print(c)


def walk(root):
    out = {}
    inodes = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for n in sorted(dirnames + filenames):
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            e = {
                "type": stat.S_IFMT(st.st_mode),
                "mode": oct(stat.S_IMODE(st.st_mode)),
                "owner": "%d:%d" % (st.st_uid, st.st_gid),
                "mtime_ns": st.st_mtime_ns,
            }
            x = {}
            for k in sorted(os.listxattr(p, follow_symlinks=False)):
                x[k] = os.getxattr(p, k, follow_symlinks=False).hex()
            e["xattrs"] = x
            if stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for b in iter(lambda: f.read(1 << 20), b""):
                        h.update(b)
                e["size"] = st.st_size
                e["sha256"] = h.hexdigest()
                e["blocks"] = st.st_blocks  # reported, not compared
            elif stat.S_ISLNK(st.st_mode):
                e["target"] = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                e["rdev"] = "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
            if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
                inodes.setdefault(st.st_ino, []).append(rel)
            out[rel] = e
    for names in inodes.values():
        for n in names:
            out[n]["links"] = sorted(names)
    return out


def compare(a, b, no_mtime):
    ta, tb = walk(a), walk(b)
    bad = 0
    for rel in sorted(set(ta) | set(tb)):
        if rel not in ta or rel not in tb:
            print("only in %s: %s" % (a if rel in ta else b, rel))
            bad += 1
            continue
        ea, eb = dict(ta[rel]), dict(tb[rel])
        ea.pop("blocks", None)
        eb.pop("blocks", None)
        if rel in no_mtime:
            ea.pop("mtime_ns")
            eb.pop("mtime_ns")
        for k in sorted(set(ea) | set(eb)):
            if ea.get(k) != eb.get(k):
                print("%s: %s differs: %r != %r" % (rel, k, ea.get(k), eb.get(k)))
                bad += 1
    print("compared %d entries, %d differences" % (len(ta), bad))
    for rel in sorted(ta):
        if "blocks" in ta[rel] and ta[rel]["size"] > (1 << 20):
            print("allocated 512-byte blocks of %s (%d bytes): %d vs %d"
                  % (rel, ta[rel]["size"], ta[rel]["blocks"], tb.get(rel, {}).get("blocks", -1)))
    return bad


def main():
    cmd = sys.argv[1]
    if cmd == "oci-archive":
        oci_archive(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif cmd == "hostile-tar":
        hostile_tar(sys.argv[2])
    elif cmd == "chain":
        chain(sys.argv[2:])
    elif cmd == "compare":
        args = sys.argv[2:]
        no_mtime = set()
        while "--no-mtime" in args:
            i = args.index("--no-mtime")
            no_mtime.add(args[i + 1])
            del args[i:i + 2]
        sys.exit(1 if compare(args[0], args[1], no_mtime) else 0)
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
