"""The hardening scenarios (issue 4): 12-19, faults and hostile input.

Judged like the others: by libvirt's live XML and QEMU's own view
(Lab.problems / wait_state / hold), polling with deadlines. Each also fails
when a bbvirt process died by a signal meanwhile (hscenario).

  12 silent socket   libvirt's socket accepts and never answers: udev's
                     bbvirt ends within its deadline, one log line says what
                     timed out; with the real libvirtd back, coldplug works
  13 parallel        8 plug/unplug events at once on 4 devices, 20 rounds
  14 libvirtd killed SIGKILL with devices attached, restart: still right,
                     `bbvirt sync` has nothing to do
  15 lost remove     rule masked during an unplug: stale entry (status says
                     so), replug on another bus replaces it
  16 guest destroyed nothing left over; started again: devices back
  17 unplug mid-attach
                     the lab holds bbvirt's lock while the device goes
  18 hostile gadgets more hostile serials through real gadgets
  19 soak            seeded random plug/unplug/replug/start/destroy/
                     libvirtd restart over 4 devices and 2 guests

Every helper asks libvirt through core.virsh(), which uses libvirt's C API
where it can (fastvirt.py); scenario 12 turns that off (core.virsh_api)
while its silent socket sits where libvirtd's was. Standard library only.
"""

import fcntl
import os
import random
import re
import signal
import socket
import threading
import time

from ..core import (AB, BASE_CONF, BBVIRT, BR, GUESTS, KW, RULE_MASK, STORM, Failure, act, check,
                    find_dev, find_nameless, must, now, out, run, scenario, settle, virsh,
                    virsh_api, wait_for, wfile)
from ..helpers import (bbvirt_lines, check_healthy, crash_recorder, crashes, qemu_pids, seed_of,
                       status_json)

LOCK_DIR = '/run/bbvirt'
LOCK_FILE = LOCK_DIR + '/lock'
LIBVIRT_SOCK = '/run/libvirt/libvirt-sock'
HOLD = 1.0   # seconds a state must hold in these scenarios (the lab's default is 3)


def hscenario(num, name):
    """core.scenario, for this file's scenarios; each also fails when a
    bbvirt process died by a signal meanwhile (helpers.crash_recorder)."""
    def deco(fn):
        def wrapped(lab):
            crash_recorder()
            n = len(crashes())
            fn(lab)
            new = crashes()[n:]
            mine = [c for c in new if c and c[0] == 'bbvirt']
            check(not mine, 'bbvirt died by a signal: %s' % ['pid %s signal %s' % (c[1], c[2]) for c in mine])
            if new:
                lab.notes.append('other crashes: %s' % new)
        wrapped.__name__, wrapped.__doc__ = fn.__name__, fn.__doc__
        scenario(num, name)(wrapped)
        return fn
    return deco


# ---------------------------------------------------------------- helpers

