"""The bbvirt lab, hardening scenarios (issue 4): 12-19.

Registered into lab.py's scenario list (lab.py runs as __main__ and imports
this module before main()). Each scenario is judged like the others: by
libvirt's live XML and QEMU's own view (Lab.problems / wait_state / hold),
polling with deadlines.

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

Every helper of every scenario asks libvirt through lab.py's virsh(), which
uses libvirt's C API where it can (fastvirt.py); scenario 12 turns that off
while its silent socket sits where libvirtd's was (virsh_api).
Standard library only.
"""

import fcntl
import json
import os
import random
import re
import signal
import socket
import threading
import time

import __main__ as lab   # lab.py, running as the program (never import it twice)

KW, AB, BR = lab.KW, lab.AB, lab.BR
STORM = lab.STORM
GUESTS = lab.GUESTS
LOCK_DIR = '/run/bbvirt'
LOCK_FILE = LOCK_DIR + '/lock'
LIBVIRT_SOCK = '/run/libvirt/libvirt-sock'
RULE_MASK = '/etc/udev/rules.d/60-bbvirt.rules'
HOLD = 1.0   # seconds a state must hold in these scenarios (the lab's default is 3)


# A process that dies by a signal (abort, segfault) leaves a line here: the
# VM's kernel pipes its core to CRASH_SH, which only records it. udev would
# otherwise swallow a crashed RUN program quietly.
CRASHES = lab.WORK + '/crashes.log'
CRASH_SH = lab.WORK + '/crash.sh'


def crash_recorder():
    if os.path.exists(CRASH_SH):
        return
    lab.wfile(CRASH_SH, '#!/bin/sh\ncat >/dev/null\necho "$*" >>%s\n' % CRASHES)
    os.chmod(CRASH_SH, 0o755)
    lab.wfile('/proc/sys/kernel/core_pattern', '|%s %%e %%p %%s' % CRASH_SH)
    lab.act('core_pattern: %s' % lab.rfile('/proc/sys/kernel/core_pattern'))
    # does it work? a shell that aborts itself must show up
    lab.run(['sh', '-c', 'kill -ABRT $$'])
    lab.wait_for(lambda: any(c[:1] == ['sh'] and c[2:3] == ['6'] for c in crashes()), 10,
                 'the crash recorder to record a test abort')


def crashes():
    try:
        with open(CRASHES) as f:
            return [l.split() for l in f.read().splitlines() if l.strip()]
    except FileNotFoundError:
        return []


def hscenario(num, name):
    """lab.scenario, for this file's scenarios; each also fails when a bbvirt
    process died by a signal meanwhile."""
    def deco(fn):
        def wrapped(L):
            crash_recorder()
            n = len(crashes())
            fn(L)
            new = crashes()[n:]
            mine = [c for c in new if c and c[0] == 'bbvirt']
            lab.check(not mine, 'bbvirt died by a signal: %s' % ['pid %s signal %s' % (c[1], c[2]) for c in mine])
            if new:
                L.notes.append('other crashes: %s' % new)
        wrapped.__name__, wrapped.__doc__ = fn.__name__, fn.__doc__
        lab.scenario(num, name)(wrapped)
        return fn
    return deco


# ---------------------------------------------------------------- helpers

def bbvirt_lines(L, since, pid=None):
    """bbvirt's syslog messages since `since`: [(pid, text)]."""
    res = []
    for t, msg in list(L.syslog.lines):
        if t < since:
            continue
        m = re.match(r'bbvirt\[(\d+)\]: (.*)', msg, re.S)
        if m and (pid is None or int(m.group(1)) == pid):
            res.append((int(m.group(1)), m.group(2)))
    return res


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
        if argv and argv[0] == lab.BBVIRT.encode() and state != 'Z':
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


def status_json(L, want_rc=None):
    """`bbvirt status --json`: (Result, parsed JSON), the JSON of schema 1.
    want_rc: bbvirt must exit with it, and say healthy exactly when it is 0."""
    r = L.bbvirt('status', '--json', ok=False)
    if want_rc is not None:
        lab.check(r.rc == want_rc, 'bbvirt status exit %s, want %s: %s' % (r.rc, want_rc, r))
    try:
        j = json.loads(r.out)
    except ValueError as e:
        raise lab.Failure('bbvirt status --json printed no JSON (%s): %s' % (e, r))
    lab.check(j.get('schema') == 1, 'status --json: schema %r, want 1' % j.get('schema'))
    if want_rc is not None:
        lab.check(j['healthy'] == (want_rc == 0), 'healthy=%s with exit %s' % (j['healthy'], r.rc))
    return r, j


