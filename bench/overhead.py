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
  the udev no-op                the rule's words for a BitBabbler no guest
                                gets (4:7), in udev's environment (ACTION,
                                DEVPATH, ...): through bbvirt, through the
                                front bbvirt-event, and through the front
                                without DEVPATH (it then scans every device,
                                as it did before it read the event's own)
  bbvirt attach-all -n          all 16, dry run, reading the 4 domains'
                                state from libvirt's in-process test driver

and prints the median wall time, peak memory (max RSS, with GNU time), with
valgrind the instruction count and with strace the system calls of one run
each, plus ratios to the baselines.

    python3 bench/overhead.py [--bbvirt target/release/bbvirt] [--runs 200]
                              [--baseline-event OTHER/bbvirt-event]

--baseline-event adds another build of the front (an older one, say) to the
same run, on the same no-op.
"""
import argparse
import json
import os
import resource
import shlex
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
    symlinked from bus/usb/devices. Returns the DEVPATH of the BitBabbler
    nobody is assigned (4:7), as udev gives it."""
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
            noop = os.path.join(hub, name)
            entries.append((name, noop, "0403", "7840", UNASSIGNED, 7))
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
    return "/" + os.path.relpath(noop, root)


def make_conf(path):
    with open(path, "w") as f:
        for d in range(4):
            f.write(f"DOMAIN_RNG_guest{d}=( {' '.join(SERIALS[d * 4:d * 4 + 4])} )\n")
    os.chmod(path, 0o644)


def run_once(cmd, env):
    """Wall seconds of one run, and its CPU seconds (user + system, from
    wait4: what other load on the machine does not stretch)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"bench: {cmd} exited {p.returncode}")
    return wall, ru.ru_utime + ru.ru_stime


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


def syscalls(cmd, env):
    """System calls of one run (strace -c -f's total, the exec'd program's
    included), or None without strace."""
    if not shutil.which("strace"):
        return None
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "strace.txt")
        subprocess.run(["strace", "-f", "-c", "-o", out] + cmd, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(out) as f:
            for line in f:
                if line.rstrip().endswith(" total"):
                    return int(line.split()[3])
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bbvirt", default="target/release/bbvirt")
    ap.add_argument("--event", default=None, help="the udev front (default: bbvirt-event next to --bbvirt)")
    ap.add_argument("--baseline-event", default=None,
                    help="another bbvirt-event to run beside, on the same no-op")
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    bbvirt = os.path.abspath(args.bbvirt)
    front = os.path.abspath(args.event or os.path.join(os.path.dirname(bbvirt), "bbvirt-event"))
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "sys")
        devpath = make_tree(root)
        conf = os.path.join(tmp, "vm.conf")
        make_conf(conf)
        env = dict(os.environ, BBVIRT_SYSFS_ROOT=root, BBVIRT_RUN_DIR=os.path.join(tmp, "run"))
        for k in ("ACTION", "DEVPATH", "SUBSYSTEM", "DEVTYPE", "BUSNUM", "DEVNUM", "PRODUCT"):
            env.pop(k, None)
        # What udev gives the rule's program for the no-op's add event.
        udev = dict(env, ACTION="add", SUBSYSTEM="usb", DEVTYPE="usb_device", BUSNUM="004",
                    DEVNUM="007", PRODUCT="403/7840/100",
                    DEVPATH=devpath)
        scanning = {k: v for k, v in udev.items() if k != "DEVPATH"}
        noop = ["-C", conf, "attach", "4:7", "--syslog"]
        cases = [
            ("true", ["/bin/true"], env),
            ("bash: source vm.conf", ["/bin/bash", "--norc", "-c", 'source "$1"', "x", conf], env),
            ("virsh -c test:///default list", ["virsh", "-c", "test:///default", "list"], env),
            ("bbvirt attach SERIAL -n", [bbvirt, "-C", conf, "attach", SERIALS[5], "-n"], env),
            # The udev no-op: the rule's words for a BitBabbler no guest gets.
            ("bbvirt attach 4:7 (unassigned: no-op)", [bbvirt] + noop, udev),
            ("bbvirt-event ... attach 4:7 (no-op)", [front, bbvirt] + noop, udev),
            ("  the same without DEVPATH (scan)", [front, bbvirt] + noop, scanning),
            ("bbvirt attach-all -n (16 dev, 4 dom)", [bbvirt, "-C", conf, "attach-all", "-n",
                                                      "-c", "test:///default"], env),
        ]
        if args.baseline_event:
            cases.insert(7, ("  --baseline-event's front, same no-op",
                             [os.path.abspath(args.baseline_event), bbvirt] + noop, udev))
        samples = {name: [] for name, _, _ in cases}
        cpu = {name: [] for name, _, _ in cases}
        for _ in range(args.runs):
            for name, cmd, e in cases:
                wall, used = run_once(cmd, e)
                samples[name].append(wall)
                cpu[name].append(used)
        rss = {name: max_rss(cmd, e) for name, cmd, e in cases}
        med = {n: statistics.median(s) for n, s in samples.items()}
        mcpu = {n: statistics.median(s) for n, s in cpu.items()}
        print(f"per-invocation overhead, {args.runs} interleaved runs each, median wall and CPU time")
        print(f"{'command':40} {'median ms':>10} {'CPU ms':>7} {'max RSS KiB':>12} {'instructions':>14}"
              f" {'syscalls':>9}")
        for name, cmd, e in cases:
            ir = instructions(cmd, e)
            sc = syscalls(cmd, e)
            print(f"{name:40} {med[name] * 1000:10.2f} {mcpu[name] * 1000:7.2f} {rss[name] or '-':>12}"
                  f" {ir if ir else '-':>14} {sc if sc else '-':>9}")
        a, aa = med["bbvirt attach SERIAL -n"], med["bbvirt attach-all -n (16 dev, 4 dom)"]
        print("ratios (same run):")
        print(f"  bbvirt attach -n / bash sourcing vm.conf : {a / med['bash: source vm.conf']:.2f}")
        print(f"  bbvirt attach -n / true                  : {a / med['true']:.2f}")
        print(f"  bbvirt attach-all -n / one virsh call    : {aa / med['virsh -c test:///default list']:.2f}")
        f, b = med["bbvirt-event ... attach 4:7 (no-op)"], med["bbvirt attach 4:7 (unassigned: no-op)"]
        scan = med["  the same without DEVPATH (scan)"]
        print(f"  udev no-op: bbvirt-event / true          : {f / med['true']:.2f}"
              f" (CPU time: {mcpu['bbvirt-event ... attach 4:7 (no-op)'] / mcpu['true']:.2f})")
        print(f"  udev no-op: bbvirt-event scanning / true : {scan / med['true']:.2f}")
        print(f"  udev no-op: bbvirt / bbvirt-event        : {b / f:.2f}")
        if args.baseline_event:
            base = med["  --baseline-event's front, same no-op"]
            print(f"  udev no-op: baseline front / true        : {base / med['true']:.2f}")
        if shutil.which("hyperfine"):
            fronts = [("bbvirt-event ... attach 4:7 (no-op)", front)]
            if args.baseline_event:
                fronts.append(("--baseline-event's front", os.path.abspath(args.baseline_event)))
            hyperfine(fronts, bbvirt, noop, udev, args.runs * 5)


def hyperfine(fronts, bbvirt, noop, udev, runs, rounds=30):
    """The udev no-op next to true again, timed by hyperfine: no shell, no
    Python between the runs (a lower floor than subprocess.run's), all in
    udev's environment. hyperfine runs each command's runs in a row, so the
    runs are split into rounds, each timing every command in turn; the
    figures are the medians over the rounds of each round's median."""
    cmds = ["/bin/true"] + [shlex.join([f, bbvirt] + noop) for _, f in fronts]
    per_round = max(runs // rounds, 10)
    medians = [[] for _ in cmds]
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "h.json")
        for _ in range(rounds):
            subprocess.run(["hyperfine", "-N", "--warmup", "10", "--runs", str(per_round),
                            "--export-json", out] + cmds, env=udev, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with open(out) as f:
                for m, r in zip(medians, json.load(f)["results"]):
                    m.append(r["median"])
    print(f"hyperfine -N, {rounds} rounds of {per_round} runs each, median of the rounds' medians:")
    for (name, _), m in zip([("true", None)] + fronts, medians):
        ratio = statistics.median(x / t for x, t in zip(m, medians[0]))
        print(f"  {name:38} {statistics.median(m) * 1000:6.3f} ms  / true {ratio:.2f}")


if __name__ == "__main__":
    main()
