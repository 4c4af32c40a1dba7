#!/usr/bin/python3 -u
"""The bbvirt lab, VM side.

lab/run boots a throw-away VM (virtme-ng: the host's root file system read-only,
/etc /usr /var as tmpfs-backed overlays) and runs this program in it, as root.
It never runs on the host: it mounts, loads kernel modules and starts daemons.

In the VM it
  - installs the tree that `make install DESTDIR=STAGE PREFIX=/usr` staged on
    the host (binary, udev rules, libvirt qemu hook), writes its own vm.conf,
  - listens on /dev/log (bbvirt logs there with --syslog), records udev events,
  - starts libvirtd and defines two diskless guests (started paused),
  - emulates BitBabblers (USB 0403:7840, any serial) with dummy_hcd and
    configfs gadgets: plug = bind a gadget to a UDC, unplug = unbind it,
  - runs the scenarios and judges them by what libvirt (live domain XML) and
    QEMU (HMP `info usb`, QOM) say, polling with deadlines.

Platforms (--platform): bookworm (the default; the host's Debian 12 root
over 9p, a shell as PID 1: this program mounts tmpfs, installs the staged
tree, listens on /dev/log and starts libvirtd itself) and trixie (a Debian 13
root booted with systemd as PID 1: bbvirt installed from its Debian package
before the boot, libvirtd socket-activated, logs in the journal, emulated
devices plugged by an early boot unit; scenarios in trixie.py).

Output: one line per scenario (PASS/FAIL, key timings), then `N passed, N failed`.
Exit status 0 only when every scenario selected passed.
Standard library only.
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import threading
import time
import traceback
import xml.etree.ElementTree as ET

import fastvirt

URI = 'qemu:///system'
WORK = '/run/lab'
BBVIRT = '/usr/bin/bbvirt'
VMCONF = '/etc/bit-babbler/vm.conf'
GADGETS = '/sys/kernel/config/usb_gadget'
USBDEVS = '/sys/bus/usb/devices'
GUESTS = ('guestA', 'guestB')
ALIAS = 'ua-bbvirt-'
LIBVIRTD_LOG = '/var/log/libvirt/libvirtd.log'

T0 = time.monotonic()
PLATFORM = 'bookworm'   # set by main() from --platform

# Serials. Valid BitBabbler serials are 6-7 characters of A-Z0-9.
KW = 'KWIF4Q'        # guestA
AB = 'ABC1234'       # guestA
BR = 'BRAVO01'       # guestB
LONER = 'LONER01'    # assigned to nobody
STORM = ['STORM01', 'STORM02', 'STORM03', 'STORM04']   # guestA
HOSTILE = 'AAAAAA -D guestB'   # assigned to nobody; would be "AAAAAA" + "-D guestB" if split
QUOTED = 'AB CD"E'             # listed for guestA (invalid: bbvirt must refuse it)


def make_conf(extra_a=''):
    return """\
# /etc/bit-babbler/vm.conf written by the bbvirt lab
DOMAIN_RNG_guestA=( %s %s %s%s )
DOMAIN_URI_guestA="qemu:///system"
DOMAIN_RNG_guestB=( %s )
""" % (KW, AB, ' '.join(STORM), extra_a, BR)


BASE_CONF = make_conf()
# Scenario 11: "AAAAAA" is guestA's, so a device whose serial were split on
# whitespace ("AAAAAA" "-D" "guestB") would land in A or B: it must land nowhere.
# And guestA lists a "serial" with a space and a quote (not a valid serial).
HOSTILE_CONF = make_conf(' AAAAAA "AB CD\\"E"')

DOMAIN_XML = """\
<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <controller type='usb' index='0' model='qemu-xhci' ports='15'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def now():
    return time.monotonic()


def stamp():
    return '%8.2f' % (now() - T0)


class Failure(Exception):
    """A scenario's assertion failed."""


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def wfile(path, text):
    with open(path, 'w') as f:
        f.write(text)


def rfile(path):
    with open(path, errors='replace') as f:
        return f.read().rstrip('\n')


def out(*a):
    print(*a, flush=True)


# --------------------------------------------------------------------- logs

class LogFile:
    """An append-only text log shared by threads."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.f = open(path, 'a')

    def write(self, line):
        with self.lock:
            self.f.write(line.rstrip('\n') + '\n')
            self.f.flush()


ACTIONS = None   # the lab's own log: every command it ran, with results


def act(line):
    if ACTIONS:
        ACTIONS.write('%s %s' % (stamp(), line))


class Result:
    def __init__(self, argv, rc, out, err, secs):
        self.argv, self.rc, self.out, self.err, self.secs = argv, rc, out, err, secs

    def __str__(self):
        return '%s -> rc=%s (%.2fs)%s%s' % (
            ' '.join(self.argv), self.rc, self.secs,
            ('\n  stdout: ' + self.out.strip().replace('\n', '\n          ')) if self.out.strip() else '',
            ('\n  stderr: ' + self.err.strip().replace('\n', '\n          ')) if self.err.strip() else '')


def run(argv, timeout=90, input=None):
    t = now()
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
        rc, so, se = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        def txt(x):
            return x.decode(errors='replace') if isinstance(x, bytes) else (x or '')
        rc, so, se = 'timeout', txt(e.stdout), txt(e.stderr)
    except OSError as e:
        rc, so, se = 'oserror', '', str(e)
    r = Result(list(argv), rc, so, se, now() - t)
    s = str(r)
    act(s if len(s) < 4000 else s[:4000] + ' ...')
    return r


def must(argv, timeout=90, input=None):
    r = run(argv, timeout, input)
    if r.rc != 0:
        raise Failure('command failed: %s' % r)
    return r


def virsh(*args, timeout=60):
    """`virsh -c URI ARGS` as a Result. The commands the lab's helpers run
    all the time (list --name, dumpxml, qemu-monitor-command --hmp, start
    --paused, destroy) go through libvirt's C API on one open connection
    (fastvirt.py: same answers, without ~0.5 s of process start a call under
    TCG); any other command, or when the API cannot be used (no daemon, a
    call stuck, turned off with virsh_api(False)), runs virsh."""
    if FAST is not None and VIRSH_API:
        r = FAST.virsh(args)
        if r is not None:
            res = Result(['virsh(api)'] + list(args), *r)
            if args[0] in ('start', 'destroy'):
                act(str(res))
            return res
    return run(['virsh', '-c', URI] + list(args), timeout=timeout)


def virsh_api(on):
    """Let virsh() use libvirt's API (on, the default) or only the virsh
    program (off: while something that never answers sits at libvirt's
    socket, scenario 12). Off closes the API's connection."""
    global VIRSH_API
    VIRSH_API = on
    if not on and FAST is not None:
        FAST.close()


try:
    FAST = fastvirt.FastVirt(URI, act)
except (OSError, AttributeError) as _e:
    FAST = None
    print('lab: libvirt.so through ctypes unavailable (%s): the checks use virsh' % _e,
          file=sys.stderr, flush=True)
VIRSH_API = True


def settle():
    run(['udevadm', 'settle', '--timeout=60'], timeout=90)