def check_healthy(L, what):
    r, j = status_json(L)
    lab.check(r.rc == 0 and j['healthy'] and not j['stale'],
              '%s: bbvirt status is not healthy (exit %s, stale %s)' % (what, r.rc, j['stale']))
    return j


def free_udcs(L, exclude=()):
    used = {g.udc for g in L.gadgets.values() if g.udc}
    return [u for u in L.udcs if u not in used and u not in exclude]


def plug_on(L, serial, udc):
    """Plug serial into this UDC, wait for the kernel to enumerate it."""
    t = L.bind(serial, udc)
    d, _ = lab.wait_for(lambda: lab.find_dev(serial), 30, 'USB device %r to enumerate' % serial)
    d.t_plug = t
    return d


def qemu_pids(dom):
    res = []
    for p in os.listdir('/proc'):
        if p.isdigit():
            try:
                with open('/proc/%s/cmdline' % p, 'rb') as f:
                    argv = f.read().split(b'\0')
            except OSError:
                continue
            if argv and b'qemu-system' in argv[0] and ('guest=%s,' % dom).encode() in b' '.join(argv):
                res.append(int(p))
    return res


def seed_of(L):
    s = L.args.soak_seed
    return s if s is not None else random.SystemRandom().randrange(1, 10 ** 9)


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
            lab.act('silent server: accepted connection %d (never answered)' % len(self.conns))

    def close(self):
        self.stop.set()
        self.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()
        if os.path.lexists(self.path):
            os.unlink(self.path)
        lab.act('silent server closed, %s removed' % self.path)


# -------------------------------------------------------------- scenarios

@hscenario(12, 'silent socket')
def sc_silent_socket(L):
    L.reset(running=())
    L.stop_libvirtd()
    lab.virsh_api(False)
    for s in ('libvirt-sock', 'virtqemud-sock'):
        if os.path.lexists('/run/libvirt/' + s):
            os.unlink('/run/libvirt/' + s)
    srv = SilentServer(LIBVIRT_SOCK)
    srv.start()
    try:
        t = lab.now()
        settled = {}

        def settle_bg():
            r = lab.run(['udevadm', 'settle', '--timeout=120'], timeout=150)
            settled['rc'], settled['t'] = r.rc, lab.now()
        th = threading.Thread(target=settle_bg, daemon=True)
        k = L.plug(KW)
        th.start()
        # udev's bbvirt has read vm.conf, taken the lock and connected
        lab.wait_for(lambda: srv.accepted >= 1, 20, "udev's bbvirt to connect to the silent socket")
        # Meanwhile, by hand: bounded by vm.conf's BBVIRT_TIMEOUT (it waits
        # for the lock udev's bbvirt holds) and by --timeout (status takes no
        # lock: it hangs on the socket).
        L.write_conf(lab.BASE_CONF + 'BBVIRT_TIMEOUT=3\n')
        r = L.bbvirt('attach', KW, timeout=30, ok=False)
        L.write_conf(lab.BASE_CONF)
        lab.check(r.rc not in (0, 'timeout') and r.secs < 8 and 'timed out after 3 s' in r.err,
                  'bbvirt attach with BBVIRT_TIMEOUT=3 against the silent socket: %s' % r)
        L.timing('attach (BBVIRT_TIMEOUT=3)', r.secs)
        r = L.bbvirt('status', '--timeout', '2', timeout=30, ok=False)
        lab.check(r.rc not in (0, 'timeout') and r.secs < 7 and 'timed out after 2 s' in r.err,
                  'bbvirt status --timeout 2 against the silent socket: %s' % r)
        lab.check(srv.accepted >= 2, 'bbvirt status never connected to the silent socket')
        # the udev event ends within bbvirt's default deadline (20 s)
        kk = L.udev.find('KERNEL', 'add', k.name, t)
        u, _ = lab.wait_for(lambda: L.udev.find('UDEV', 'add', k.name, t), 45,
                            'udev to finish the add event of %s' % k)
        ev = u - (kk or t)
        L.timing('udev add (silent libvirt)', ev)
        lab.check(ev < 30, 'udev needed %.1fs for the add event (bound: 20 s deadline)' % ev)
        th.join(60)
        lab.check('t' in settled and settled['rc'] == 0,
                  'udevadm settle did not return in time: %s' % settled)
        L.timing('settle', settled['t'] - k.t_plug)
        lab.check(settled['t'] - k.t_plug < 30, 'udevadm settle took %.1fs' % (settled['t'] - k.t_plug))
        r = lab.run(['udevadm', 'settle', '--timeout=30'], timeout=40)
        lab.check(r.rc == 0 and r.secs < 5, 'a second udevadm settle: %s' % r)
        # nothing left running, one line saying what timed out
        lab.wait_for(lambda: not bbvirt_procs() or (False, bbvirt_procs()), 10, 'no bbvirt left running')
        lines = [m for _, m in bbvirt_lines(L, t) if 'timed out' in m]
        lab.check(len(lines) == 1, 'want one "timed out" line from udev\'s bbvirt, got %r' % lines)
        lab.check('connecting to libvirt' in lines[0], 'the timeout line does not say what timed out: %r' % lines[0])
        L.notes.append('logged: "%s"' % lines[0])
    finally:
        srv.close()
        lab.virsh_api(True)
    # the real libvirtd, then guestA: coldplug through the hook
    L.start_libvirtd()
    L.timing('libvirtd start', L.libvirtd_secs)
    L.hold({}, 'libvirtd back, guests off', HOLD)
    t = L.start('guestA')
    secs = L.wait_state({'guestA': [k]}, t, 'guestA start attaching %s' % k)
    L.timing('start->attached', secs)
    L.hold({'guestA': [k]}, 'after guestA started', HOLD)


