"""Debian 13 under systemd (issue 8): scenarios 50-56, for the trixie platform.

lab/run --platform trixie boots a copy of a Debian 13 root with
systemd as PID 1, bbvirt installed into it from its Debian package before the
boot, and these units of lab/platform/trixie/:
  bbvirt-lab-gadgets.service  binds 4 emulated BitBabblers before udev's
                              coldplug: KWIF4Q, ABC1234 (guestA, which
                              autostarts), BRAVO01 (guestB, which does not),
                              LONER01 (nobody's)
  bbvirt-lab-settle.service   waits in `udevadm settle` early, ordered before
                              network.target (as ifupdown-pre.service does);
                              libvirtd.service is After=network.target
Scenarios:
  50 boot           after the boot: guestA holds exactly its two devices,
                    nothing else attached, no bbvirt error, no udev worker
                    held by bbvirt 1 s beyond the floor of its event
                    (61-bbvirt-lab-floor.rules: `true` run beside it),
                    bbvirt-sync.service ran; boot time and time to attached
  51 settle         the boot's settle: how long, that libvirtd.socket
                    listened while libvirtd.service waited for it, and the
                    same bound for bbvirt's runs meanwhile
  52 apparmor       QEMU confined by its libvirt-UUID profile (enforce);
                    hotplug, unplug, replug, coldplug; no denial
  54 crash hunt     >= 1,000 bbvirt runs in parallel bursts against the real
                    libvirtd, cores recorded; a few under valgrind memcheck
  55 settle, no bbvirt      (boot "nobbvirt": the rule masked)
  56 settle, hanging bbvirt (boot "hang": a bbvirt that waits on the socket)
Core scenarios (scenarios/hotplug.py) run in the main boot as well: 5, 10
and 11 by default, 1-4 when asked for (--only). ORDER is the order they all
run in, MAIN the main boot's default. Figures for lab/run's comparison
across boots are printed as `FIGURE name=value`.
"""

import os
import random
import re
import struct
import threading
import time

from ..core import (AB, BBVIRT, BR, KW, LONER, STORM, URI, WORK, act, check, find_dev, must, now, out,
                    rfile, run, scenario, settle, virsh)
from ..helpers import crash_recorder, crashes, qemu_pids, seed_of

T = ('trixie',)
ORDER = [50, 51, 58, 1, 2, 3, 4, 5, 10, 11, 52, 54, 59, 60, 55, 56]
# The main boot's default: 1-4 (hotplug, unplug, replug, coldplug) are the
# steps of 52, judged by the same checks, so they run only when asked for
# (lab/run --platform trixie --only 1,2,3,4): 4 minutes of TCG less.
MAIN = [50, 51, 58, 5, 10, 11, 52, 54, 59]
READY = '/run/bbvirt/ready'
SETTLE_UNIT = 'bbvirt-lab-settle.service'


def versions():
    """kernel, systemd, libvirt, QEMU of this platform (for the README)."""
    v = [os.uname().release]
    for pkg in ('systemd', 'libvirt-daemon-system', 'qemu-system-x86', 'apparmor'):
        r = run(['dpkg-query', '-W', '-f=${Version}', pkg])
        v.append('%s %s' % (pkg, r.out.strip() or '?'))
    return ', '.join(v)


def figure(name, value):
    out('FIGURE %s=%s' % (name, value))


def unit(name, *props):
    r = run(['systemctl', 'show', name] + ['-p' + p for p in props], timeout=30)
    return dict(l.split('=', 1) for l in r.out.splitlines() if '=' in l)


def mono(d, key):
    """A systemd ...TimestampMonotonic property, in seconds (0: never)."""
    try:
        return int(d.get(key, '0') or 0) / 1e6
    except ValueError:
        return 0.0


PACCT = '/run/bbvirt-lab-pacct'
ACCT_V3 = struct.Struct('<BBHIIIIIIf8H16s')   # struct acct_v3 (linux/acct.h), 64 bytes
AHZ = 100.0