def wait_for(fn, deadline, what, interval=0.25):
    """Poll fn() until it returns something true; return (value, seconds).
    fn may return (False, why) style tuples: anything falsy or (False, x)."""
    t = now()
    last = None
    while True:
        v = fn()
        if isinstance(v, tuple) and len(v) == 2 and v[0] is False:
            last = v[1]
        elif v:
            return v, now() - t
        if now() - t > deadline:
            raise Failure('timed out after %.0fs waiting for %s%s' % (
                deadline, what, (': ' + str(last)) if last else ''))
        time.sleep(interval)


class SyslogSink(threading.Thread):
    """/dev/log: there is no syslog daemon in the VM. Datagrams go to a file."""

    SEV = ['emerg', 'alert', 'crit', 'err', 'warning', 'notice', 'info', 'debug']

    def __init__(self, path):
        super().__init__(daemon=True)
        self.log = LogFile(path)
        self.lines = []
        if os.path.lexists('/dev/log'):
            os.unlink('/dev/log')
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind('/dev/log')
        os.chmod('/dev/log', 0o666)

    def run(self):
        while True:
            data = self.sock.recv(65536)
            msg = data.decode(errors='replace').rstrip('\n\0')
            sev = ''
            m = re.match(r'<(\d+)>(.*)', msg, re.S)
            if m:
                sev, msg = self.SEV[int(m.group(1)) & 7], m.group(2)
                # drop the RFC 3164 timestamp: the lab's clock is more useful
                msg = re.sub(r'^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d ', '', msg)
            line = '%s %-7s %s' % (stamp(), sev, msg)
            self.lines.append((now(), msg))
            self.log.write(line)


class JournalSink(threading.Thread):
    """trixie: the journal (journald owns /dev/log), followed from the start
    of the boot. Every entry goes to journal.log; bbvirt's also to syslog.log
    and to .lines as (time, "bbvirt[PID]: text"), like SyslogSink. Times are
    the journal's CLOCK_MONOTONIC, the clock of time.monotonic(): negative
    stamps are before the lab started."""

    SEV = SyslogSink.SEV

    def __init__(self, path, jpath):
        super().__init__(daemon=True)
        self.log = LogFile(path)
        self.jlog = LogFile(jpath)
        self.lines = []
        self.entries = []    # (time, identifier, pid, priority, message)
        self.marks = set()
        self.proc = subprocess.Popen(['journalctl', '-b', '-f', '-o', 'json', '--no-pager', '--all'],
                                     stdout=subprocess.PIPE, text=True, errors='replace')

    def run(self):
        import json
        for line in self.proc.stdout:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            msg = e.get('MESSAGE', '')
            if isinstance(msg, list):
                msg = bytes(msg).decode(errors='replace')
            t = int(e.get('__MONOTONIC_TIMESTAMP', '0')) / 1e6
            ident = e.get('SYSLOG_IDENTIFIER') or e.get('_COMM') or '?'
            pid = e.get('_PID') or e.get('SYSLOG_PID') or ''
            try:
                prio = int(e.get('PRIORITY', 6))
            except ValueError:
                prio = 6
            self.entries.append((t, ident, pid, prio, msg))
            if ident == 'bbvirt-lab':
                self.marks.add(msg)
            self.jlog.write('%8.2f %-7s %s[%s]: %s' % (t - T0, self.SEV[prio & 7], ident, pid, msg))
            if ident == 'bbvirt':
                self.lines.append((t, 'bbvirt[%s]: %s' % (pid, msg)))
                self.log.write('%8.2f %-7s bbvirt[%s]: %s' % (t - T0, self.SEV[prio & 7], pid, msg))

    def sync(self, timeout=60):
        """Wait until the journal up to now has been read."""
        tag = 'bbvirt-lab-mark-%d' % int(now() * 1000)
        run(['logger', '-t', 'bbvirt-lab', tag])
        wait_for(lambda: tag in self.marks, timeout,
                 'the journal to show the lab\'s mark')


class SystemdDaemon:
    """trixie: a libvirt daemon run by systemd (libvirtd, or virtqemud with
    the modular daemons), with what scenarios use of subprocess.Popen."""

    def __init__(self, name):
        self.name = name

    def prop(self, *names):
        r = run(['systemctl', 'show', self.name + '.service'] + ['-p' + n for n in names], timeout=30)
        return dict(l.split('=', 1) for l in r.out.splitlines() if '=' in l)

    @property
    def pid(self):
        return int(self.prop('MainPID').get('MainPID', '0') or 0)

    def poll(self):
        r = run(['systemctl', 'is-active', self.name + '.service'], timeout=30)
        return None if r.out.strip() in ('active', 'activating', 'reloading', 'deactivating') else 0

    @property
    def returncode(self):
        return self.poll()

    def send_signal(self, sig):
        must(['systemctl', 'kill', '--kill-whom=main', '-s', str(int(sig)), self.name + '.service'])

    def wait(self, timeout=None):
        wait_for(lambda: self.poll() is not None, timeout or 60, '%s to stop' % self.name)
        return 0

    def sockets(self):
        return ['%s%s.socket' % (self.name, s) for s in ('', '-ro', '-admin')]


class UdevMonitor(threading.Thread):
    """`udevadm monitor` for the usb subsystem, one compact line per usb_device
    event; KERNEL = the kernel's uevent, UDEV = udev done with it (rules and
    RUN programs included)."""

    KEYS = ('BUSNUM', 'DEVNUM', 'PRODUCT', 'ID_SERIAL_SHORT')

    def __init__(self, path):
        super().__init__(daemon=True)
        self.log = LogFile(path)
        self.events = []     # (time, source, action, devpath, props)
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            ['udevadm', 'monitor', '--kernel', '--udev', '--property', '--subsystem-match=usb'],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors='replace')

    def run(self):
        block = []
        for line in self.proc.stdout:
            line = line.rstrip('\n')
            if line:
                block.append(line)
                continue
            self.flush(block)
            block = []

    def flush(self, block):
        if not block:
            return
        m = re.match(r'(KERNEL|UDEV)\s*\[[^\]]*\]\s+(\S+)\s+(\S+)\s+\((\S+)\)', block[0])
        if not m:
            self.ready.set()
            return
        props = dict(l.split('=', 1) for l in block[1:] if '=' in l)
        if props.get('DEVTYPE') != 'usb_device':
            return
        src, action, devpath = m.group(1), m.group(2), m.group(3)
        self.events.append((now(), src, action, devpath, props))
        self.log.write('%s %-6s %-7s %-8s %s' % (
            stamp(), src, action, devpath.rsplit('/', 1)[-1],
            ' '.join('%s=%s' % (k, props[k]) for k in self.KEYS if k in props)))

    def find(self, src, action, devname, since):
        for t, s, a, p, props in self.events:
            if t >= since and s == src and a == action and p.rsplit('/', 1)[-1] == devname:
                return t
        return None


# ------------------------------------------------------------------ devices

class Dev:
    """A USB device as the VM's kernel sees it."""

    def __init__(self, name, serial):
        self.name = name                    # sysfs name, "BUS-PORT": 3-1
        self.serial = serial
        p = os.path.join(USBDEVS, name)
        self.bus = int(rfile(p + '/busnum'))
        self.dev = int(rfile(p + '/devnum'))
        self.t_plug = None

    @property
    def busdev(self):
        return '%d:%d' % (self.bus, self.dev)

    @property
    def alias(self):
        return ALIAS + self.serial

    def __repr__(self):
        return '%s@%s(%s)' % (self.serial, self.busdev, self.name)


