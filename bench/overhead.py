#!/usr/bin/env python3
"""Per-invocation overhead of bbvirt, measured side by side in one run.

What it runs, each N times in turn (interleaved, so machine noise hits all
alike), on a fixture sysfs tree of 16 BitBabblers over 4 buses (behind hubs)
and a vm.conf assigning them to 4 domains:

  true                          the floor: starting any process
  bash -c 'source vm.conf'      what the original bash bbvirt pays just to
                                read its config
  virsh -c test:///default ...  one libvirt client call (the original ran
                                virsh at least once per device)
  bbvirt attach SERIAL -n       one device, dry run (no libvirt)
  bbvirt attach-all -n          all 16, dry run, reading the 4 domains'
                                state from libvirt's in-process test driver

and prints the median wall time, peak memory (max RSS, with GNU time) and,
with valgrind, the instruction count of one run each, plus ratios to the
baselines.

    python3 bench/overhead.py [--bbvirt target/release/bbvirt] [--runs 200]
"""
import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SERIALS = [f"BB{n:04d}" for n in range(16)]
UNASSIGNED = "NOBODY1"


def make_tree(root):
    """A sysfs tree shaped like the real one: devices under PCI controllers,
    symlinked from bus/usb/devices."""
    devs = os.path.join(root, "bus/usb/devices")
    os.makedirs(devs)
    for bus in range(1, 5):
        ctrl = os.path.join(root, f"devices/pci0000:00/0000:00:1{bus}.0")
        hub_dir = os.path.join(ctrl, f"usb{bus}")
        entries = [(f"usb{bus}", hub_dir, "1d6b", "0002", None, 1)]
        hub = os.path.join(hub_dir, f"{bus}-1")
        entries.append((f"{bus}-1", hub, "05e3", "0608", None, 2))
        for port in range(1, 5):
            i = (bus - 1) * 4 + port - 1
            name = f"{bus}-1.{port}"
            entries.append((name, os.path.join(hub, name), "0403", "7840", SERIALS[i], 2 + port))
            entries.append((name + ":1.0", os.path.join(hub, name, name + ":1.0"), None, None, None, None))
        if bus == 4:
            # one BitBabbler nobody is assigned: the udev no-op (4:7)
            name = "4-1.5"
            entries.append((name, os.path.join(hub, name), "0403", "7840", UNASSIGNED, 7))
        for name, path, vid, pid, serial, devnum in entries:
            os.makedirs(path, exist_ok=True)
            os.symlink(os.path.relpath(path, devs), os.path.join(devs, name))
            if vid is None:
                continue
            attrs = {"idVendor": vid, "idProduct": pid, "busnum": str(bus),
                     "devnum": str(devnum), "uevent": "DEVTYPE=usb_device\n"}
            if serial:
                attrs["serial"] = serial
            for k, v in attrs.items():
                with open(os.path.join(path, k), "w") as f:
                    f.write(v + "\n")


def make_conf(path):
    with open(path, "w") as f:
        for d in range(4):
            f.write(f"DOMAIN_RNG_guest{d}=( {' '.join(SERIALS[d * 4:d * 4 + 4])} )\n")
    os.chmod(path, 0o644)


def run_once(cmd, env):
    """Wall seconds of one run."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"bench: {cmd} exited {p.returncode}")
    return wall


def max_rss(cmd, env):
    """Peak resident memory (KiB) of one run, from GNU time (Debian package
    `time`), or None without it. Not from Python's own wait4: a child forked
    from Python keeps Python's memory high-water mark across exec, so every
    command would show Python's ~15 MB; GNU time's fork starts at ~1 MB."""
    if not os.path.exists("/usr/bin/time"):
        return None
    r = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", "/dev/stdout"] + cmd, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        return int(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def instructions(cmd, env):
    """Instructions executed (valgrind callgrind's Ir), or None without valgrind."""
    if not shutil.which("valgrind"):
        return None
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cg.out")
        r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                            "--trace-children=no"] + cmd, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for line in r.stderr.splitlines():
            if "Collected :" in line:
                return int(line.split(":")[-1].strip())
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bbvirt", default="target/release/bbvirt")
    ap.add_argument("--event", default=None, help="the udev front (default: bbvirt-event next to --bbvirt)")
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    bbvirt = os.path.abspath(args.bbvirt)
    front = os.path.abspath(args.event or os.path.join(os.path.dirname(bbvirt), "bbvirt-event"))
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "sys")
        make_tree(root)
        conf = os.path.join(tmp, "vm.conf")
        make_conf(conf)
        env = dict(os.environ, BBVIRT_SYSFS_ROOT=root, BBVIRT_RUN_DIR=os.path.join(tmp, "run"))
        cases = [
            ("true", ["/bin/true"]),
            ("bash: source vm.conf", ["/bin/bash", "--norc", "-c", 'source "$1"', "x", conf]),
            ("virsh -c test:///default list", ["virsh", "-c", "test:///default", "list"]),
            ("bbvirt attach SERIAL -n", [bbvirt, "-C", conf, "attach", SERIALS[5], "-n"]),
            # The udev no-op: the rule's words for a BitBabbler no guest gets.
            ("bbvirt attach 4:7 (unassigned: no-op)", [bbvirt, "-C", conf, "attach", "4:7", "--syslog"]),
            ("bbvirt-event ... attach 4:7 (no-op)", [front, bbvirt, "-C", conf, "attach", "4:7", "--syslog"]),
            ("bbvirt attach-all -n (16 dev, 4 dom)", [bbvirt, "-C", conf, "attach-all", "-n",
                                                      "-c", "test:///default"]),
        ]
        samples = {name: [] for name, _ in cases}
        for _ in range(args.runs):
            for name, cmd in cases:
                samples[name].append(run_once(cmd, env))
        rss = {name: max_rss(cmd, env) for name, cmd in cases}
        med = {n: statistics.median(s) for n, s in samples.items()}
        print(f"per-invocation overhead, {args.runs} interleaved runs each, median wall time")
        print(f"{'command':40} {'median ms':>10} {'max RSS KiB':>12} {'instructions':>14}")
        for name, cmd in cases:
            ir = instructions(cmd, env)
            print(f"{name:40} {med[name] * 1000:10.2f} {rss[name] or '-':>12} {ir if ir else '-':>14}")
        a, aa = med["bbvirt attach SERIAL -n"], med["bbvirt attach-all -n (16 dev, 4 dom)"]
        print("ratios (same run):")
        print(f"  bbvirt attach -n / bash sourcing vm.conf : {a / med['bash: source vm.conf']:.2f}")
        print(f"  bbvirt attach -n / true                  : {a / med['true']:.2f}")
        print(f"  bbvirt attach-all -n / one virsh call    : {aa / med['virsh -c test:///default list']:.2f}")
        f, b = med["bbvirt-event ... attach 4:7 (no-op)"], med["bbvirt attach 4:7 (unassigned: no-op)"]
        print(f"  udev no-op: bbvirt-event / true          : {f / med['true']:.2f}")
        print(f"  udev no-op: bbvirt / bbvirt-event        : {b / f:.2f}")


if __name__ == "__main__":
    main()