@hscenario(13, 'parallel')
def sc_parallel(L):
    rounds, events = 20, 8
    L.reset(running=('guestA',))
    seed = seed_of(L)
    rng = random.Random(seed)
    for s in STORM:
        L.gadget(s)
    udc_lock = threading.Lock()
    errors = []

    def toggle(serial, n, r):
        g = L.gadgets[serial]
        try:
            for _ in range(n):
                if g.udc is None:
                    with udc_lock:
                        udc = r.choice(free_udcs(L))
                        g.udc = g.last_udc = udc      # reserved
                    lab.wfile(g.path + '/UDC', udc)
                    lab.act('plugged %r into %s' % (serial, udc))
                    gone = False
                else:
                    lab.wfile(g.path + '/UDC', '\n')
                    lab.act('unplugged %r from %s' % (serial, g.udc))
                    with udc_lock:
                        g.udc = None
                    gone = True
                t = lab.now()
                while (lab.find_dev(serial) is None) != gone:
                    if lab.now() - t > 20:
                        raise lab.Failure('%s did not %s' % (serial, 'go' if gone else 'enumerate'))
                    time.sleep(0.02)
        except Exception as e:   # reported by the main thread
            errors.append('%s: %s' % (serial, e))

    worst = 0
    t_all = lab.now()
    for rnd in range(1, rounds + 1):
        counts = [0] * len(STORM)
        for _ in range(events):
            counts[rng.randrange(len(STORM))] += 1
        ths = [threading.Thread(target=toggle, args=(s, n, random.Random(rng.random())))
               for s, n in zip(STORM, counts) if n]
        t = lab.now()
        for th in ths:
            th.start()
        for th in ths:
            th.join(60)
        lab.check(not errors, 'round %d: %s' % (rnd, '; '.join(errors)))
        lab.settle()
        present = [lab.find_dev(s) for s in STORM if L.gadgets[s].udc]
        lab.check(all(present), 'round %d: a plugged device is missing: %s' % (rnd, present))
        L.wait_state({'guestA': present}, t, 'round %d (%s): guestA holds %s' % (
            rnd, ' '.join('%s x%d' % (s[-2:], n) for s, n in zip(STORM, counts)), present), 60)
        worst = max(worst, lab.now() - t)
    L.hold({'guestA': present}, 'after %d rounds' % rounds, HOLD)
    runs = bbvirt_lines(L, t_all)
    L.notes.append('seed %d, %d rounds x %d events, %d attached, %d detached, worst round %.1fs'
                   % (seed, rounds, events, len([1 for _, m in runs if m.startswith('attached ')]),
                      len([1 for _, m in runs if m.startswith('detached ')]), worst))