def find_dev(serial):
    for name in os.listdir(USBDEVS):
        if ':' in name or name.startswith('usb'):
            continue
        p = os.path.join(USBDEVS, name)
        try:
            if (rfile(p + '/idVendor'), rfile(p + '/idProduct')) != ('0403', '7840'):
                continue
            if rfile(p + '/serial') == serial:
                return Dev(name, serial)
        except OSError:
            continue
    return None


class Gadget:
    """A configfs USB gadget that enumerates as a BitBabbler."""

    count = 0

    def __init__(self, serial):
        Gadget.count += 1
        self.serial = serial
        self.path = '%s/bb%d' % (GADGETS, Gadget.count)
        self.udc = None
        self.last_udc = None
        p = self.path
        # Absolute paths only, and mkdir raises when it fails: no writing
        # plain files into some other directory by accident.
        os.mkdir(p)
        wfile(p + '/idVendor', '0x0403')
        wfile(p + '/idProduct', '0x7840')
        wfile(p + '/bcdDevice', '0x0100')
        os.mkdir(p + '/strings/0x409')
        wfile(p + '/strings/0x409/serialnumber', serial)
        wfile(p + '/strings/0x409/manufacturer', 'bbvirt lab')
        wfile(p + '/strings/0x409/product', 'emulated BitBabbler')
        os.mkdir(p + '/configs/c.1')
        os.mkdir(p + '/functions/SourceSink.0')
        os.symlink(p + '/functions/SourceSink.0', p + '/configs/c.1/SourceSink.0')


# --------------------------------------------------------------------- the lab

class HostDev:
    def __init__(self, el):
        a = el.find('source/address')
        al = el.find('alias')
        self.alias = al.get('name') if al is not None else None
        self.bus = self.num(a.get('bus')) if a is not None else None
        self.dev = self.num(a.get('device')) if a is not None else None
        self.xml = ET.tostring(el, encoding='unicode').strip()

    @staticmethod
    def num(s):
        if s is None:
            return None
        return int(s, 16) if s.lower().startswith('0x') else int(s, 10)

    def key(self):
        return (self.alias, self.bus, self.dev)