def bbvirt_procs():
    """Running bbvirt processes: {pid: argv}."""
    res = {}
    for p in os.listdir('/proc'):
        if not p.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % p, 'rb') as f:
                argv = f.read().split(b'\0')
            with open('/proc/%s/stat' % p) as f:
                state = f.read().rsplit(')', 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if argv and argv[0] == BBVIRT.encode() and state != 'Z':
            res[int(p)] = [x.decode(errors='replace') for x in argv[1:] if x]
    return res


def alive(pid):
    return pid in bbvirt_procs()


def has_open(pid, path):
    try:
        fds = os.listdir('/proc/%d/fd' % pid)
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink('/proc/%d/fd/%s' % (pid, fd)) == path:
                return True
        except OSError:
            pass
    return False


class ProcWatch(threading.Thread):
    """Records every bbvirt process seen while it runs: {pid: argv}."""

    def __init__(self):
        super().__init__(daemon=True)
        self.seen = {}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            for pid, argv in bbvirt_procs().items():
                self.seen.setdefault(pid, argv)
            time.sleep(0.03)


def parse_busdev(s):
    m = re.match(r'^(\d+):(\d+)$', s)
    return (int(m.group(1)), int(m.group(2))) if m else None


def free_udcs(lab, exclude=()):
    used = {g.udc for g in lab.gadgets.values() if g.udc}
    return [u for u in lab.udcs if u not in used and u not in exclude]


def plug_on(lab, serial, udc):
    """Plug serial into this UDC, wait for the kernel to enumerate it."""
    t = lab.bind(serial, udc)
    d, _ = wait_for(lambda: find_dev(serial), 30, 'USB device %r to enumerate' % serial)
    d.t_plug = t
    return d


class SilentServer(threading.Thread):
    """A unix socket that accepts connections and never answers."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.conns = []
        self.stop = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(64)
        self.sock.settimeout(0.1)

    @property
    def accepted(self):
        return len(self.conns)

    def run(self):
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            self.conns.append(c)
            act('silent server: accepted connection %d (never answered)' % len(self.conns))

    def close(self):
        self.stop.set()
        self.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()
        if os.path.lexists(self.path):
            os.unlink(self.path)
        act('silent server closed, %s removed' % self.path)


# -------------------------------------------------------------- scenarios

@hscenario(12, 'silent socket')
def sc_silent_socket(lab):
    lab.reset(running=())
    lab.stop_libvirtd()
    virsh_api(False)
    for s in ('libvirt-sock', 'virtqemud-sock'):
        if os.path.lexists('/run/libvirt/' + s):
            os.unlink('/run/libvirt/' + s)
    srv = SilentServer(LIBVIRT_SOCK)
    srv.start()
    try:
        t = now()
        settled = {}

        def settle_bg():
            r = run(['udevadm', 'settle', '--timeout=120'], timeout=150)
            settled['rc'], settled['t'] = r.rc, now()
        th = threading.Thread(target=settle_bg, daemon=True)
        k = lab.plug(KW)
        th.start()
        # udev's bbvirt has read vm.conf, taken the lock and connected
        wait_for(lambda: srv.accepted >= 1, 20, "udev's bbvirt to connect to the silent socket")
        # Meanwhile, by hand: bounded by vm.conf's BBVIRT_TIMEOUT (it waits
        # for the lock udev's bbvirt holds) and by --timeout (status takes no
        # lock: it hangs on the socket).
        lab.write_conf(BASE_CONF + 'BBVIRT_TIMEOUT=3\n')
        r = lab.bbvirt('attach', KW, timeout=30, ok=False)
        lab.write_conf(BASE_CONF)
        check(r.rc not in (0, 'timeout') and r.secs < 8 and 'timed out after 3 s' in r.err,
              'bbvirt attach with BBVIRT_TIMEOUT=3 against the silent socket: %s' % r)
        lab.timing('attach (BBVIRT_TIMEOUT=3)', r.secs)
        r = lab.bbvirt('status', '--timeout', '2', timeout=30, ok=False)
        check(r.rc not in (0, 'timeout') and r.secs < 7 and 'timed out after 2 s' in r.err,
              'bbvirt status --timeout 2 against the silent socket: %s' % r)
        check(srv.accepted >= 2, 'bbvirt status never connected to the silent socket')
        # the udev event ends within bbvirt's default deadline (20 s)
        kk = lab.udev.find('KERNEL', 'add', k.name, t)
        u, _ = wait_for(lambda: lab.udev.find('UDEV', 'add', k.name, t), 45,
                        'udev to finish the add event of %s' % k)
        ev = u - (kk or t)
        lab.timing('udev add (silent libvirt)', ev)
        check(ev < 30, 'udev needed %.1fs for the add event (bound: 20 s deadline)' % ev)
        th.join(60)
        check('t' in settled and settled['rc'] == 0,
              'udevadm settle did not return in time: %s' % settled)
        lab.timing('settle', settled['t'] - k.t_plug)
        check(settled['t'] - k.t_plug < 30, 'udevadm settle took %.1fs' % (settled['t'] - k.t_plug))
        r = run(['udevadm', 'settle', '--timeout=30'], timeout=40)
        check(r.rc == 0 and r.secs < 5, 'a second udevadm settle: %s' % r)
        # nothing left running, one line saying what timed out
        wait_for(lambda: not bbvirt_procs() or (False, bbvirt_procs()), 10, 'no bbvirt left running')
        lines = [m for _, m in bbvirt_lines(lab, t) if 'timed out' in m]
        check(len(lines) == 1, 'want one "timed out" line from udev\'s bbvirt, got %r' % lines)
        check('connecting to libvirt' in lines[0], 'the timeout line does not say what timed out: %r' % lines[0])
        lab.notes.append('logged: "%s"' % lines[0])
    finally:
        srv.close()
        virsh_api(True)
    # the real libvirtd, then guestA: coldplug through the hook
    lab.start_libvirtd()
    lab.timing('libvirtd start', lab.libvirtd_secs)
    lab.hold({}, 'libvirtd back, guests off', HOLD)
    t = lab.start('guestA')
    secs = lab.wait_state({'guestA': [k]}, t, 'guestA start attaching %s' % k)
    lab.timing('start->attached', secs)
    lab.hold({'guestA': [k]}, 'after guestA started', HOLD)


@hscenario(13, 'parallel')
def sc_parallel(lab):
    rounds, events = 20, 8
    lab.reset(running=('guestA',))
    seed = seed_of(lab)
    rng = random.Random(seed)
    for s in STORM:
        lab.gadget(s)
    udc_lock = threading.Lock()
    errors = []

    def toggle(serial, n, r):
        g = lab.gadgets[serial]
        try:
            for _ in range(n):
                if g.udc is None:
                    with udc_lock:
                        udc = r.choice(free_udcs(lab))
                        g.udc = g.last_udc = udc      # reserved
                    wfile(g.path + '/UDC', udc)
                    act('plugged %r into %s' % (serial, udc))
                    gone = False
                else:
                    wfile(g.path + '/UDC', '\n')
                    act('unplugged %r from %s' % (serial, g.udc))
                    with udc_lock:
                        g.udc = None
                    gone = True
                t = now()
                while (find_dev(serial) is None) != gone:
                    if now() - t > 20:
                        raise Failure('%s did not %s' % (serial, 'go' if gone else 'enumerate'))
                    time.sleep(0.02)
        except Exception as e:   # reported by the main thread
            errors.append('%s: %s' % (serial, e))

    worst = 0
    t_all = now()
    for rnd in range(1, rounds + 1):
        counts = [0] * len(STORM)
        for _ in range(events):
            counts[rng.randrange(len(STORM))] += 1
        ths = [threading.Thread(target=toggle, args=(s, n, random.Random(rng.random())))
               for s, n in zip(STORM, counts) if n]
        t = now()
        for th in ths:
            th.start()
        for th in ths:
            th.join(60)
        check(not errors, 'round %d: %s' % (rnd, '; '.join(errors)))
        settle()
        present = [find_dev(s) for s in STORM if lab.gadgets[s].udc]
        check(all(present), 'round %d: a plugged device is missing: %s' % (rnd, present))
        lab.wait_state({'guestA': present}, t, 'round %d (%s): guestA holds %s' % (
            rnd, ' '.join('%s x%d' % (s[-2:], n) for s, n in zip(STORM, counts)), present), 60)
        worst = max(worst, now() - t)
    lab.hold({'guestA': present}, 'after %d rounds' % rounds, HOLD)
    runs = bbvirt_lines(lab, t_all)
    lab.notes.append('seed %d, %d rounds x %d events, %d attached, %d detached, worst round %.1fs'
                     % (seed, rounds, events, len([1 for _, m in runs if m.startswith('attached ')]),
                        len([1 for _, m in runs if m.startswith('detached ')]), worst))


@hscenario(14, 'libvirtd killed')
def sc_libvirtd_killed(lab):
    lab.reset()
    k, a, b = lab.plug(KW, AB, BR)
    expect = {'guestA': [k, a], 'guestB': [b]}
    lab.wait_state(expect, k.t_plug, 'devices attached')
    qemus = {d: qemu_pids(d) for d in GUESTS}
    lab.libvirtd.send_signal(signal.SIGKILL)
    lab.libvirtd.wait(30)
    act('libvirtd killed (SIGKILL)')
    for d in GUESTS:
        check(qemu_pids(d) == qemus[d] and qemus[d], 'QEMU of %s did not survive libvirtd: %s -> %s'
              % (d, qemus[d], qemu_pids(d)))
    t = now()
    lab.start_libvirtd()
    lab.timing('libvirtd restart', lab.libvirtd_secs)
    # the hook's `reconnect` re-announces the devices; udev's bbvirt finds them attached
    wait_for(lambda: len([m for _, m in bbvirt_lines(lab, t) if 'reconnect: asked udev' in m]) >= 3,
             60, "the hook's reconnect re-announcing the 3 devices")
    lab.hold(expect, 'after libvirtd restarted', HOLD)
    before = {d: virsh('dumpxml', d).out for d in GUESTS}
    r = lab.bbvirt('-n', 'sync')
    check(r.out.strip() == '', 'bbvirt -n sync would do something: %s' % r)
    r = lab.bbvirt('sync', '-v')
    done = [l for l in r.err.splitlines() if re.search(r'\b(attached|detached) \S+ (to|from) |stale|warning|error', l)]
    check(not done, 'bbvirt sync did something: %s' % done)
    n = r.err.count('is already attached')
    check(n == 3, 'bbvirt sync -v: %d devices "already attached", want 3: %s' % (n, r))
    after = {d: virsh('dumpxml', d).out for d in GUESTS}
    for d in GUESTS:
        check(before[d] == after[d], '%s live XML changed by bbvirt sync' % d)
    lab.hold(expect, 'after bbvirt sync', 0)
    check_healthy(lab, 'after libvirtd restart')


@hscenario(15, 'lost remove')
def sc_lost_remove(lab):
    lab.reset()
    k1 = lab.plug(KW)
    lab.wait_state({'guestA': [k1]}, k1.t_plug, '%s attached' % k1)
    old_udc = lab.gadgets[KW].udc
    os.makedirs(os.path.dirname(RULE_MASK), exist_ok=True)
    check(not os.path.lexists(RULE_MASK), '%s exists already' % RULE_MASK)
    os.symlink('/dev/null', RULE_MASK)
    try:
        # udevd took the reload after the remove event now and then (CI,
        # 2026-12-06: bookworm's udevd ran the rule 0.9 s after the reload
        # had returned): then the event was not lost, and the scenario
        # tries again with the device attached by hand (the rule stays
        # masked), at most three times.
        for attempt in (1, 2, 3):
            must(['udevadm', 'control', '--reload'])
            settle()
            t = lab.unplug(KW)
            settle()
            have = [h.key() for h in lab.hostdevs('guestA')]
            if have == [(k1.alias, k1.bus, k1.dev)] or attempt == 3:
                break
            check(not have, 'with the rule masked, guestA holds %s' % have)
            ran, _ = wait_for(lambda: [m for _, m in bbvirt_lines(lab, t) if 'detached %s' % k1.alias in m], 10,
                              'bbvirt\'s line for detaching %s (guestA lost it, the rule masked)' % k1)
            lab.notes.append('attempt %d: udev ran the masked rule (%s)' % (attempt, ran[0]))
            k1 = lab.plug(KW)
            lab.bbvirt('attach', KW)
            lab.wait_state({'guestA': [k1]}, k1.t_plug, '%s attached by hand' % k1)
        check(have == [(k1.alias, k1.bus, k1.dev)],
              'with the remove event lost, guestA should hold the stale %s: %s' % (k1, have))
        r, j = status_json(lab)
        stale = [(e['domain'], e['serial'], e['reason'], e['bus'], e['dev']) for e in j['stale']]
        check(r.rc != 0 and j['healthy'] is False and
              stale == [('guestA', KW, 'absent', k1.bus, k1.dev)],
              'bbvirt status should report the stale entry: exit %s, healthy %s, stale %s'
              % (r.rc, j['healthy'], j['stale']))
        check(any(e['serial'] == KW for e in j['absent']), 'status: %s not listed as absent' % KW)
        lab.notes.append('status: stale %s %s' % (KW, j['stale'][0]['reason']))
    finally:
        if os.path.lexists(RULE_MASK):
            os.unlink(RULE_MASK)
        must(['udevadm', 'control', '--reload'])
    other = free_udcs(lab, exclude=(old_udc,))
    check(other, 'no other UDC free')
    k2 = plug_on(lab, KW, other[0])
    check(k2.bus != k1.bus, 'replugged on the same bus: %s -> %s' % (k1, k2))
    secs = lab.wait_state({'guestA': [k2]}, k2.t_plug, '%s replacing the stale entry' % k2)
    lab.timing('replug->attached', secs)
    lab.hold({'guestA': [k2]}, 'after the replug (exactly once, at %s)' % k2.busdev, HOLD)
    w = [m for _, m in bbvirt_lines(lab, k2.t_plug) if 'stale entry for %s' % KW in m]
    check(w, 'bbvirt did not log replacing the stale entry')
    check_healthy(lab, 'after the replug')
    lab.notes.append('%s -> %s' % (k1.busdev, k2.busdev))


@hscenario(16, 'guest destroyed')
def sc_destroyed(lab):
    lab.reset()
    k, a, b = lab.plug(KW, AB, BR)
    expect = {'guestA': [k, a], 'guestB': [b]}
    lab.wait_state(expect, k.t_plug, 'devices attached')
    lab.destroy('guestA')
    settle()
    check('guestA' not in lab.active(), 'guestA still running')
    check(not qemu_pids('guestA'), 'QEMU of guestA still running')
    check(lab.status_hostdevs('guestA') is None, "libvirt's status file of guestA is still there")
    p = lab.hostdevs('guestA', inactive=True)
    check(not p, 'guestA persistent definition has hostdevs: %s' % [h.xml for h in p])
    lab.hold({'guestB': [b]}, 'guestA destroyed', HOLD)
    j = check_healthy(lab, 'guestA destroyed')
    st = {d['serial']: d['state'] for d in j['devices']}
    check(st.get(KW) == st.get(AB) == 'inactive' and st.get(BR) == 'attached',
          'status device states with guestA off: %s' % st)
    t = lab.start('guestA')
    secs = lab.wait_state(expect, t, 'guestA restarted with %s %s' % (k, a))
    lab.timing('start->attached', secs)
    lab.hold(expect, 'after guestA started again', HOLD)
    j = check_healthy(lab, 'guestA started again')
    p = lab.hostdevs('guestA', inactive=True)
    check(not p, 'guestA persistent definition has hostdevs: %s' % [h.xml for h in p])


@hscenario(17, 'unplug mid-attach')
def sc_unplug_mid_attach(lab):
    lab.reset(running=('guestA',))
    os.makedirs(LOCK_DIR, exist_ok=True)
    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)

    def take():
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
    try:
        wait_for(take, 30, 'the bbvirt lock')
        act('lab holds %s' % LOCK_FILE)
        t = now()
        k = lab.plug(KW)

        def waiting():
            for pid, argv in bbvirt_procs().items():
                if argv[:1] == ['attach'] and len(argv) > 1 and parse_busdev(argv[1]) == (k.bus, k.dev) \
                        and has_open(pid, LOCK_FILE):
                    return pid
            return None
        pid, secs = wait_for(waiting, 15, "udev's bbvirt attach %s to wait for the lock" % k, 0.05)
        lab.timing('plug->bbvirt waiting', now() - k.t_plug)
        tu = lab.unplug(KW)
        wait_for(lambda: lab.udev.find('KERNEL', 'remove', k.name, tu), 10, 'the kernel remove event')
        check(alive(pid), 'bbvirt %d ended while the lab held the lock' % pid)
        check(lab.udev.find('UDEV', 'add', k.name, t) is None, 'udev finished the add event early')
        # udev runs the remove event's bbvirt once the add event is done:
        # watch for it from here on
        watch = ProcWatch()
        watch.start()
    finally:
        os.close(fd)
        act('lab released %s' % LOCK_FILE)
    tr = now()
    try:
        wait_for(lambda: not alive(pid), 25, 'the attach run %d to end' % pid)
        wait_for(lambda: lab.udev.find('UDEV', 'add', k.name, t), 25, 'udev to finish the add event')
        wait_for(lambda: lab.udev.find('UDEV', 'remove', k.name, t), 25, 'udev to finish the remove event')
        settle()
        wait_for(lambda: not bbvirt_procs() or (False, bbvirt_procs()), 10, 'no bbvirt left running')
    finally:
        watch.stop.set()
        watch.join(5)
    lab.timing('release->both events done', now() - tr)
    lab.hold({}, 'after the unplug during the attach', HOLD)
    check_healthy(lab, 'after the unplug during the attach')
    # the attach run failed cleanly and said so (or attached a device that
    # was gone, and the remove event's run detached it)
    lines = [m for _, m in bbvirt_lines(lab, t, pid)]
    check(lines, 'the attach run (pid %d) logged nothing' % pid)
    check(not any(m.startswith('attached ') for m in lines) or
          any(m.startswith('detached ') for _, m in bbvirt_lines(lab, tr)),
          'attached to a gone device and never detached: %s' % lines)
    lab.notes.append('attach run logged: "%s"' % lines[-1][:150])
    detach = [p for p, argv in watch.seen.items()
              if argv[:1] == ['detach'] and len(argv) > 1 and parse_busdev(argv[1]) == (k.bus, k.dev)]
    more = [m for p in detach for _, m in bbvirt_lines(lab, tr, p)]
    lab.notes.append('remove run: %s' % (
        'pid %s, ended%s' % (','.join(map(str, detach)), (', logged "%s"' % more[-1][:80]) if more else ' (nothing to log)')
        if detach else 'too quick to see; udev finished the remove event'))
    # the lock is free again: the next plug attaches
    k2 = lab.plug(KW)
    lab.wait_state({'guestA': [k2]}, k2.t_plug, '%s attached after the lock was released' % k2)


# Through real gadgets, none of these may land anywhere (AB is the control).
HOSTILE1 = ['<x>&"\'', '--domain=guestB', KW + ' ', '\u00c4\u00d6\u00dc123', AB + 'x' * 119]
HOSTILE2 = ['$(touch /tmp/pwned)', AB + '\n' + BR, '\x1b]0;evil\x07XY1234', '']
# vm.conf lists some of them too: listed or not, an unusable serial goes nowhere
HOSTILE_CONF18 = """\
# /etc/bit-babbler/vm.conf written by the bbvirt lab (hostile gadgets)
DOMAIN_RNG_guestA=( %s %s '--domain=guestB' '$(touch /tmp/pwned)' )
DOMAIN_URI_guestA="qemu:///system"
DOMAIN_RNG_guestB=( %s '\u00c4\u00d6\u00dc123' )
""" % (KW, AB, BR)


def find_hostile(serial):
    """Like lab.find_dev, also for a device without a (readable) serial."""
    return find_dev(serial) if serial else find_nameless()


@hscenario(18, 'hostile gadgets')
def sc_hostile_gadgets(lab):
    pwned = '/tmp/pwned'
    check(not os.path.exists(pwned), '%s exists before the test' % pwned)
    lab.reset(conf=HOSTILE_CONF18)
    a = lab.plug(AB)
    expect = {'guestA': [a]}
    lab.wait_state(expect, a.t_plug, '%s attached' % a)
    n = 0
    for batch in (HOSTILE1, HOSTILE2):
        t = now()
        for s in batch:
            if s == '' and s not in lab.gadgets:
                # an empty write would not reach configfs: a lone newline is ""
                wfile(lab.gadget(s).path + '/strings/0x409/serialnumber', '\n')
            lab.bind(s)
        devs = [wait_for(lambda: find_hostile(s), 30, 'USB device %r to enumerate' % s)[0] for s in batch]
        settle()
        ran = len([1 for x in devs if lab.udev.find('UDEV', 'add', x.name, t)])
        check(ran == len(devs), 'udev finished %d of %d add events' % (ran, len(devs)))
        r, j = status_json(lab)
        for x in devs:
            e = [d for d in j['devices'] if (d['bus'], d['dev']) == (x.bus, x.dev)]
            check(len(e) == 1 and not e[0]['valid_serial'] and e[0]['state'] == 'host'
                  and not e[0]['attached_to'], 'status for %r: %s' % (x.serial, e))
            if x.serial:
                check(e[0]['serial'] == x.serial, 'status shows serial %r as %r' % (x.serial, e[0]['serial']))
        check(r.rc == 0 and j['healthy'] and not j['stale'], 'status not healthy: %s' % r)
        # by hand too: each by address, one by port with --domain, whole-host runs
        tries = [('attach', x.busdev) for x in devs] + [('attach', devs[0].name, '-D', 'guestB'),
                                                        ('attach-all',), ('sync',)]
        if batch is HOSTILE1:
            tries += [('attach', '$(touch /tmp/pwned)'), ('attach', '\u00c4\u00d6\u00dc123', '-D', 'guestB')]
        for args in tries:
            lab.bbvirt(*args, ok=False)
        n += len(tries)
        lab.hold(expect, 'hostile serials %r plugged, after manual attempts' % batch, HOLD)
        for s in batch:
            lab.unplug(s)
    settle()
    check(not os.path.exists(pwned), '%s was created' % pwned)
    lab.hold(expect, 'hostile devices unplugged', 0)
    lab.notes.append('%d hostile serials, %d manual attempts' % (len(HOSTILE1) + len(HOSTILE2), n))


SOAK_OWNER = {KW: 'guestA', AB: 'guestA', BR: 'guestB', 'BRAVO02': 'guestB'}
SOAK_CONF = """\
# /etc/bit-babbler/vm.conf written by the bbvirt lab (soak)
DOMAIN_RNG_guestA=( %s %s )
DOMAIN_URI_guestA="qemu:///system"
DOMAIN_RNG_guestB=( %s BRAVO02 )
""" % (KW, AB, BR)


@hscenario(19, 'soak')
def sc_soak(lab):
    steps = lab.args.soak_steps
    seed = seed_of(lab)
    rng = random.Random(seed)
    out('lab: soak: seed %d, %d steps' % (seed, steps))
    act('soak: seed %d, %d steps' % (seed, steps))
    lab.reset(conf=SOAK_CONF)
    serials = sorted(SOAK_OWNER)
    running = set(GUESTS)
    kinds = {}
    violations = []
    t0 = now()

    def plugged(s):
        return s in lab.gadgets and lab.gadgets[s].udc is not None

    def do_step(step):
        """One random step; returns (kind, what was done)."""
        on = [s for s in serials if plugged(s)]
        off = [s for s in serials if not plugged(s)]
        menu = [('restart', 3)]
        if off:
            menu.append(('plug', 30))
        if on:
            menu += [('unplug', 20), ('replug', 20)]
        if len(running) < len(GUESTS):
            menu.append(('start', 10))
        if running:
            menu.append(('destroy', 8))
        kind = rng.choices([m[0] for m in menu], [m[1] for m in menu])[0]
        if step == steps // 2 and not kinds.get('restart'):
            kind = 'restart'     # at least one in every soak
        if kind == 'plug':
            s, u = rng.choice(off), rng.choice(free_udcs(lab))
            plug_on(lab, s, u)
            return kind, 'plug %s into %s' % (s, u)
        if kind == 'unplug':
            s = rng.choice(on)
            lab.unplug(s)
            return kind, 'unplug %s' % s
        if kind == 'replug':
            s = rng.choice(on)
            lab.unplug(s)
            u = rng.choice(free_udcs(lab))
            plug_on(lab, s, u)
            return kind, 'replug %s into %s' % (s, u)
        if kind == 'start':
            g = rng.choice(sorted(set(GUESTS) - running))
            lab.start(g)
            running.add(g)
            return kind, 'start %s' % g
        if kind == 'destroy':
            g = rng.choice(sorted(running))
            lab.destroy(g)
            running.discard(g)
            return kind, 'destroy %s' % g
        sig = rng.choice([signal.SIGTERM, signal.SIGKILL])
        lab.libvirtd.send_signal(sig)
        lab.libvirtd.wait(60)
        lab.start_libvirtd()
        return kind, 'restart libvirtd (%s)' % sig.name

    def cheap(expect):
        p = lab.problems(expect, full=False)
        return (False, '; '.join(p)) if p else True

    step = 0
    try:
        for step in range(1, steps + 1):
            try:
                kind, what = do_step(step)
            except Failure as e:    # the lab could not do the step: the state is unknown
                violations.append('soak step %d: %s' % (step, e))
                break
            kinds[kind] = kinds.get(kind, 0) + 1
            act('soak step %d/%d: %s' % (step, steps, what))
            expect = {g: [find_dev(s) for s in serials if SOAK_OWNER[s] == g and plugged(s)]
                      for g in running}
            try:
                check(all(all(v) for v in expect.values()), 'a plugged device is missing: %s' % expect)
                # Poll libvirt's status files (cheap) until they match; once
                # udev is idle (every bbvirt run over), check in full, every
                # step: live XML (virDomainGetXMLDesc) and QEMU (info usb, qtree).
                wait_for(lambda: cheap(expect), 60, 'soak step %d (%s)' % (step, what), 0.1)
                settle()
                p = lab.problems(expect)
                check(not p, 'soak step %d (%s), udev settled: %s' % (step, what, '; '.join(p)))
            except Failure as e:
                violations.append(str(e))
                act('soak VIOLATION: %s' % e)
                if len(violations) >= 3:
                    break
                # carry on from a known state: bbvirt sync makes it right again
                lab.bbvirt('sync', ok=False)
                settle()
    finally:
        runs = bbvirt_lines(lab, t0)
        lab.notes.append('seed %d, steps %d, attaches %d, detaches %d, violations %d (%s), %.1fs/step'
                         % (seed, step, len([1 for _, m in runs if m.startswith('attached ')]),
                            len([1 for _, m in runs if m.startswith('detached ')]), len(violations),
                            ' '.join('%s %d' % kv for kv in sorted(kinds.items())),
                            (now() - t0) / max(step, 1)))
    check(not violations, '\n'.join(violations))