@hscenario(14, 'libvirtd killed')
def sc_libvirtd_killed(L):
    L.reset()
    k, a, b = L.plug(KW, AB, BR)
    expect = {'guestA': [k, a], 'guestB': [b]}
    L.wait_state(expect, k.t_plug, 'devices attached')
    qemus = {d: qemu_pids(d) for d in GUESTS}
    L.libvirtd.send_signal(signal.SIGKILL)
    L.libvirtd.wait(30)
    lab.act('libvirtd killed (SIGKILL)')
    for d in GUESTS:
        lab.check(qemu_pids(d) == qemus[d] and qemus[d], 'QEMU of %s did not survive libvirtd: %s -> %s'
                  % (d, qemus[d], qemu_pids(d)))
    t = lab.now()
    L.start_libvirtd()
    L.timing('libvirtd restart', L.libvirtd_secs)
    # the hook's `reconnect` re-announces the devices; udev's bbvirt finds them attached
    lab.wait_for(lambda: len([m for _, m in bbvirt_lines(L, t) if 'reconnect: asked udev' in m]) >= 3,
                 60, "the hook's reconnect re-announcing the 3 devices")
    L.hold(expect, 'after libvirtd restarted', HOLD)
    before = {d: lab.virsh('dumpxml', d).out for d in GUESTS}
    r = L.bbvirt('-n', 'sync')
    lab.check(r.out.strip() == '', 'bbvirt -n sync would do something: %s' % r)
    r = L.bbvirt('sync', '-v')
    done = [l for l in r.err.splitlines() if re.search(r'\b(attached|detached) \S+ (to|from) |stale|warning|error', l)]
    lab.check(not done, 'bbvirt sync did something: %s' % done)
    n = r.err.count('is already attached')
    lab.check(n == 3, 'bbvirt sync -v: %d devices "already attached", want 3: %s' % (n, r))
    after = {d: lab.virsh('dumpxml', d).out for d in GUESTS}
    for d in GUESTS:
        lab.check(before[d] == after[d], '%s live XML changed by bbvirt sync' % d)
    L.hold(expect, 'after bbvirt sync', 0)
    check_healthy(L, 'after libvirtd restart')


@hscenario(15, 'lost remove')
def sc_lost_remove(L):
    L.reset()
    k1 = L.plug(KW)
    L.wait_state({'guestA': [k1]}, k1.t_plug, '%s attached' % k1)
    old_udc = L.gadgets[KW].udc
    os.makedirs(os.path.dirname(RULE_MASK), exist_ok=True)
    lab.check(not os.path.lexists(RULE_MASK), '%s exists already' % RULE_MASK)
    os.symlink('/dev/null', RULE_MASK)
    try:
        lab.must(['udevadm', 'control', '--reload'])
        L.unplug(KW)
        lab.settle()
        have = [h.key() for h in L.hostdevs('guestA')]
        lab.check(have == [(k1.alias, k1.bus, k1.dev)],
                  'with the remove event lost, guestA should hold the stale %s: %s' % (k1, have))
        r, j = status_json(L)
        stale = [(e['domain'], e['serial'], e['reason'], e['bus'], e['dev']) for e in j['stale']]
        lab.check(r.rc != 0 and j['healthy'] is False and
                  stale == [('guestA', KW, 'absent', k1.bus, k1.dev)],
                  'bbvirt status should report the stale entry: exit %s, healthy %s, stale %s'
                  % (r.rc, j['healthy'], j['stale']))
        lab.check(any(e['serial'] == KW for e in j['absent']), 'status: %s not listed as absent' % KW)
        L.notes.append('status: stale %s %s' % (KW, j['stale'][0]['reason']))
    finally:
        os.unlink(RULE_MASK)
        lab.must(['udevadm', 'control', '--reload'])
    other = free_udcs(L, exclude=(old_udc,))
    lab.check(other, 'no other UDC free')
    k2 = plug_on(L, KW, other[0])
    lab.check(k2.bus != k1.bus, 'replugged on the same bus: %s -> %s' % (k1, k2))
    secs = L.wait_state({'guestA': [k2]}, k2.t_plug, '%s replacing the stale entry' % k2)
    L.timing('replug->attached', secs)
    L.hold({'guestA': [k2]}, 'after the replug (exactly once, at %s)' % k2.busdev, HOLD)
    w = [m for _, m in bbvirt_lines(L, k2.t_plug) if 'stale entry for %s' % KW in m]
    lab.check(w, 'bbvirt did not log replacing the stale entry')
    check_healthy(L, 'after the replug')
    L.notes.append('%s -> %s' % (k1.busdev, k2.busdev))