class Lab:
    def __init__(self, args):
        self.args = args
        self.demo = args.demo
        self.gadgets = {}
        self.libvirtd = None
        self.timings = []
        self.notes = []

    # ---- narration (demo)
    def say(self, msg):
        if self.demo:
            out('   ' + msg)

    def step(self, msg):
        if self.demo:
            out('\n-> ' + msg)

    def show(self, doms=GUESTS, since=None):
        """Demo: what bbvirt logged, what libvirt and QEMU show."""
        if not self.demo:
            return
        if since is not None:
            lines = [m for t, m in self.syslog.lines if t >= since and 'bbvirt' in m]
            for m in lines[-12:]:
                out('   bbvirt log | ' + m)
        act_doms = self.active()
        for dom in doms:
            if dom not in act_doms:
                out('   %s: shut off' % dom)
                continue
            hds = self.hostdevs(dom)
            if not hds:
                out('   %s live XML: no <hostdev>' % dom)
            for h in hds:
                x = re.sub(r'>\s+<', '><', h.xml)
                out('   %s live XML | %s' % (dom, x))
            r = virsh('qemu-monitor-command', dom, '--hmp', 'info usb')
            lines = [l.strip() for l in r.out.splitlines() if l.strip()]
            if not lines:
                out("   %s QEMU 'info usb': (no USB device)" % dom)
            for l in lines:
                out("   %s QEMU 'info usb' | %s" % (dom, l))

    def timing(self, what, secs):
        self.timings.append('%s %.1fs' % (what, secs))
        self.say('[%s: %.1fs]' % (what, secs))

    # ---- setup
    def setup(self):
        if PLATFORM == 'trixie':
            return self.setup_trixie()
        a = self.args
        os.makedirs(WORK, exist_ok=True)
        global ACTIONS
        ACTIONS = LogFile(WORK + '/actions.log')
        self.syslog = SyslogSink(WORK + '/syslog.log')
        self.syslog.start()
        self.udev = UdevMonitor(WORK + '/udev.log')
        self.udev.start()

        # Sockets and special files must not land on 9p: tmpfs for libvirt's dirs.
        for d in ('/run/libvirt', '/var/lib/libvirt', '/var/cache/libvirt'):
            os.makedirs(d, exist_ok=True)
            must(['mount', '-t', 'tmpfs', 'lab-tmpfs', d])
        if not os.path.ismount('/var/log'):
            must(['mount', '-t', 'tmpfs', 'lab-tmpfs', '/var/log'])
        os.makedirs('/var/log/libvirt/qemu', exist_ok=True)

        # Install the project the way a user would: the staged `make install`.
        # (entry by entry: cp cannot set the times of the read-only /)
        for e in sorted(os.listdir(a.stage)):
            must(['cp', '-a', os.path.join(a.stage, e), '/'])
        for f in (BBVIRT, '/usr/lib/udev/rules.d/60-bbvirt.rules', '/etc/libvirt/hooks/qemu.d/bbvirt'):
            check(os.path.exists(f), 'make install did not install %s' % f)
        check(os.access('/etc/libvirt/hooks/qemu.d/bbvirt', os.X_OK), 'the qemu hook is not executable')
        if a.orig:
            check(os.path.exists(a.orig), '%s missing' % a.orig)
        self.write_conf(BASE_CONF)

        # libvirt: no virtlogd (it hangs here); a log file we can show.
        with open('/etc/libvirt/qemu.conf', 'a') as f:
            f.write('\n# bbvirt lab\nstdio_handler = "file"\n')
        with open('/etc/libvirt/libvirtd.conf', 'a') as f:
            f.write('\n# bbvirt lab\nlog_filters = "1:qemu.qemu_hotplug 1:qemu.qemu_hostdev 3:*"\n'
                    'log_outputs = "1:file:%s"\n' % LIBVIRTD_LOG)
        # The hook is in place: start libvirtd now (it takes ~40 s to answer
        # under TCG) and do the rest meanwhile.
        self.start_libvirtd(wait=False)

        # udev: the project's rules are installed; make udevd read them.
        must(['udevadm', 'control', '--reload'])
        if a.udev_debug:
            run(['udevadm', 'control', '--log-level=debug'])

        # Emulated USB: dummy_hcd gives N host controllers, each with one UDC.
        must(['modprobe', 'dummy_hcd', 'num=%d' % a.buses])
        must(['modprobe', 'libcomposite'])
        must(['modprobe', 'usb_f_ss_lb'])
        if not os.path.ismount('/sys/kernel/config'):
            must(['mount', '-t', 'configfs', 'none', '/sys/kernel/config'])
        self.udcs = sorted(os.listdir('/sys/class/udc'), key=lambda s: int(s.rsplit('.', 1)[1]))
        check(len(self.udcs) == a.buses, 'expected %d UDCs, have %s' % (a.buses, self.udcs))
        settle()
        self.udev.ready.wait(30)

        self.wait_libvirtd()
        for g in GUESTS:
            path = WORK + '/%s.xml' % g
            wfile(path, DOMAIN_XML.format(name=g))
            must(['virsh', '-c', URI, 'define', path])

    def setup_trixie(self):
        """Debian 13, booted by systemd: bbvirt came from its package (dpkg -i
        before the boot), libvirtd from socket activation, the boot's devices
        from bbvirt-lab-gadgets.service. Look, do not install."""
        a = self.args
        os.makedirs(WORK, exist_ok=True)
        global ACTIONS
        ACTIONS = LogFile(WORK + '/actions.log')
        self.syslog = JournalSink(WORK + '/syslog.log', WORK + '/journal.log')
        self.syslog.start()
        self.udev = UdevMonitor(WORK + '/udev.log')
        self.udev.start()
        r = run(['dpkg-query', '-W', '-f=${Status} ${Version}', 'bbvirt'])
        check(r.out.startswith('install ok installed'), 'the bbvirt package is not installed: %s' % r)
        self.pkg_version = r.out.split()[-1]
        for f in (BBVIRT, '/usr/lib/udev/rules.d/60-bbvirt.rules', '/etc/libvirt/hooks/qemu.d/bbvirt'):
            check(os.path.exists(f), 'the package did not install %s' % f)
        check(rfile(VMCONF) + '\n' == BASE_CONF, '%s is not the lab\'s (lab/run writes lab.py --print-conf)' % VMCONF)
        self.daemon = 'libvirtd'
        self.libvirtd = SystemdDaemon('libvirtd')
        if a.boot == 'main':
            r = run(['systemctl', 'is-system-running', '--wait'], timeout=900)
            self.system_state = r.out.strip()
            self.t_libvirtd = now()
            self.wait_libvirtd()
        else:
            # scenario 2's comparison boots: settle is all they measure
            wait_for(lambda: run(['systemctl', 'is-active', 'bbvirt-lab-settle.service']).out.strip()
                     in ('active', 'failed'), 600, 'bbvirt-lab-settle.service to finish', interval=2)
            self.libvirtd_secs = 0
        self.second_udevd()
        self.adopt_gadgets()
        self.udcs = sorted(os.listdir('/sys/class/udc'), key=lambda s: int(s.rsplit('.', 1)[1]))
        check(len(self.udcs) == a.buses, 'expected %d UDCs, have %s' % (a.buses, self.udcs))
        self.udev.ready.wait(30)

    def second_udevd(self):
        """virtme-ng's init starts a systemd-udevd of its own (and triggers a
        coldplug) even under systemd. Two daemons would run every rule
        twice: if it is still there, stop it."""
        main = run(['systemctl', 'show', '-pMainPID', '--value', 'systemd-udevd.service']).out.strip()
        extra = []
        for d in os.listdir('/proc'):
            if d.isdigit() and d != main:
                try:
                    if rfile('/proc/%s/comm' % d) == 'systemd-udevd':
                        extra.append(int(d))
                except OSError:
                    pass
        for pid in extra:
            os.kill(pid, 15)
        self.udevd_note = ('a second systemd-udevd (pid %s, started by virtme-ng) stopped' % extra) if extra else \
            'one systemd-udevd (pid %s)' % main
        act(self.udevd_note)

    def adopt_gadgets(self):
        """The gadgets bbvirt-lab-gadgets.service made at boot (bootN)."""
        for name in sorted(os.listdir(GADGETS)):
            p = os.path.join(GADGETS, name)
            g = Gadget.__new__(Gadget)
            g.path = p
            g.serial = rfile(p + '/strings/0x409/serialnumber')
            g.udc = rfile(p + '/UDC') or None
            g.last_udc = g.udc
            self.gadgets[g.serial] = g
            act('adopted gadget %s (%s) on %s' % (name, g.serial, g.udc))

    def write_conf(self, text):
        os.makedirs(os.path.dirname(VMCONF), exist_ok=True)
        wfile(VMCONF, text)
        os.chmod(VMCONF, 0o644)
        act('wrote %s:\n%s' % (VMCONF, text))

    def start_libvirtd(self, wait=True):
        self.t_libvirtd = now()
        if PLATFORM == 'trixie':
            d = self.libvirtd
            must(['systemctl', 'start'] + d.sockets())
            must(['systemctl', 'start', d.name + '.service'], timeout=300)
            act('started %s.service' % d.name)
            if wait:
                self.wait_libvirtd()
            return
        err = open(WORK + '/libvirtd.stderr', 'a')
        self.libvirtd = subprocess.Popen(['/usr/sbin/libvirtd'], stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err, start_new_session=True)
        act('started libvirtd, pid %d' % self.libvirtd.pid)
        if wait:
            self.wait_libvirtd()

    def wait_libvirtd(self):
        def up():
            if PLATFORM == 'trixie':
                return virsh('version', timeout=60).rc == 0
            if self.libvirtd.poll() is not None:
                raise Failure('libvirtd exited with status %s' % self.libvirtd.returncode)
            return virsh('version', timeout=30).rc == 0
        wait_for(up, 240, 'libvirtd to answer', interval=1)
        self.libvirtd_secs = now() - self.t_libvirtd

    def stop_libvirtd(self):
        if PLATFORM == 'trixie':
            d = self.libvirtd
            must(['systemctl', 'stop', d.name + '.service'] + d.sockets(), timeout=120)
            act('%s stopped (service and sockets)' % d.name)
            return
        if self.libvirtd and self.libvirtd.poll() is None:
            self.libvirtd.terminate()
            try:
                self.libvirtd.wait(60)
            except subprocess.TimeoutExpired:
                self.libvirtd.kill()
                self.libvirtd.wait(10)
        act('libvirtd stopped')

    def libvirtd_running(self):
        if PLATFORM == 'trixie':
            return run(['systemctl', 'is-active', self.libvirtd.name + '.service']).out.strip() == 'active'
        return self.libvirtd is not None and self.libvirtd.poll() is None

    # ---- devices
    def gadget(self, serial):
        if serial not in self.gadgets:
            self.gadgets[serial] = Gadget(serial)
        return self.gadgets[serial]

    def bind(self, serial, udc=None):
        g = self.gadget(serial)
        check(g.udc is None, '%s is already plugged' % serial)
        used = {x.udc for x in self.gadgets.values() if x.udc}
        if udc is None:
            free = [u for u in self.udcs if u not in used]
            check(free, 'no free UDC (raise LAB_BUSES)')
            udc = g.last_udc if g.last_udc in free else free[0]
        t = now()
        wfile(g.path + '/UDC', udc)
        g.udc = g.last_udc = udc
        act('plugged %r into %s' % (serial, udc))
        return t

    def plug(self, *serials):
        """Plug gadgets (back to back), wait for the kernel to enumerate them."""
        ts = [self.bind(s) for s in serials]
        devs = []
        for s, t in zip(serials, ts):
            d, _ = wait_for(lambda: find_dev(s), 30, 'USB device %r to enumerate' % s)
            d.t_plug = t
            devs.append(d)
            self.say('plugged %r into %s: kernel enumerates it as %s (bus %d, device %d)'
                     % (s, self.gadgets[s].udc, d.name, d.bus, d.dev))
        return devs if len(devs) != 1 else devs[0]

    def unplug(self, serial):
        g = self.gadgets[serial]
        check(g.udc is not None, '%s is not plugged' % serial)
        t = now()
        wfile(g.path + '/UDC', '\n')
        act('unplugged %r from %s' % (serial, g.udc))
        self.say('unplugged %r from %s' % (serial, g.udc))
        g.udc = None
        wait_for(lambda: find_dev(serial) is None, 30, 'USB device %r to go away' % serial)
        return t

    def unplug_all(self):
        for s, g in self.gadgets.items():
            if g.udc:
                self.unplug(s)

    # ---- libvirt / QEMU truth
    def active(self):
        r = virsh('list', '--name')
        return set(l.strip() for l in r.out.splitlines() if l.strip())

    def state(self, dom):
        return virsh('domstate', dom).out.strip()

    def hostdevs(self, dom, inactive=False):
        r = virsh('dumpxml', dom, *(['--inactive'] if inactive else []))
        if r.rc != 0:
            raise Failure('virsh dumpxml %s failed: %s' % (dom, r))
        root = ET.fromstring(r.out)
        return [HostDev(h) for h in root.iter('hostdev') if h.get('type') == 'usb']

    def qemu_ids(self, dom):
        r = virsh('qemu-monitor-command', dom, '--hmp', 'info usb')
        if r.rc != 0:
            return None
        ids = []
        for l in r.out.splitlines():
            m = re.search(r', ID: (.*)$', l.strip())
            if m:
                ids.append(m.group(1).strip())
        return ids

    def qemu_hostdevs(self, dom):
        """QEMU's usb-host devices from `info qtree`: {id: (bus, dev) or None}."""
        r = virsh('qemu-monitor-command', dom, '--hmp', 'info qtree')
        if r.rc != 0:
            return None
        found, cur = {}, None
        for l in r.out.splitlines():
            m = re.search(r'dev: ([\w-]+), id "(.*)"', l)
            if m:
                cur = m.group(2) if m.group(1) == 'usb-host' else None
                if cur is not None:
                    found[cur] = {}
                continue
            m = re.match(r'\s*(hostdevice|hostbus|hostaddr) = (.*)', l)
            if cur is not None and m:
                found[cur][m.group(1)] = m.group(2).strip()
        res = {}
        for i, p in found.items():
            m = re.match(r'"/dev/bus/usb/(\d+)/(\d+)"', p.get('hostdevice', ''))
            if m:
                res[i] = (int(m.group(1)), int(m.group(2)))
                continue
            try:
                b, a = int(p['hostbus'].split()[0]), int(p['hostaddr'].split()[0])
                res[i] = (b, a) if b and a else None
            except (KeyError, ValueError):
                res[i] = None
        return res

    def status_hostdevs(self, dom):
        """libvirt's status file of a running guest (what dumpxml shows, read
        without spawning virsh: that takes ~1 s under TCG). None: not running."""
        try:
            root = ET.parse('/run/libvirt/qemu/%s.xml' % dom).getroot()
        except FileNotFoundError:
            return None
        except ET.ParseError:
            return []
        return [HostDev(h) for h in root.iter('hostdev') if h.get('type') == 'usb']

    def problems(self, expect, full=True, doms=GUESTS):
        """What differs between expect ({dom: [Dev]}) and the truth.
        Running guests must hold exactly their expected devices, once each,
        at the right address, tagged ua-bbvirt-<serial>; nothing else.
        full: ask libvirt (virsh dumpxml) and QEMU (info usb, info qtree);
        otherwise only read libvirt's status files (cheap, for polling)."""
        probs = []
        act_doms = self.active() if full else None
        for dom in doms:
            want = expect.get(dom, [])
            if full:
                hds = self.hostdevs(dom) if dom in act_doms else None
            else:
                hds = self.status_hostdevs(dom)
            if hds is None:
                if want:
                    probs.append('%s is not running' % dom)
                continue
            wanted = [(d.alias, d.bus, d.dev) for d in want]
            have = [h.key() for h in hds]
            for w in wanted:
                n = have.count(w)
                if n != 1:
                    probs.append('%s live XML: %d x hostdev %s at %d:%d (want 1)' % ((dom, n) + w))
            for h in have:
                if h not in wanted:
                    probs.append('%s live XML: unexpected hostdev alias=%s at %s:%s' % ((dom,) + h))
            if not full or probs:
                continue
            ids = self.qemu_ids(dom)
            qt = self.qemu_hostdevs(dom)
            if ids is None or qt is None:
                probs.append("%s: QEMU's info usb/qtree failed" % dom)
                continue
            for d in want:
                n = ids.count(d.alias)
                if n != 1:
                    probs.append("%s QEMU info usb: %d x %s (want 1)" % (dom, n, d.alias))
                if qt.get(d.alias) != (d.bus, d.dev):
                    probs.append('%s QEMU qtree: usb-host %s is host device %s, want %s'
                                 % (dom, d.alias, qt.get(d.alias, 'missing'), d.busdev))
            aliases = [d.alias for d in want]
            for i in ids:
                if i not in aliases:
                    probs.append("%s QEMU info usb: unexpected device %s" % (dom, i))
            for i in qt:
                if i not in aliases:
                    probs.append("%s QEMU qtree: unexpected usb-host %s" % (dom, i))
        return probs

    def wait_state(self, expect, t0, what, deadline=90):
        """Wait until libvirt's live state matches expect, then check it with
        virsh and QEMU. Returns seconds from t0 to libvirt's state matching."""
        def fast():
            p = self.problems(expect, full=False)
            return (False, '; '.join(p)) if p else True
        wait_for(fast, deadline, what, interval=0.1)
        secs = now() - t0

        def full():
            p = self.problems(expect)
            return (False, '; '.join(p)) if p else True
        wait_for(full, 30, what + ' (virsh dumpxml, QEMU info usb/qtree)', interval=1)
        return secs

    def hold(self, expect, what, secs=None):
        """Once udev is idle, expect must keep holding for a while (nothing
        late, nothing twice); checked in full at the end."""
        secs = self.args.hold if secs is None else secs
        settle()
        t = now()
        while True:
            p = self.problems(expect, full=False)
            check(not p, '%s: %s' % (what, '; '.join(p)))
            if now() - t >= secs:
                break
            time.sleep(0.2)
        p = self.problems(expect)
        check(not p, '%s: %s' % (what, '; '.join(p)))

    # ---- guests
    def start(self, dom):
        t = now()
        r = virsh('start', dom, '--paused', timeout=120)
        check(r.rc == 0, 'virsh start %s failed: %s' % (dom, r))
        self.say('virsh start %s --paused (%.1fs)' % (dom, now() - t))
        return t

    def destroy(self, dom):
        r = virsh('destroy', dom, timeout=120)
        check(r.rc == 0, 'virsh destroy %s failed: %s' % (dom, r))
        self.say('virsh destroy %s' % dom)

    def reset(self, running=GUESTS, conf=BASE_CONF):
        """Known state: config written, libvirtd up, nothing plugged, guests
        in `running` running with no hostdev, the others shut off."""
        demo, self.demo = self.demo, False
        try:
            self.write_conf(conf)
            if not self.libvirtd_running():
                self.start_libvirtd()
            self.unplug_all()
            settle()
            act_doms = self.active()
            for dom in GUESTS:
                up = dom in act_doms
                if up and (dom not in running or self.hostdevs(dom)):
                    self.destroy(dom)
                    up = False
                if dom in running and not up:
                    self.start(dom)
            settle()
            p = self.problems({})
            check(not p, 'reset: ' + '; '.join(p))
        finally:
            self.demo = demo

    def bbvirt(self, *args, timeout=60, ok=True):
        r = run([BBVIRT] + list(args), timeout=timeout)
        self.say('$ bbvirt %s  -> exit %s (%.1fs)' % (' '.join(_q(a) for a in args), r.rc, r.secs))
        if ok:
            check(r.rc == 0, 'expected success: %s' % r)
        return r