def comp_t(v):
    """The kernel's comp_t: 13-bit mantissa, 3-bit base-8 exponent."""
    return (v & 0x1fff) << (3 * (v >> 13))


class Proc:
    """One ended process, from the kernel's accounting record."""

    def __init__(self, rec, wall_to_mono):
        (flag, version, tty, self.exitcode, uid, gid, self.pid, self.ppid, btime, etime,
         *comp, comm) = rec
        self.comm = comm.split(b'\0', 1)[0].decode(errors='replace')
        self.secs = etime / AHZ
        self.start = btime + wall_to_mono        # CLOCK_MONOTONIC, +-1 s (btime has 1 s steps)
        self.signal = flag & 0x10 and 'killed' or ''   # AXSIG
        utime, stime, mem, io, rw, minflt, majflt, swaps = [comp_t(v) for v in comp]
        self.cpu = (utime + stime) / AHZ
        self.majflt = majflt
        self.status = self.exitcode >> 8 if self.exitcode & 0x7f == 0 else -(self.exitcode & 0x7f)

    def __repr__(self):
        return '%s[%d<-%d] %.2fs (cpu %.2fs, %d major faults) rc=%s @%.0fs' % (
            self.comm, self.pid, self.ppid, self.secs, self.cpu, self.majflt, self.status, self.start)


def pacct():
    """Every process that ended since early boot (bbvirt-lab-acct.service)."""
    wall_to_mono = time.monotonic() - time.time()
    res = []
    with open(PACCT, 'rb') as f:
        data = f.read()
    for i in range(0, len(data) - ACCT_V3.size + 1, ACCT_V3.size):
        rec = ACCT_V3.unpack_from(data, i)
        if rec[1] & 0x0f == 3:
            res.append(Proc(rec, wall_to_mono))
    return res


def udev_bbvirt_runs():
    """bbvirt processes that udev ran (their parent was a udev worker), with
    how long each took: [Proc]. Workers are "(udev-worker)" processes; those
    still alive are seen in /proc."""
    procs = pacct()
    workers = {p.pid for p in procs if p.comm.startswith('(udev-worker')}
    for d in os.listdir('/proc'):
        if d.isdigit():
            try:
                if rfile('/proc/%s/comm' % d).startswith('(udev-worker'):
                    workers.add(int(d))
            except OSError:
                pass
    # The rule runs the front (bbvirt-event), which becomes bbvirt (exec,
    # same pid) when an event needs libvirt: accounting names the last.
    return [p for p in procs if p.comm in ('bbvirt', 'bbvirt-event') and p.ppid in workers], procs


FLOOR = 'lab-floor'


def beside_floor(runs, procs):
    """Each of `runs` with the floor run of its event: the copy of
    /usr/bin/true that 61-bbvirt-lab-floor.rules has udev run right after
    bbvirt-event in the same worker (the next such process of that worker):
    [(run, floor or None)]. bbvirt's own share of the worker's time is
    run.secs - floor.secs; the rest is what starting any program cost on
    this emulated machine at that moment (TCG, the root over 9p, a coldplug
    burst on 2 vCPUs)."""
    floors = sorted((p for p in procs if p.comm == FLOOR), key=lambda p: p.pid)
    used, res = set(), []
    for r in sorted(runs, key=lambda p: p.pid):
        f = next((p for p in floors if p.ppid == r.ppid and p.pid > r.pid and p.pid not in used), None)
        if f:
            used.add(f.pid)
        res.append((r, f))
    return res