@hscenario(16, 'guest destroyed')
def sc_destroyed(L):
    L.reset()
    k, a, b = L.plug(KW, AB, BR)
    expect = {'guestA': [k, a], 'guestB': [b]}
    L.wait_state(expect, k.t_plug, 'devices attached')
    L.destroy('guestA')
    lab.settle()
    lab.check('guestA' not in L.active(), 'guestA still running')
    lab.check(not qemu_pids('guestA'), 'QEMU of guestA still running')
    lab.check(L.status_hostdevs('guestA') is None, "libvirt's status file of guestA is still there")
    p = L.hostdevs('guestA', inactive=True)
    lab.check(not p, 'guestA persistent definition has hostdevs: %s' % [h.xml for h in p])
    L.hold({'guestB': [b]}, 'guestA destroyed', HOLD)
    j = check_healthy(L, 'guestA destroyed')
    st = {d['serial']: d['state'] for d in j['devices']}
    lab.check(st.get(KW) == st.get(AB) == 'inactive' and st.get(BR) == 'attached',
              'status device states with guestA off: %s' % st)
    t = L.start('guestA')
    secs = L.wait_state(expect, t, 'guestA restarted with %s %s' % (k, a))
    L.timing('start->attached', secs)
    L.hold(expect, 'after guestA started again', HOLD)
    j = check_healthy(L, 'guestA started again')
    p = L.hostdevs('guestA', inactive=True)
    lab.check(not p, 'guestA persistent definition has hostdevs: %s' % [h.xml for h in p])


@hscenario(17, 'unplug mid-attach')
def sc_unplug_mid_attach(L):
    L.reset(running=('guestA',))
    os.makedirs(LOCK_DIR, exist_ok=True)
    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)

    def take():
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
    try:
        lab.wait_for(take, 30, 'the bbvirt lock')
        lab.act('lab holds %s' % LOCK_FILE)
        t = lab.now()
        k = L.plug(KW)

        def waiting():
            for pid, argv in bbvirt_procs().items():
                if argv[:1] == ['attach'] and len(argv) > 1 and parse_busdev(argv[1]) == (k.bus, k.dev) \
                        and has_open(pid, LOCK_FILE):
                    return pid
            return None
        pid, secs = lab.wait_for(waiting, 15, "udev's bbvirt attach %s to wait for the lock" % k, 0.05)
        L.timing('plug->bbvirt waiting', lab.now() - k.t_plug)
        tu = L.unplug(KW)
        lab.wait_for(lambda: L.udev.find('KERNEL', 'remove', k.name, tu), 10, 'the kernel remove event')
        lab.check(alive(pid), 'bbvirt %d ended while the lab held the lock' % pid)
        lab.check(L.udev.find('UDEV', 'add', k.name, t) is None, 'udev finished the add event early')
        # udev runs the remove event's bbvirt once the add event is done:
        # watch for it from here on
        watch = ProcWatch()
        watch.start()
    finally:
        os.close(fd)
        lab.act('lab released %s' % LOCK_FILE)
    tr = lab.now()
    try:
        lab.wait_for(lambda: not alive(pid), 25, 'the attach run %d to end' % pid)
        lab.wait_for(lambda: L.udev.find('UDEV', 'add', k.name, t), 25, 'udev to finish the add event')
        lab.wait_for(lambda: L.udev.find('UDEV', 'remove', k.name, t), 25, 'udev to finish the remove event')
        lab.settle()
        lab.wait_for(lambda: not bbvirt_procs() or (False, bbvirt_procs()), 10, 'no bbvirt left running')
    finally:
        watch.stop.set()
        watch.join(5)
    L.timing('release->both events done', lab.now() - tr)
    L.hold({}, 'after the unplug during the attach', HOLD)
    check_healthy(L, 'after the unplug during the attach')
    # the attach run failed cleanly and said so (or attached a device that
    # was gone, and the remove event's run detached it)
    lines = [m for _, m in bbvirt_lines(L, t, pid)]
    lab.check(lines, 'the attach run (pid %d) logged nothing' % pid)
    lab.check(not any(m.startswith('attached ') for m in lines) or
              any(m.startswith('detached ') for _, m in bbvirt_lines(L, tr)),
              'attached to a gone device and never detached: %s' % lines)
    L.notes.append('attach run logged: "%s"' % lines[-1][:150])
    detach = [p for p, argv in watch.seen.items()
              if argv[:1] == ['detach'] and len(argv) > 1 and parse_busdev(argv[1]) == (k.bus, k.dev)]
    more = [m for p in detach for _, m in bbvirt_lines(L, tr, p)]
    L.notes.append('remove run: %s' % (
        'pid %s, ended%s' % (','.join(map(str, detach)), (', logged "%s"' % more[-1][:80]) if more else ' (nothing to log)')
        if detach else 'too quick to see; udev finished the remove event'))
    # the lock is free again: the next plug attaches
    k2 = L.plug(KW)
    L.wait_state({'guestA': [k2]}, k2.t_plug, '%s attached after the lock was released' % k2)


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
    if serial:
        return lab.find_dev(serial)
    for name in os.listdir(lab.USBDEVS):
        if ':' in name or name.startswith('usb'):
            continue
        p = os.path.join(lab.USBDEVS, name)
        try:
            if (lab.rfile(p + '/idVendor'), lab.rfile(p + '/idProduct')) != ('0403', '7840'):
                continue
            if not os.path.exists(p + '/serial') or lab.rfile(p + '/serial') == '':
                return lab.Dev(name, '')
        except OSError:
            continue
    return None