def _q(s):
    return s if re.match(r'^[\w:./=-]+$', s) else "'%s'" % s.replace("'", "'\\''")


# ---------------------------------------------------------------- scenarios

SCENARIOS = []
PLATFORMS = {}   # scenario number -> the platforms it runs on by default
CORE = ('bookworm', 'trixie')


def scenario(num, name, demo=False, platforms=('bookworm',)):
    def deco(fn):
        SCENARIOS.append((num, name, fn, demo))
        PLATFORMS[num] = platforms
        return fn
    return deco


@scenario(1, 'hotplug', demo=True, platforms=CORE)
def sc_hotplug(lab):
    lab.reset()
    lab.step('guestA and guestB run. Plug %s, which vm.conf assigns to guestA.' % KW)
    d = lab.plug(KW)
    secs = lab.wait_state({'guestA': [d]}, d.t_plug, '%s attached to guestA' % d)
    lab.timing('plug->attached', secs)
    lab.show(since=d.t_plug)
    lab.hold({'guestA': [d]}, 'after hotplug')


@scenario(2, 'unplug', demo=True, platforms=CORE)
def sc_unplug(lab):
    lab.reset()
    d = lab.plug(KW)
    lab.wait_state({'guestA': [d]}, d.t_plug, '%s attached to guestA' % d)
    lab.step('%s is attached to guestA. Unplug it.' % KW)
    t = lab.unplug(KW)
    secs = lab.wait_state({}, t, '%s detached from guestA' % d)
    lab.timing('unplug->detached', secs)
    lab.show(since=t)
    lab.hold({}, 'after unplug')