def held_by_bbvirt(lab, runs, procs, what):
    """Issue 8's bound on `runs` (udev's bbvirt runs `what`): each holds its
    worker less than 1 s beyond the floor of its event. Checks that every
    run has its floor, reports the raw and the floor figures, and returns
    the longest share."""
    pairs = beside_floor(runs, procs)
    lone = [r for r, f in pairs if f is None]
    check(not lone, 'bbvirt runs by udev %s without the floor run of their event (%s): %s'
          % (what, FLOOR, lone))
    own = [(r.secs - f.secs, r, f) for r, f in pairs]
    worst = max(own, key=lambda x: x[0])
    lab.notes.append('%s: %d runs, bbvirt %.2f-%.2fs wall (CPU %.2f-%.2fs), the floor (true) of the same '
                     'events %.2f-%.2fs (CPU %.2f-%.2fs), bbvirt beyond the floor at most %.2fs (%r beside %r)'
                     % (what, len(pairs), min(r.secs for r, _ in pairs), max(r.secs for r, _ in pairs),
                        min(r.cpu for r, _ in pairs), max(r.cpu for r, _ in pairs),
                        min(f.secs for _, f in pairs), max(f.secs for _, f in pairs),
                        min(f.cpu for _, f in pairs), max(f.cpu for _, f in pairs),
                        worst[0], worst[1], worst[2]))
    check(worst[0] < 1.0, 'a bbvirt run by udev %s held its worker %.2fs beyond the floor of its event: '
          '%r beside %r (all: %s)' % (what, worst[0], worst[1], worst[2], pairs))
    return worst[0]


def settle_figures(lab, what, may_time_out=False):
    """The boot's bbvirt-lab-settle.service: (seconds in settle, props).
    may_time_out: settle giving up (its 120 s, exit 1) is an outcome too."""
    s = unit(SETTLE_UNIT, 'Result', 'ExecMainStartTimestampMonotonic', 'ExecMainExitTimestampMonotonic',
             'ActiveState', 'ExecMainStatus')
    ok = s.get('ActiveState') == 'active' and s.get('Result') == 'success'
    timed_out = s.get('Result') == 'exit-code' and s.get('ExecMainStatus') == '1'
    check(ok or (may_time_out and timed_out), '%s did not end well: %s' % (SETTLE_UNIT, s))
    if timed_out:
        lab.notes.append('udevadm settle gave up (exit 1): the queue never emptied')
    t0, t1 = mono(s, 'ExecMainStartTimestampMonotonic'), mono(s, 'ExecMainExitTimestampMonotonic')
    check(t0 > 0 and t1 >= t0, '%s timestamps: %s' % (SETTLE_UNIT, s))
    dur = t1 - t0
    figure('settle', '%.1f' % dur)
    lab.timing('settle at boot (%s)' % what, dur)
    lab.notes.append('settle %.1f-%.1fs after boot' % (t0, t1))
    return dur, t0, t1


def libvirtd_waited(lab, t0, t1):
    """libvirtd.socket listened while settle ran; libvirtd.service started
    only after it: the original's deadlock conditions were there."""
    sock = unit('libvirtd.socket', 'ActiveEnterTimestampMonotonic')
    svc = unit('libvirtd.service', 'ExecMainStartTimestampMonotonic', 'InactiveExitTimestampMonotonic')
    ts, tv = mono(sock, 'ActiveEnterTimestampMonotonic'), mono(svc, 'ExecMainStartTimestampMonotonic')
    check(0 < ts < t0, 'libvirtd.socket was not listening when settle started (%.1f, settle at %.1f)' % (ts, t0))
    if tv:
        check(tv >= t1, 'libvirtd.service started at %.1fs, before settle ended (%.1fs)' % (tv, t1))
    lab.notes.append('libvirtd.socket up at %.1fs, libvirtd.service started at %s' % (
        ts, ('%.1fs' % tv) if tv else 'not yet'))


# ------------------------------------------------------------------ boot