@hscenario(18, 'hostile gadgets')
def sc_hostile_gadgets(L):
    pwned = '/tmp/pwned'
    lab.check(not os.path.exists(pwned), '%s exists before the test' % pwned)
    L.reset(conf=HOSTILE_CONF18)
    a = L.plug(AB)
    expect = {'guestA': [a]}
    L.wait_state(expect, a.t_plug, '%s attached' % a)
    n = 0
    for batch in (HOSTILE1, HOSTILE2):
        t = lab.now()
        for s in batch:
            if s == '' and s not in L.gadgets:
                # an empty write would not reach configfs: a lone newline is ""
                lab.wfile(L.gadget(s).path + '/strings/0x409/serialnumber', '\n')
            L.bind(s)
        devs = [lab.wait_for(lambda: find_hostile(s), 30, 'USB device %r to enumerate' % s)[0] for s in batch]
        lab.settle()
        ran = len([1 for x in devs if L.udev.find('UDEV', 'add', x.name, t)])
        lab.check(ran == len(devs), 'udev finished %d of %d add events' % (ran, len(devs)))
        r, j = status_json(L)
        for x in devs:
            e = [d for d in j['devices'] if (d['bus'], d['dev']) == (x.bus, x.dev)]
            lab.check(len(e) == 1 and not e[0]['valid_serial'] and e[0]['state'] == 'host'
                      and not e[0]['attached_to'], 'status for %r: %s' % (x.serial, e))
            if x.serial:
                lab.check(e[0]['serial'] == x.serial, 'status shows serial %r as %r' % (x.serial, e[0]['serial']))
        lab.check(r.rc == 0 and j['healthy'] and not j['stale'], 'status not healthy: %s' % r)
        # by hand too: each by address, one by port with --domain, whole-host runs
        tries = [('attach', x.busdev) for x in devs] + [('attach', devs[0].name, '-D', 'guestB'),
                                                        ('attach-all',), ('sync',)]
        if batch is HOSTILE1:
            tries += [('attach', '$(touch /tmp/pwned)'), ('attach', '\u00c4\u00d6\u00dc123', '-D', 'guestB')]
        for args in tries:
            L.bbvirt(*args, ok=False)
        n += len(tries)
        L.hold(expect, 'hostile serials %r plugged, after manual attempts' % batch, HOLD)
        for s in batch:
            L.unplug(s)
    lab.settle()
    lab.check(not os.path.exists(pwned), '%s was created' % pwned)
    L.hold(expect, 'hostile devices unplugged', 0)
    L.notes.append('%d hostile serials, %d manual attempts' % (len(HOSTILE1) + len(HOSTILE2), n))


