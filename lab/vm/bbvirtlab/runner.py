"""The run: lab.py's command line, setting up the VM, running the chosen
scenarios and reporting them.

main() parses the command line (parser()), prints vm.conf and ends
(--print-conf, for lab/run), or sets the VM up (Lab.setup) and runs the
scenarios select() picks, in order: one line each,
`PASS NN name  timings and notes [secs]` or `FAIL ...` with `why:` and the
logs of that scenario (dump_logs), then `N passed, N failed`. Exit status 0
only when every scenario selected passed. --smoke runs the infrastructure
check smoke() instead, without bbvirt. Standard library only.
"""

import argparse
import os
import sys
import traceback

from .core import (BASE_CONF, GUESTS, KW, LIBVIRTD_LOG, SCENARIOS, WORK, Failure, Lab, now, out,
                   run, virsh, wait_for, wfile)
from .scenarios import trixie


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


def parser():
    """lab.py's command line (lab/run passes it)."""
    ap = argparse.ArgumentParser(description='bbvirt lab (VM side)')
    ap.add_argument('--stage', default='', help='bookworm: the tree staged by make install DESTDIR=')
    ap.add_argument('--platform', default='bookworm', choices=('bookworm', 'trixie'))
    ap.add_argument('--boot', default='main', choices=('main', 'resume', 'nobbvirt', 'hang', 'anywhere', 'modular'),
                    help='trixie: which boot this is (lab/run)')
    ap.add_argument('--print-conf', action='store_true', help='print the lab\'s vm.conf and exit (lab/run)')
    ap.add_argument('--crash-runs', type=int, default=1000, help='trixie: bbvirt invocations of the crash hunt')
    ap.add_argument('--demo', action='store_true', help='narrated demo (scenarios 1, 2, 4, 5, 21, 23)')
    ap.add_argument('--only', default='', help='comma-separated scenario numbers')
    ap.add_argument('--buses', type=int, default=6, help='dummy_hcd controllers')
    ap.add_argument('--hold', type=float, default=3.0, help='seconds a state must hold')
    ap.add_argument('--orig', default='', help='path of the project binary when --bbvirt replaced it')
    ap.add_argument('--deb', default='', help='the bbvirt Debian package (host path) for the package scenario')
    ap.add_argument('--standin', default='', help='the stand-in bit-babbler package (packaging/standin-bit-babbler) for the package scenario')
    ap.add_argument('--soak-steps', type=int, default=40, help='steps of the soak scenario')
    ap.add_argument('--soak-seed', type=int, default=None, help='seed of the soak scenario (default: random)')
    ap.add_argument('--bench', action='store_true', help='add the benchmark scenario (40)')
    ap.add_argument('--bench-rounds', type=int, default=3, help='rounds of each benchmark')
    ap.add_argument('--smoke', action='store_true', help='infrastructure smoke test, no bbvirt')
    ap.add_argument('--udev-debug', action='store_true')
    return ap


def select(args):
    """The scenarios to run, in order: --only's, else the platform's (on
    trixie, the boot's), else with --demo the demo's."""
    platform = args.platform
    registered = [s for s in SCENARIOS if args.bench or not s.bench]
    only = set(int(x) for x in args.only.split(',') if x.strip())
    if platform == 'trixie' and args.boot == 'anywhere':
        only = (only & set(trixie.ANYWHERE)) if only else set(trixie.ANYWHERE)
    elif platform == 'trixie' and args.boot == 'modular':
        only = (only & set(trixie.MODULAR)) if only else set(trixie.MODULAR)
    elif platform == 'trixie' and args.boot != 'main':
        only = {'nobbvirt': {55}, 'hang': {56}, 'resume': {60}}[args.boot]
    elif platform == 'trixie':
        only = (only - {55, 56, 60} - set(trixie.ANYWHERE) - set(trixie.MODULAR)) if only else set(trixie.MAIN)
    todo = [s for s in registered if (s.num in only if only else
                                      (s.demo if args.demo else platform in s.platforms))]
    if platform == 'trixie':
        todo.sort(key=lambda s: trixie.ORDER.index(s.num) if s.num in trixie.ORDER else 99)
    return todo


def main():
    ap = parser()
    args = ap.parse_args()
    if args.print_conf:
        sys.stdout.write(BASE_CONF)
        return 0
    platform = args.platform
    if platform == 'bookworm' and not args.stage:
        ap.error('--stage is required on bookworm')

    t_start = now()
    lab = Lab(args)
    out('lab: VM up (%s, %s%s), setting up udev, libvirtd, emulated USB...'
        % (os.uname().release, platform, (', boot ' + args.boot) if platform == 'trixie' else ''))
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
    if platform == 'trixie':
        out('lab: trixie: %s; %s; versions: %s' % (
            lab.install_note, lab.udevd_note, trixie.versions()))

    if args.smoke:
        os.unlink('/usr/lib/udev/rules.d/60-bbvirt.rules')
        run(['udevadm', 'control', '--reload'])
        smoke(lab)
        return 0

    todo = select(args)
    if args.demo:
        out('\n==== bbvirt demo: emulated BitBabblers and other USB devices, real udev, libvirtd and QEMU ====')
        out('/etc/bit-babbler/vm.conf:')
        for l in BASE_CONF.splitlines():
            out('   ' + l)
    passed = failed = 0
    for num, name, fn, *_ in todo:
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