@scenario(3, 'replug', platforms=CORE)
def sc_replug(lab):
    lab.reset()
    d1 = lab.plug(KW)
    lab.wait_state({'guestA': [d1]}, d1.t_plug, '%s attached' % d1)
    t = lab.unplug(KW)
    lab.wait_state({}, t, '%s detached' % d1)
    d2 = lab.plug(KW)
    check((d2.bus, d2.dev) != (d1.bus, d1.dev), 'replug kept the address %s' % d1.busdev)
    secs = lab.wait_state({'guestA': [d2]}, d2.t_plug, '%s attached at its new address' % d2)
    lab.timing('replug->attached', secs)
    lab.hold({'guestA': [d2]}, 'after replug (exactly once, at %s)' % d2.busdev)
    lab.notes.append('%s -> %s' % (d1.busdev, d2.busdev))


@scenario(4, 'coldplug', demo=True, platforms=CORE)
def sc_coldplug(lab):
    lab.reset(running=())
    lab.step('Both guests are shut off. Plug %s and %s (guestA) and %s (guestB).' % (KW, AB, BR))
    k, a, b = lab.plug(KW, AB, BR)
    lab.hold({}, 'with the guests off')
    lab.step('Start guestA: the libvirt hook asks udev to re-announce its devices.')
    t = lab.start('guestA')
    secs = lab.wait_state({'guestA': [k, a]}, t, 'guestA to get %s and %s' % (k, a))
    lab.timing('start->attached', secs)
    lab.show(since=t)
    lab.hold({'guestA': [k, a]}, 'after guestA started')
    lab.step('Start guestB.')
    t = lab.start('guestB')
    secs = lab.wait_state({'guestA': [k, a], 'guestB': [b]}, t, 'guestB to get %s' % b)
    lab.timing('B start->attached', secs)
    lab.show(since=t)
    lab.hold({'guestA': [k, a], 'guestB': [b]}, 'after guestB started')


@scenario(5, 'routing', demo=True, platforms=CORE)
def sc_routing(lab):
    lab.reset()
    lab.step('Both guests run. Plug %s, %s (guestA), %s (guestB) and %s (nobody\'s).'
             % (KW, AB, BR, LONER))
    k, a, b, n = lab.plug(KW, AB, BR, LONER)
    expect = {'guestA': [k, a], 'guestB': [b]}
    secs = lab.wait_state(expect, k.t_plug, 'each device in its guest')
    lab.timing('plug->all attached', secs)
    lab.show(since=k.t_plug)
    lab.hold(expect, 'routing')
    check(find_dev(LONER) is not None, '%s is no longer on the host' % LONER)
    lab.say('%s stays with the host: /sys/bus/usb/devices/%s, in no guest' % (LONER, n.name))


@scenario(6, 'manual')
def sc_manual(lab):
    lab.reset()
    n = lab.plug(LONER)
    lab.hold({}, 'unassigned %s' % n)
    # by serial, --domain override
    t = now()
    lab.bbvirt('attach', LONER, '--domain', 'guestB')
    lab.timing('attach serial', lab.wait_state({'guestB': [n]}, t, 'attach %s -D guestB' % LONER, 30))
    # by BUS:DEV
    t = now()
    lab.bbvirt('detach', n.busdev, '-D', 'guestB')
    lab.wait_state({}, t, 'detach %s -D guestB' % n.busdev, 30)
    # by BUS-PORT
    t = now()
    lab.bbvirt('attach', n.name, '-D', 'guestA')
    lab.wait_state({'guestA': [n]}, t, 'attach %s -D guestA' % n.name, 30)
    t = now()
    lab.bbvirt('detach', LONER, '-D', 'guestA')
    lab.wait_state({}, t, 'detach %s -D guestA' % LONER, 30)
    t = now()
    lab.bbvirt('attach', n.busdev, '-D', 'guestB')
    lab.wait_state({'guestB': [n]}, t, 'attach %s -D guestB' % n.busdev, 30)
    t = now()
    lab.bbvirt('detach', n.name, '-D', 'guestB')
    lab.wait_state({}, t, 'detach %s -D guestB' % n.name, 30)
    # assigned devices: by the config, then attach-all / detach-all
    k, a, b = lab.plug(KW, AB, BR)
    full = {'guestA': [k, a], 'guestB': [b]}
    lab.wait_state(full, k.t_plug, 'udev attaching %s %s %s' % (k, a, b))
    t = now()
    lab.bbvirt('detach', a.busdev)
    lab.wait_state({'guestA': [k], 'guestB': [b]}, t, 'detach %s (config domain)' % a.busdev, 30)
    t = now()
    lab.bbvirt('attach', AB)
    lab.wait_state(full, t, 'attach %s (config domain)' % AB, 30)
    t = now()
    lab.bbvirt('detach-all')
    lab.timing('detach-all', lab.wait_state({}, t, 'detach-all', 60))
    t = now()
    lab.bbvirt('attach-all', 'guestA')
    lab.timing('attach-all A', lab.wait_state({'guestA': [k, a]}, t, 'attach-all guestA', 60))
    lab.hold({'guestA': [k, a]}, 'attach-all guestA touches only guestA', 1)
    t = now()
    lab.bbvirt('attach-all')
    lab.wait_state(full, t, 'attach-all', 60)
    t = now()
    lab.bbvirt('detach-all', 'guestA')
    lab.wait_state({'guestB': [b]}, t, 'detach-all guestA', 60)
    lab.hold({'guestB': [b]}, 'after the manual commands (%s never attached by itself)' % LONER, 1)