SOAK_OWNER = {KW: 'guestA', AB: 'guestA', BR: 'guestB', 'BRAVO02': 'guestB'}
SOAK_CONF = """\
# /etc/bit-babbler/vm.conf written by the bbvirt lab (soak)
DOMAIN_RNG_guestA=( %s %s )
DOMAIN_URI_guestA="qemu:///system"
DOMAIN_RNG_guestB=( %s BRAVO02 )
""" % (KW, AB, BR)


@hscenario(19, 'soak')
def sc_soak(L):
    steps = L.args.soak_steps
    seed = seed_of(L)
    rng = random.Random(seed)
    lab.out('lab: soak: seed %d, %d steps' % (seed, steps))
    lab.act('soak: seed %d, %d steps' % (seed, steps))
    L.reset(conf=SOAK_CONF)
    serials = sorted(SOAK_OWNER)
    running = set(GUESTS)
    kinds = {}
    violations = []
    t0 = lab.now()

    def plugged(s):
        return s in L.gadgets and L.gadgets[s].udc is not None

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
            s, u = rng.choice(off), rng.choice(free_udcs(L))
            plug_on(L, s, u)
            return kind, 'plug %s into %s' % (s, u)
        if kind == 'unplug':
            s = rng.choice(on)
            L.unplug(s)
            return kind, 'unplug %s' % s
        if kind == 'replug':
            s = rng.choice(on)
            L.unplug(s)
            u = rng.choice(free_udcs(L))
            plug_on(L, s, u)
            return kind, 'replug %s into %s' % (s, u)
        if kind == 'start':
            g = rng.choice(sorted(set(GUESTS) - running))
            L.start(g)
            running.add(g)
            return kind, 'start %s' % g
        if kind == 'destroy':
            g = rng.choice(sorted(running))
            L.destroy(g)
            running.discard(g)
            return kind, 'destroy %s' % g
        sig = rng.choice([signal.SIGTERM, signal.SIGKILL])
        L.libvirtd.send_signal(sig)
        L.libvirtd.wait(60)
        L.start_libvirtd()
        return kind, 'restart libvirtd (%s)' % sig.name

    def cheap(expect):
        p = L.problems(expect, full=False)
        return (False, '; '.join(p)) if p else True

    step = 0
    try:
        for step in range(1, steps + 1):
            try:
                kind, what = do_step(step)
            except lab.Failure as e:    # the lab could not do the step: the state is unknown
                violations.append('soak step %d: %s' % (step, e))
                break
            kinds[kind] = kinds.get(kind, 0) + 1
            lab.act('soak step %d/%d: %s' % (step, steps, what))
            expect = {g: [lab.find_dev(s) for s in serials if SOAK_OWNER[s] == g and plugged(s)]
                      for g in running}
            try:
                lab.check(all(all(v) for v in expect.values()), 'a plugged device is missing: %s' % expect)
                # Poll libvirt's status files (cheap) until they match; once
                # udev is idle (every bbvirt run over), check in full, every
                # step: live XML (virDomainGetXMLDesc) and QEMU (info usb, qtree).
                lab.wait_for(lambda: cheap(expect), 60, 'soak step %d (%s)' % (step, what), 0.1)
                lab.settle()
                p = L.problems(expect)
                lab.check(not p, 'soak step %d (%s), udev settled: %s' % (step, what, '; '.join(p)))
            except lab.Failure as e:
                violations.append(str(e))
                lab.act('soak VIOLATION: %s' % e)
                if len(violations) >= 3:
                    break
                # carry on from a known state: bbvirt sync makes it right again
                L.bbvirt('sync', ok=False)
                lab.settle()
    finally:
        runs = bbvirt_lines(L, t0)
        L.notes.append('seed %d, steps %d, attaches %d, detaches %d, violations %d (%s), %.1fs/step'
                       % (seed, step, len([1 for _, m in runs if m.startswith('attached ')]),
                          len([1 for _, m in runs if m.startswith('detached ')]), len(violations),
                          ' '.join('%s %d' % kv for kv in sorted(kinds.items())),
                          (lab.now() - t0) / max(step, 1)))
    lab.check(not violations, '\n'.join(violations))