@scenario(50, 'boot', platforms=T)
def sc_boot(lab):
    J = lab.syslog
    J.sync()
    failed = run(['systemctl', '--failed', '--plain', '--no-legend']).out.strip()
    check(lab.system_state == 'running', 'systemctl is-system-running: %s (failed units: %s)'
          % (lab.system_state, failed or 'none'))
    target = must(['systemctl', 'get-default']).out.strip()
    tgt = unit(target, 'ActiveState', 'ActiveEnterTimestampMonotonic')
    check(tgt.get('ActiveState') == 'active', 'default target %s: %s' % (target, tgt))
    t_boot = mono(tgt, 'ActiveEnterTimestampMonotonic')
    an = run(['systemd-analyze']).out.strip().splitlines()
    lab.notes.append('systemd-analyze: %s' % (an[0] if an else '?'))
    figure('boot', '%.1f' % t_boot)

    # The devices bound at boot, and where they are now.
    devs = {s: find_dev(s) for s in (KW, AB, BR, LONER)}
    check(all(devs.values()), 'devices bound at boot missing: %s' % devs)
    k, a = devs[KW], devs[AB]
    expect = {'guestA': [k, a]}
    lab.wait_state(expect, now(), 'guestA (autostarted) to hold %s and %s' % (k, a), 240)
    check('guestB' not in lab.active(), 'guestB (not autostarted) is running')
    lab.hold(expect, 'after boot: guestA holds exactly its devices, %s stays on the host' % LONER, 3)
    check(find_dev(LONER) is not None, '%s left the host' % LONER)
    J.sync()

    # bbvirt-sync.service: pulled in by libvirtd.service, ran after it.
    sy = unit('bbvirt-sync.service', 'LoadState', 'Result', 'ExecMainStatus', 'NRestarts',
              'ExecMainStartTimestampMonotonic', 'ExecMainExitTimestampMonotonic')
    lv = unit('libvirtd.service', 'ActiveEnterTimestampMonotonic', 'ExecMainStartTimestampMonotonic', 'MainPID')
    check(sy.get('LoadState') == 'loaded', 'bbvirt-sync.service is not installed: %s' % sy)
    check(mono(sy, 'ExecMainStartTimestampMonotonic') > 0, 'bbvirt-sync.service never ran: %s' % sy)
    check(sy.get('Result') == 'success' and sy.get('ExecMainStatus') == '0',
          'bbvirt-sync.service: %s' % sy)
    t_lv = mono(lv, 'ActiveEnterTimestampMonotonic')
    t_sync0, t_sync1 = mono(sy, 'ExecMainStartTimestampMonotonic'), mono(sy, 'ExecMainExitTimestampMonotonic')
    check(os.path.exists(READY), '%s missing after bbvirt-sync.service ran' % READY)
    lab.notes.append('%s: %r (libvirtd pid %s)' % (READY, rfile(READY), lv.get('MainPID')))

    # When guestA got its devices (the journal: bbvirt's "attached" lines).
    first = {}
    for t, m in J.lines:
        mm = re.search(r"\]: attached (\S+) .*to '?guestA'?$", m)
        if mm and mm.group(1) in (KW, AB):
            first.setdefault(mm.group(1), t)
    check(len(first) == 2, 'the journal lacks bbvirt "attached ... to guestA" lines for %s and %s: %s'
          % (KW, AB, first))
    t_att = max(first.values())
    figure('attached', '%.1f' % t_att)
    lab.timing('boot->attached', t_att)
    lab.timing('libvirtd active->attached', t_att - t_lv)
    lab.notes.append('default target %s at %.1fs, libvirtd active at %.1fs, bbvirt-sync %.1f-%.1fs (restarts %s)'
                     % (target, t_boot, t_lv, t_sync0, t_sync1, sy.get('NRestarts')))

    # No bbvirt error, no wait, no worker held.
    bad = [(t, m) for t, ident, pid, prio, m in J.entries if ident == 'bbvirt' and prio <= 3]
    check(not bad, 'bbvirt logged errors in this boot: %s' % ['%.1fs %s' % x for x in bad])
    warn = [m for t, ident, pid, prio, m in J.entries if ident == 'bbvirt' and prio == 4]
    waited = [m for t, m in J.lines if re.search(r'timed out|waiting for the lock', m)]
    check(not waited, 'bbvirt waited: %s' % waited)
    notready = [m for t, m in J.lines if 'not ready' in m]
    runs, procs = udev_bbvirt_runs()
    check(runs, 'no bbvirt run by udev in the process accounting (%d records)' % len(procs))
    # virtme-ng's init triggers a second coldplug once the boot is over: the
    # boot's own runs are the ones before that
    trig = [t for t, ident, pid, prio, m in J.entries if 'triggering udev coldplug' in m]
    t_trig = trig[0] if trig else now()
    boot_runs = [r for r in runs if r.start < t_trig - 1]
    check(len(boot_runs) >= 4, 'udev ran bbvirt %d times during the boot, want >= 4 (coldplug of 4 '
          'devices): %s' % (len(boot_runs), boot_runs))
    failed_runs = [r for r in runs if r.status != 0]
    check(not failed_runs, 'bbvirt runs by udev that failed: %s' % failed_runs)
    worst = max(r.secs for r in runs)
    figure('worker_max', '%.2f' % worst)
    bw = max(r.secs for r in boot_runs)
    med = sorted(r.secs for r in runs)[len(runs) // 2]
    sync = [p for p in procs if p.comm == 'bbvirt' and p.ppid == 1]
    if sync and sync[0].start < t_lv:   # bbvirt-lab-gadgets.service: bbvirt --version
        lab.notes.append('page-cache warm-up (bbvirt --version before coldplug): %r' % sync[0])
        sync = sync[1:]
    lab.notes.append('%d bbvirt runs by udev (%d in the boot\'s coldplug, longest %.2fs; all: longest %.2fs, '
                     'median %.2fs; process accounting, 10 ms steps), %d "not ready" lines, %d warnings, 0 errors; '
                     'bbvirt-sync run %s'
                     % (len(runs), len(boot_runs), bw, worst, med, len(notready), len(warn),
                        ', '.join('%.1fs' % p.secs for p in sync) or '?'))
    if notready:
        lab.notes.append('e.g. "%s"' % notready[0].split(': ', 1)[-1][:160])
    act('bbvirt runs by udev: %s' % runs)
    # Runs before the daemon served (the ready file's time) must not have
    # waited on it. Starting any bbvirt process costs 4-12 s here (TCG, the
    # root over 9p: ~1 s of CPU and ~400 major faults to load libvirt.so and
    # its libraries; `bbvirt --version` took 3.9 s in the boot that showed
    # it); the bound stays 1 s all the same. Runs after it attach
    # for real (the lock held by bbvirt-sync meanwhile), bounded by the
    # 20 s deadline.
    t_ready = os.stat(READY).st_mtime + (time.monotonic() - time.time())
    before = [r for r in runs if r.start < t_ready - 1]
    check(before, 'no bbvirt run by udev before the daemon served (%.1fs)' % t_ready)
    wb = max(r.secs for r in before)
    figure('worker_max_not_ready', '%.2f' % wb)
    lab.notes.append('before the daemon served (%.0fs): %d runs, %.1f-%.1fs wall, %.1f-%.1fs CPU'
                     % (t_ready, len(before), min(r.secs for r in before), wb,
                        min(r.cpu for r in before), max(r.cpu for r in before)))
    # Issue 8 asks ~1 s. Here starting any program in a coldplug burst can
    # take seconds (the floor, run beside each bbvirt run): the bound is on
    # bbvirt's share, side by side with the floor of the same event.
    figure('worker_max_beyond_floor', '%.2f' % held_by_bbvirt(lab, before, procs, 'before the daemon served'))
    check(worst < 30, 'a bbvirt run by udev held its worker %.2fs, past its 20 s deadline and its start (all runs: %s)' % (worst, runs))


@scenario(51, 'settle', platforms=T)
def sc_settle(lab):
    dur, t0, t1 = settle_figures(lab, 'with bbvirt')
    libvirtd_waited(lab, t0, t1)
    # bbvirt ran (for the coldplug events) while settle waited, and never
    # held it: how long settle takes compared with a boot without bbvirt is
    # lab/run's check 57 (settle itself waits for all of coldplug, which
    # under emulation takes tens of seconds whatever bbvirt does)
    runs, procs = udev_bbvirt_runs()
    during = [r for r in runs if t0 - 1 <= r.start <= t1 + 1]
    check(during, 'no bbvirt run by udev while settle waited (%.1f-%.1fs): %s' % (t0, t1, runs))
    # the bound, beside the floor of each event: scenario 50
    held_by_bbvirt(lab, during, procs, 'while settle waited')


@scenario(55, 'settle, no bbvirt', platforms=T)
def sc_settle_without(lab):
    check(os.path.realpath('/etc/udev/rules.d/60-bbvirt.rules') == '/dev/null',
          'boot "nobbvirt": the rule is not masked')
    dur, t0, t1 = settle_figures(lab, 'rule masked')
    libvirtd_waited(lab, t0, t1)
    runs, _ = udev_bbvirt_runs()
    check(not runs, 'udev ran bbvirt with its rule masked: %s' % runs)


@scenario(56, 'settle, hanging bbvirt', platforms=T)
def sc_settle_hang(lab):
    cmdline = rfile('/proc/cmdline')
    m = re.search(r'udev\.event_timeout=(\d+)', cmdline)
    check(m, 'boot "hang" without udev.event_timeout= on the kernel command line')
    limit = int(m.group(1))
    dur, t0, t1 = settle_figures(lab, 'hanging bbvirt', may_time_out=True)
    libvirtd_waited(lab, t0, t1)
    lab.syslog.sync()
    hung = [x for x in lab.syslog.lines if 'lab hang-bbvirt' in x[1]]
    check(hung, 'the hanging bbvirt never connected to libvirt-sock')
    killed = [x for x in lab.syslog.entries if x[1] == 'systemd-udevd' and 'bbvirt' in x[4]
              and re.search(r'taking longer|timed out|killing', x[4])]
    runs, _ = udev_bbvirt_runs()
    lab.notes.append('%d runs connected and hung (%s); udevd: "%s"' % (
        len(hung), ' '.join('%.0fs' % r.secs for r in runs), killed[-1][4][:120] if killed else '-'))
    # The scenario's point: this setup can fail. A bbvirt that waits on the
    # socket holds settle (and the boot) until udev kills it.
    check(dur >= 0.8 * limit, 'settle took only %.1fs with a hanging bbvirt (udev.event_timeout=%d): '
          'the setup does not reproduce the deadlock' % (dur, limit))


# -------------------------------------------------------------- apparmor

def confinement(pid):
    try:
        return rfile('/proc/%d/attr/current' % pid)
    except OSError as e:
        return 'unreadable: %s' % e


def denials(since):
    """AppArmor denials in the kernel log (journal, this boot) since `since`."""
    r = run(['journalctl', '-k', '-b', '-o', 'short-monotonic', '--no-pager', '--grep', 'apparmor="DENIED"'],
            timeout=60)
    res = []
    for line in r.out.splitlines():
        mm = re.match(r'\[\s*([\d.]+)\]', line)
        if mm and float(mm.group(1)) >= since:
            res.append(line)
    return res


def check_confined(lab, dom):
    pids = qemu_pids(dom)
    check(len(pids) == 1, 'QEMU of %s: pids %s' % (dom, pids))
    uuid = must(['virsh', '-c', URI, 'domuuid', dom]).out.strip()
    want = 'libvirt-%s (enforce)' % uuid
    have = confinement(pids[0])
    check(have == want, 'QEMU of %s (pid %d) runs as %r, want %r' % (dom, pids[0], have, want))
    return have


@scenario(52, 'apparmor', platforms=T)
def sc_apparmor(lab):
    t_since = now()
    check(rfile('/sys/module/apparmor/parameters/enabled') == 'Y', 'AppArmor is not enabled')
    ld = confinement(lab.libvirtd.pid)
    check(ld == 'libvirtd (enforce)', 'libvirtd runs as %r, want libvirtd (enforce)' % ld)
    check(unit('libvirtd.service', 'ActiveState')['ActiveState'] == 'active', 'libvirtd not active')
    lab.reset(running=('guestA',))
    prof = check_confined(lab, 'guestA')
    # hotplug, unplug, replug on another address
    d1 = lab.plug(KW)
    lab.timing('plug->attached', lab.wait_state({'guestA': [d1]}, d1.t_plug, '%s attached (confined QEMU)' % d1))
    ids = lab.qemu_ids('guestA')
    check(ids == [d1.alias], "QEMU's info usb: %s, want [%s]" % (ids, d1.alias))
    t = lab.unplug(KW)
    lab.timing('unplug->detached', lab.wait_state({}, t, '%s detached' % d1))
    d2 = lab.plug(KW)
    check((d2.bus, d2.dev) != (d1.bus, d1.dev), 'replug kept the address %s' % d1.busdev)
    lab.timing('replug->attached', lab.wait_state({'guestA': [d2]}, d2.t_plug, '%s attached at its new address' % d2))
    # coldplug: a new QEMU, a new profile instance, devices through the hook
    a = lab.plug(AB)
    lab.wait_state({'guestA': [d2, a]}, a.t_plug, 'both attached')
    lab.destroy('guestA')
    t = lab.start('guestA')
    lab.timing('start->attached', lab.wait_state({'guestA': [d2, a]}, t, 'coldplug through the hook'))
    check_confined(lab, 'guestA')
    r = virsh('qemu-monitor-command', 'guestA', '--hmp', 'info usb')
    usb = [l.strip() for l in r.out.splitlines() if l.strip()]
    check(len(usb) == 2 and all('ua-bbvirt-' in l for l in usb), "QEMU's info usb: %s" % usb)
    lab.hold({'guestA': [d2, a]}, 'after the coldplug', 2)
    # the QEMU process opened the device nodes
    pid = qemu_pids('guestA')[0]
    nodes = sorted(os.readlink('/proc/%d/fd/%s' % (pid, fd)) for fd in os.listdir('/proc/%d/fd' % pid)
                   if os.readlink('/proc/%d/fd/%s' % (pid, fd)).startswith('/dev/bus/usb/'))
    want = sorted('/dev/bus/usb/%03d/%03d' % (d.bus, d.dev) for d in (d2, a))
    check(nodes == want, 'QEMU holds %s open, want %s' % (nodes, want))
    den = denials(0)
    check(not den, 'AppArmor denials in this boot: %s' % den[:10])
    lab.notes.append('QEMU %s; opened %s; info usb: %s; 0 denials' % (prof, ' '.join(nodes), ' | '.join(usb)))
    _ = t_since


# ------------------------------------------------------------- crash hunt

VALGRIND = ['valgrind', '--error-exitcode=99', '--quiet', '--trace-children=no']


@scenario(54, 'crash hunt', platforms=T)
def sc_crash_hunt(lab):
    crash_recorder()
    n_cores = len(crashes())
    target = lab.args.crash_runs
    lab.reset(running=('guestA',))
    devs = lab.plug(*STORM)
    n = lab.plug(LONER)
    expect = {'guestA': devs}
    # The hunt needs this state, not a timing: udev's runs attach the
    # devices; a run that met its deadline meanwhile (a slow host) is made
    # good by a sync.
    settle()
    if lab.problems(expect, full=False):
        lab.bbvirt('sync', ok=False)
    lab.wait_state(expect, devs[0].t_plug, 'the 4 storm devices attached', 120)
    seed = seed_of(lab)
    rng = random.Random(seed)
    xml = virsh('dumpxml', 'guestA').out
    counts, rcs, bad = {}, {}, []
    lock = threading.Lock()
    t0 = now()

    def one(kind, argv, stdin=None):
        r = run([BBVIRT] + argv, timeout=120, input=stdin)
        with lock:
            counts[kind] = counts.get(kind, 0) + 1
            rcs[r.rc] = rcs.get(r.rc, 0) + 1
            if not isinstance(r.rc, int) or r.rc < 0 or r.rc > 2:
                bad.append(str(r)[:600])

    def menu():
        """One run: mostly the cheap and the no-op ones, a few real detaches
        (each costs a hot-unplug and, by the next sync or attach, a hotplug:
        seconds under TCG)."""
        d = rng.choice(devs)
        items = [
            (10, 'status', ['status', '--json']), (8, 'status', ['status']),
            (8, 'check', ['check']), (8, 'sync', ['sync']), (6, 'sync', ['-n', 'sync']),
            (5, 'attach-all', ['attach-all', 'guestA']), (4, 'attach-all', ['-n', 'attach-all']),
            (8, 'attach', ['attach', d.busdev]), (6, 'attach', ['attach', d.serial]),
            (6, 'attach', ['attach', d.busdev, '--syslog']), (3, 'attach', ['attach', n.busdev]),
            (3, 'attach', ['attach', LONER, '-D', 'guestB']),
            (2, 'detach', ['detach', d.busdev]), (1, 'detach', ['detach', d.serial, '--syslog']),
            (5, 'detach', ['-n', 'detach', d.serial]), (4, 'detach', ['detach', n.busdev]),
            (4, 'hook', ['hook', 'guestA', 'started', 'begin', '-']),
            (2, 'hook', ['hook', 'guestB', 'started', 'begin', '-']),
            (2, 'hook', ['hook', 'guestA', 'stopped', 'end', '-']),
        ]
        w, kind, argv = rng.choices(items, [i[0] for i in items])[0]
        return kind, argv

    done = 0
    bursts = 0
    while done < target:
        size = rng.choice([4, 8, 12])
        jobs = [menu() for _ in range(size)]
        ths = [threading.Thread(target=one, args=(k, a, xml if k == 'hook' else None)) for k, a in jobs]
        for th in ths:
            th.start()
        for th in ths:
            th.join(180)
        done += size
        bursts += 1
        if bursts % 25 == 0:
            out('lab: crash hunt: %d runs, %.0fs' % (done, now() - t0))
    secs = now() - t0
    # the state is still right: sync (a detach may have been last) and check
    lab.bbvirt('sync')
    lab.wait_state(expect, now(), 'guestA holding the 4 devices after the hunt and a sync', 120)
    lab.hold(expect, 'after the crash hunt', 2)
    settle()
    cores = crashes()[n_cores:]
    mine = [c for c in cores if c and c[0] == 'bbvirt']
    lab.notes.append('seed %d, %d runs in %d bursts (%.0fs, %.2fs/run): %s; exit codes %s; %d cores (%d bbvirt)'
                     % (seed, done, bursts, secs, secs / done,
                        ' '.join('%s %d' % kv for kv in sorted(counts.items())),
                        ' '.join('%s:%d' % kv for kv in sorted(rcs.items(), key=str)), len(cores), len(mine)))
    figure('crash_runs', done)
    check(not mine, 'bbvirt died by a signal: %s' % mine)
    check(not bad, 'runs with an unexpected exit: %s' % bad[:5])

    # valgrind memcheck on a few runs: the ones that talk to libvirt
    vg = []
    d = devs[0]
    # the detach path is where the heap corruption was seen; each run costs
    # minutes under valgrind on TCG
    # (--timeout: bbvirt's 20 s deadline would end the attach under
    # valgrind before libvirt's work; each run must do its work, rc 0)
    for argv in (['detach', d.serial], ['attach', d.busdev]):
        log = '%s/valgrind-%s.log' % (WORK, argv[0])
        r = run(VALGRIND + ['--log-file=' + log, BBVIRT, '--timeout', '900'] + argv, timeout=1000)
        text = open(log, errors='replace').read() if os.path.exists(log) else ''
        last = (r.err.strip().splitlines() or ['-'])[-1][:160]
        vg.append('%s: rc %s %.0fs ("%s")' % (' '.join(argv), r.rc, r.secs, last))
        check(r.rc == 0 and 'Invalid' not in text and 'uninitialised' not in text,
              'valgrind on bbvirt %s: rc %s\n%s\n%s' % (' '.join(argv), r.rc, text[-3000:], r.err[-1000:]))
    lab.wait_state(expect, now(), 'guestA holding the 4 devices after the valgrind runs', 120)
    lab.notes.append('valgrind memcheck, 0 errors: %s' % '; '.join(vg))