@scenario(7, 'dry-run')
def sc_dry_run(lab):
    lab.reset()
    k, n = lab.plug(KW, LONER)
    expect = {'guestA': [k]}
    lab.wait_state(expect, k.t_plug, '%s attached' % k)
    lab.hold(expect, 'before the dry runs', 1)
    before = {d: virsh('dumpxml', d).out for d in GUESTS}
    cmds = [('-n', 'attach', LONER, '-D', 'guestB'), ('-n', 'attach', n.busdev, '-D', 'guestA'),
            ('-n', 'detach', KW), ('-n', 'detach', k.busdev), ('-n', 'detach', k.name),
            ('--dry-run', 'detach-all'), ('-n', 'detach-all', 'guestA'),
            ('-n', 'attach-all'), ('-n', 'attach', LONER, '-D', 'guestA')]
    for c in cmds:
        lab.bbvirt(*c)
    settle()
    after = {d: virsh('dumpxml', d).out for d in GUESTS}
    for d in GUESTS:
        check(before[d] == after[d], '%s live XML changed by a dry run' % d)
    lab.hold(expect, 'after the dry runs', 1)
    # and the detach side: with KW's device gone, a dry-run detach must not detach
    lab.notes.append('%d dry runs' % len(cmds))


@scenario(8, 'live-only')
def sc_live_only(lab):
    lab.reset(running=('guestA',))
    k, a = lab.plug(KW, AB)
    lab.wait_state({'guestA': [k, a]}, k.t_plug, 'both attached')
    for dom in GUESTS:
        p = lab.hostdevs(dom, inactive=True)
        check(not p, '%s persistent definition has hostdevs: %s' % (dom, [h.xml for h in p]))
    lab.destroy('guestA')
    lab.unplug(AB)
    settle()
    t = lab.start('guestA')
    secs = lab.wait_state({'guestA': [k]}, t, 'guestA restarted with %s only' % k)
    lab.timing('start->attached', secs)
    lab.hold({'guestA': [k]}, 'after restart: only present devices')
    p = lab.hostdevs('guestA', inactive=True)
    check(not p, 'guestA persistent definition has hostdevs: %s' % [h.xml for h in p])


@scenario(9, 'daemon/guest down')
def sc_down(lab):
    lab.reset(running=('guestB',))
    # guest not running: udev's bbvirt has nothing to do and must say so quickly
    t = now()
    k = lab.plug(KW)
    settle()
    u = lab.udev.find('UDEV', 'add', k.name, t)
    kk = lab.udev.find('KERNEL', 'add', k.name, t)
    check(u is not None, 'udev never finished the add event of %s' % k)
    lab.timing('udev add (guest off)', u - kk if kk else u - t)
    r = lab.bbvirt('attach', KW, timeout=30)
    check(r.secs < 15, 'bbvirt attach with the guest off took %.1fs' % r.secs)
    lab.hold({}, 'guest off')
    # libvirtd not running
    lab.stop_libvirtd()
    for s in ('libvirt-sock', 'virtqemud-sock'):
        if os.path.lexists('/run/libvirt/' + s):
            lab.notes.append('%s left behind' % s)
    # a stale socket: the rule's TEST passes, nobody answers
    stale = '/run/libvirt/libvirt-sock'
    made_stale = False
    if not os.path.lexists(stale):
        so = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        so.bind(stale)
        so.close()
        made_stale = True
    t = now()
    a = lab.plug(AB)
    settle()
    u = lab.udev.find('UDEV', 'add', a.name, t)
    check(u is not None, 'udev never finished the add event of %s' % a)
    lab.timing('udev add (no libvirtd)', u - t)
    check(u - t < 20, 'udev needed %.1fs for the add event with libvirtd down' % (u - t))
    r = lab.bbvirt('attach', AB, timeout=30)
    check(r.secs < 15, 'bbvirt attach without libvirtd took %.1fs' % r.secs)
    r = lab.bbvirt('attach', a.busdev, '--syslog', timeout=30)
    r = lab.bbvirt('detach', a.busdev, timeout=30)
    r = lab.bbvirt('attach-all', timeout=30)
    if made_stale:
        os.unlink(stale)
    # both come back
    lab.start_libvirtd()
    lab.timing('libvirtd restart', lab.libvirtd_secs)
    lab.hold({}, 'libvirtd back, guestA still off', 1)
    t = lab.start('guestA')
    secs = lab.wait_state({'guestA': [k, a]}, t, 'guestA start attaching %s %s' % (k, a))
    lab.timing('start->attached', secs)
    lab.hold({'guestA': [k, a]}, 'after guestA started')


@scenario(10, 'storm', platforms=CORE)
def sc_storm(lab):
    lab.reset()
    t = now()
    ts = [lab.bind(s) for s in STORM]
    devs = []
    for s in STORM:
        d, _ = wait_for(lambda: find_dev(s), 30, 'USB device %r to enumerate' % s)
        devs.append(d)
    lab.notes.append('bound in %.2fs' % (ts[-1] - ts[0]))
    secs = lab.wait_state({'guestA': devs}, t, 'all four attached to guestA')
    lab.timing('plug->4 attached', secs)
    lab.hold({'guestA': devs}, 'after the storm (each once)')


@scenario(11, 'hostile serial', platforms=CORE)
def sc_hostile(lab):
    lab.reset(conf=HOSTILE_CONF)
    h, q, k = lab.plug(HOSTILE, QUOTED, KW)
    expect = {'guestA': [k]}
    lab.wait_state(expect, k.t_plug, '%s attached to guestA' % k)
    lab.hold(expect, 'hostile serials')
    # by hand too: whatever the way in, a device with an invalid serial stays out
    for args in (('attach', h.busdev), ('attach', h.busdev, '-D', 'guestB'), ('attach', h.name),
                 ('attach', q.busdev), ('attach', q.busdev, '-D', 'guestB'), ('attach', q.name, '-D', 'guestA'),
                 ('attach', HOSTILE), ('attach', QUOTED), ('attach', 'AAAAAA'),
                 ('attach-all', 'guestA'), ('attach-all', 'guestB'), ('attach-all',)):
        lab.bbvirt(*args, ok=False)
    lab.hold(expect, 'after manual attempts with hostile serials')
    t = lab.unplug(KW)
    lab.wait_state({}, t, 'guestA empty')
    for dom in GUESTS:
        lab.destroy(dom)
        lab.start(dom)
    lab.hold({}, 'guests restarted with only hostile devices plugged')


# Hardening and fault scenarios (12-19): lab/vm/hardening.py, registering into SCENARIOS.
import hardening  # noqa: E402,F401


# The admin's side (status, check, the Debian package) and the benchmarks:
# lab/vm/admin.py, registering into SCENARIOS.
import admin  # noqa: E402,F401

# The host's side and the guest's side (seedd, USB controllers, held devices):
# lab/vm/guestside.py, registering into SCENARIOS.
import guestside  # noqa: E402,F401


# Debian 13 under systemd (issue 8): boot, settle, AppArmor, crash hunt:
# lab/vm/trixie.py, registering into SCENARIOS for the trixie platform.
import trixie  # noqa: E402,F401


# -------------------------------------------------------------------- main

def smoke(lab):
    """Infrastructure only: plug, raw virsh attach with a user alias, unplug,
    raw detach. No bbvirt involved (its udev rule is removed for this)."""
    lab.reset()
    d = lab.plug(KW)
    x = ("<hostdev mode='subsystem' type='usb'><source><address type='usb' bus='%d' device='%d'/>"
         "</source><alias name='%s'/></hostdev>" % (d.bus, d.dev, d.alias))
    wfile(WORK + '/hd.xml', x)
    r = virsh('attach-device', 'guestA', WORK + '/hd.xml', '--live')
    out(str(r))
    out(virsh('dumpxml', 'guestA').out)
    out(virsh('qemu-monitor-command', 'guestA', '--hmp', 'info usb').out)
    out('qtree:', lab.qemu_hostdevs('guestA'))
    out('status:', [h.key() for h in lab.status_hostdevs('guestA')])
    out('problems:', lab.problems({'guestA': [d]}))
    t = lab.unplug(KW)
    out('after unplug:', lab.problems({}))
    r = virsh('detach-device-alias', 'guestA', d.alias, '--live')
    out(str(r))
    wait_for(lambda: not lab.problems({}), 30, 'detached')
    out('smoke ok')
    out(open(WORK + '/actions.log').read())


def dump_logs(marks, lab):
    out('---- logs for this scenario ----')
    files = [('bbvirt log (syslog, /dev/log)', WORK + '/syslog.log'),
             ('udev events (udevadm monitor)', WORK + '/udev.log'),
             ('journal (trixie)', WORK + '/journal.log'),
             ('libvirtd log', LIBVIRTD_LOG),
             ('libvirtd stderr', WORK + '/libvirtd.stderr')]
    files += [('QEMU log %s' % g, '/var/log/libvirt/qemu/%s.log' % g) for g in GUESTS]
    files += [('lab actions', WORK + '/actions.log')]
    for title, path in files:
        try:
            with open(path, errors='replace') as f:
                f.seek(marks.get(path, 0))
                lines = f.read().splitlines()
        except OSError:
            continue
        if not lines:
            out('---- %s: (nothing)' % title)
            continue
        if len(lines) > 150:
            lines = ['... (%d lines skipped)' % (len(lines) - 150)] + lines[-150:]
        out('---- %s ----' % title)
        for l in lines:
            out('  | ' + l)
    out('---- end of logs ----')


def log_marks():
    marks = {}
    for p in (WORK + '/syslog.log', WORK + '/journal.log', WORK + '/udev.log', LIBVIRTD_LOG, WORK + '/libvirtd.stderr',
              WORK + '/actions.log') + tuple('/var/log/libvirt/qemu/%s.log' % g for g in GUESTS):
        try:
            marks[p] = os.path.getsize(p)
        except OSError:
            marks[p] = 0
    return marks


def main():
    ap = argparse.ArgumentParser(description='bbvirt lab (VM side)')
    ap.add_argument('--stage', default='', help='bookworm: the tree staged by make install DESTDIR=')
    ap.add_argument('--platform', default='bookworm', choices=('bookworm', 'trixie'))
    ap.add_argument('--boot', default='main', choices=('main', 'nobbvirt', 'hang'),
                    help='trixie: which boot this is (lab/run)')
    ap.add_argument('--print-conf', action='store_true', help='print the lab\'s vm.conf and exit (lab/run)')
    ap.add_argument('--crash-runs', type=int, default=1000, help='trixie: bbvirt invocations of the crash hunt')
    ap.add_argument('--demo', action='store_true', help='narrated demo (scenarios 1, 2, 4, 5)')
    ap.add_argument('--only', default='', help='comma-separated scenario numbers')
    ap.add_argument('--buses', type=int, default=6, help='dummy_hcd controllers')
    ap.add_argument('--hold', type=float, default=3.0, help='seconds a state must hold')
    ap.add_argument('--orig', default='', help='path of the project binary when --bbvirt replaced it')
    ap.add_argument('--deb', default='', help='the bbvirt Debian package (host path) for the package scenario')
    ap.add_argument('--soak-steps', type=int, default=40, help='steps of the soak scenario')
    ap.add_argument('--soak-seed', type=int, default=None, help='seed of the soak scenario (default: random)')
    ap.add_argument('--bench', action='store_true', help='add the benchmark scenario (40)')
    ap.add_argument('--bench-rounds', type=int, default=3, help='rounds of each benchmark')
    ap.add_argument('--smoke', action='store_true', help='infrastructure smoke test, no bbvirt')
    ap.add_argument('--udev-debug', action='store_true')
    args = ap.parse_args()
    if args.print_conf:
        sys.stdout.write(BASE_CONF)
        return 0
    global PLATFORM
    PLATFORM = args.platform
    if PLATFORM == 'bookworm' and not args.stage:
        ap.error('--stage is required on bookworm')

    t_start = now()
    lab = Lab(args)
    out('lab: VM up (%s, %s%s), setting up udev, libvirtd, emulated USB...'
        % (os.uname().release, PLATFORM, (', boot ' + args.boot) if PLATFORM == 'trixie' else ''))
    try:
        lab.setup()
    except Exception as e:
        out('lab: SETUP FAILED: %s' % e)
        traceback.print_exc(file=sys.stdout)
        dump_logs({}, lab)
        out('0 passed, 1 failed')
        return 1
    out('lab: setup done in %.0fs (libvirtd answered after %.0fs), %d USB buses, guests %s'
        % (now() - t_start, lab.libvirtd_secs, args.buses, ', '.join(GUESTS)))
    if PLATFORM == 'trixie':
        out('lab: trixie: bbvirt %s from its package; %s; versions: %s' % (
            lab.pkg_version, lab.udevd_note, trixie.versions()))

    if args.smoke:
        os.unlink('/usr/lib/udev/rules.d/60-bbvirt.rules')
        run(['udevadm', 'control', '--reload'])
        smoke(lab)
        return 0

    only = set(int(x) for x in args.only.split(',') if x.strip())
    if PLATFORM == 'trixie' and args.boot != 'main':
        only = {'nobbvirt': {55}, 'hang': {56}}[args.boot]
    elif PLATFORM == 'trixie':
        only = (only - {55, 56}) if only else set(trixie.MAIN)
    todo = [s for s in SCENARIOS if (s[0] in only if only else
                                     (s[3] if args.demo else PLATFORM in PLATFORMS.get(s[0], ())))]
    if PLATFORM == 'trixie':
        todo.sort(key=lambda s: trixie.ORDER.index(s[0]) if s[0] in trixie.ORDER else 99)
    if args.demo:
        out('\n==== bbvirt demo: emulated BitBabblers, real udev, libvirtd and QEMU ====')
        out('/etc/bit-babbler/vm.conf:')
        for l in BASE_CONF.splitlines():
            out('   ' + l)
    passed = failed = 0
    for num, name, fn, _ in todo:
        if args.demo:
            out('\n==== %d. %s ====' % (num, name))
        lab.timings, lab.notes = [], []
        marks = log_marks()
        t = now()
        err = None
        try:
            fn(lab)
        except Failure as e:
            err = str(e)
        except Exception as e:
            err = 'lab error: %s\n%s' % (e, traceback.format_exc())
        info = ', '.join(lab.timings + lab.notes)
        if err is None:
            passed += 1
            out('PASS %2d %-18s %s [%.0fs]' % (num, name, info, now() - t))
        else:
            failed += 1
            out('FAIL %2d %-18s %s [%.0fs]' % (num, name, info, now() - t))
            out('     why: ' + err.replace('\n', '\n     '))
            dump_logs(marks, lab)
    out('lab: scenarios took %.0fs' % (now() - t_start))
    out('%d passed, %d failed' % (passed, failed))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == '__main__':
    sys.exit(main())
