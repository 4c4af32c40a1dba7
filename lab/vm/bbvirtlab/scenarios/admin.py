"""The admin's side (issue 5): scenarios 30, 31, and the benchmarks (40).

  30 status/check   `bbvirt status --json` against libvirt's live XML in the
                    routing state and with a device in the wrong guest;
                    `bbvirt check` on the installed files; `sync` repairs
  31 package        the Debian package installed with dpkg in place of
                    `make install`, used (hotplug, unplug, coldplug through its
                    hook), removed (the kept hook lets guests start)
  40 bench          only with --bench (lab/run --bench): latencies of the
                    chain next to bare virsh, and attach-all scaling; prints
                    the figures BENCHMARKS.md records

Standard library only.
"""

import grp
import os
import re
import stat
import statistics

from ..core import (AB, ALIAS, BR, GUESTS, KW, LONER, RULE_MASK, STORM, URI, VMCONF, WORK, Failure,
                    check, must, now, out, rfile, run, scenario, settle, wfile)
from ..helpers import status_json


def live_bbvirt_hostdevs(lab):
    """{(domain, serial): (bus, dev)} of every ua-bbvirt-* hostdev in the
    running guests' live XML (virsh dumpxml)."""
    found = {}
    act = lab.active()
    for dom in GUESTS:
        if dom not in act:
            continue
        for h in lab.hostdevs(dom):
            if h.alias and h.alias.startswith(ALIAS):
                found[(dom, h.alias[len(ALIAS):])] = (h.bus, h.dev)
    return found


def status_matches_live(lab, st):
    """status's view of attachments (devices' attached_to plus stale entries)
    equals the live XML, entry for entry."""
    live = live_bbvirt_hostdevs(lab)
    seen = {}
    for d in st['devices']:
        for a in d['attached_to']:
            seen[(a['domain'], d['serial'])] = (a['bus'], a['dev'])
    for s in st['stale']:
        seen.setdefault((s['domain'], s['serial']), (s['bus'], s['dev']))
    check(seen == live, 'status --json %s != live XML %s' % (sorted(seen.items()), sorted(live.items())))
    return live


def device(st, serial):
    for d in st['devices']:
        if d['serial'] == serial:
            return d
    raise Failure('status --json lists no device %s' % serial)


@scenario(30, 'status/check')
def sc_status(lab):
    lab.reset()
    r = lab.bbvirt('check', ok=False)
    check(r.rc == 0, 'bbvirt check on the installed files: %s' % r)
    k, a, b, n = lab.plug(KW, AB, BR, LONER)
    expect = {'guestA': [k, a], 'guestB': [b]}
    lab.wait_state(expect, k.t_plug, 'routing')
    lab.hold(expect, 'routing', 1)
    _, st = status_json(lab, 0)
    status_matches_live(lab, st)
    for dev, dom in ((k, 'guestA'), (a, 'guestA'), (b, 'guestB')):
        d = device(st, dev.serial)
        check(d['state'] == 'attached' and d['assigned_to'] == dom,
              '%s: state %s, assigned to %s' % (dev.serial, d['state'], d['assigned_to']))
        check((d['bus'], d['dev'], d['port']) == (dev.bus, dev.dev, dev.name),
              '%s: status says %s:%s %s, sysfs %s' % (dev.serial, d['bus'], d['dev'], d['port'], dev))
    d = device(st, LONER)
    check(d['state'] == 'host' and d['assigned_to'] is None and not d['attached_to'],
          '%s (unassigned): %s' % (LONER, d))
    check(sorted(x['serial'] for x in st['absent']) == sorted(STORM),
          'absent: %s, want %s' % (st['absent'], STORM))
    check(not st['stale'], 'stale: %s' % st['stale'])
    check([x['state'] for x in st['domains']] == ['running', 'running'], 'domains: %s' % st['domains'])
    lab.notes.append('healthy: %d devices, %d absent' % (len(st['devices']), len(st['absent'])))

    # A device in the wrong guest: LONER (nobody's) attached to guestB by hand
    # is stale there ("not_assigned"), and status says so with exit 1.
    t = now()
    lab.bbvirt('attach', LONER, '-D', 'guestB')
    wrong = {'guestA': [k, a], 'guestB': [b, n]}
    lab.wait_state(wrong, t, '%s attached to guestB by hand' % LONER, 30)
    _, st = status_json(lab, 1)
    status_matches_live(lab, st)
    bad = [s for s in st['stale'] if s['serial'] == LONER]
    check(len(st['stale']) == 1 and bad and bad[0]['domain'] == 'guestB'
          and bad[0]['reason'] == 'not_assigned' and (bad[0]['bus'], bad[0]['dev']) == (n.bus, n.dev),
          'stale: %s' % st['stale'])
    r = lab.bbvirt('status', ok=False)
    stale_part = r.out.split('Stale:', 1)[-1].split('Domains:', 1)[0]
    check(r.rc == 1 and LONER in stale_part and 'guestB' in stale_part,
          'status table does not show %s in the wrong guest: %s' % (LONER, r))
    # sync removes it; status is healthy again
    t = now()
    lab.bbvirt('sync')
    lab.wait_state(expect, t, 'sync removing %s from guestB' % LONER, 30)
    _, st = status_json(lab, 0)
    status_matches_live(lab, st)
    lab.notes.append('wrong guest: exit 1, sync repaired it')

    # libvirtd down: status shows the host side, says so, exits 1
    lab.stop_libvirtd()
    _, st = status_json(lab, 1)
    check(st['libvirt']['reachable'] is False, 'libvirt: %s' % st['libvirt'])
    check(len(st['devices']) == 4, 'devices without libvirt: %s' % st['devices'])
    lab.start_libvirtd()
    lab.hold(expect, 'after libvirtd restart', 1)


def stage_files(stage):
    for top, dirs, files in os.walk(stage):
        for f in files:
            yield '/' + os.path.relpath(os.path.join(top, f), stage)


# vm.conf is no file of the package's (bit-babbler ships that path as its
# conffile): it ships the example in /usr/share/bbvirt, and postinst copies
# it to /etc/bit-babbler only on a first install without one.
PKG_FILES = ('/usr/bin/bbvirt', '/usr/lib/udev/rules.d/60-bbvirt.rules',
             '/etc/libvirt/hooks/qemu.d/bbvirt', '/usr/share/bbvirt/vm.conf',
             '/usr/share/man/man1/bbvirt.1.gz', '/usr/share/doc/bbvirt/copyright',
             '/usr/share/bash-completion/completions/bbvirt',
             '/usr/share/zsh/vendor-completions/_bbvirt',
             '/usr/share/fish/vendor_completions.d/bbvirt.fish')


# The stand-in bit-babbler (packaging/standin-bit-babbler): its rule where a
# bit-babbler built on Debian 12 has it, and the log its bbvirt appends to.
ORIGINAL_RULE = '/lib/udev/rules.d/60-bit-babbler.rules'
STANDIN_LOG = '/run/bit-babbler-standin.log'


def standin_runs():
    """The lines the stand-in's bbvirt logged (how udev ran it)."""
    return rfile(STANDIN_LOG).splitlines() if os.path.exists(STANDIN_LOG) else []


def bitbabbler_setup(d, who):
    """What the original's rule gave a BitBabbler, and bbvirt's rule must
    give it too: group bit-babbler with mode 0660, an ACL for the group,
    /dev/bitbabbler/SERIAL, autosuspend after 2 s. `who`: the rule in force."""
    node = '/dev/bus/usb/%03d/%03d' % (d.bus, d.dev)
    st = os.stat(node)
    group = grp.getgrgid(st.st_gid).gr_name
    check(group == 'bit-babbler' and stat.S_IMODE(st.st_mode) == 0o660,
          '%s: %s is %s %04o, want bit-babbler 0660' % (who, node, group, stat.S_IMODE(st.st_mode)))
    acl = must(['getfacl', '-p', node]).out
    check('group:bit-babbler:rw-' in acl.splitlines(), '%s: no ACL for bit-babbler on %s: %s' % (who, node, acl))
    link = '/dev/bitbabbler/' + d.serial
    check(os.path.realpath(link) == node, '%s: %s -> %s, want %s' % (who, link, os.path.realpath(link), node))
    p = '/sys/bus/usb/devices/%s/power/' % d.name
    got = (rfile(p + 'control'), rfile(p + 'autosuspend_delay_ms'))
    check(got == ('auto', '2000'), '%s: power/control, autosuspend_delay_ms: %s, want auto, 2000' % (who, got))


@scenario(31, 'debian package')
def sc_package(lab):
    deb = lab.args.deb
    check(deb and os.path.isfile(deb), 'no package (lab/run builds it with packaging/build-deb): %r' % deb)
    standin = lab.args.standin
    check(standin and os.path.isfile(standin),
          'no stand-in bit-babbler (lab/run builds it with packaging/standin-bit-babbler): %r' % standin)
    lab.reset(running=('guestA',))
    conf_before = open(VMCONF).read()
    # Take away what `make install` put in place (the admin's vm.conf stays).
    for f in stage_files(lab.args.stage):
        if f != VMCONF and os.path.lexists(f):
            os.unlink(f)
    must(['udevadm', 'control', '--reload'])
    # man-db's trigger re-indexes every man page: minutes under TCG on 9p.
    if os.path.exists('/var/lib/man-db/auto-update'):
        os.unlink('/var/lib/man-db/auto-update')

    # A host with the original bit-babbler: its rule alone sets a BitBabbler
    # up and runs its bbvirt with the serial. (dpkg asks about the vm.conf it
    # finds; the admin keeps theirs.)
    must(['dpkg', '-i', '--force-confold', standin], timeout=180)
    must(['udevadm', 'control', '--reload'])
    if os.path.exists(STANDIN_LOG):
        os.unlink(STANDIN_LOG)
    lone = lab.plug(LONER)
    settle()
    bitbabbler_setup(lone, 'bit-babbler\'s rule')
    check(any(' attach %s ' % LONER in x for x in standin_runs()),
          'bit-babbler\'s rule did not run its bbvirt for %s: %s' % (LONER, standin_runs()))
    lab.unplug(LONER)
    settle()
    os.unlink(STANDIN_LOG)

    # As an admin switching would: keep the existing vm.conf (--force-confold).
    t = now()
    r = must(['dpkg', '-i', '--force-confold', deb], timeout=180)
    lab.notes.append('dpkg -i %.1fs' % (now() - t))
    check('mask' not in r.out + r.err, 'postinst still advises masking: %s' % r)
    check(not os.path.lexists(ORIGINAL_RULE) and os.path.isfile(ORIGINAL_RULE + '.bit-babbler'),
          '%s not diverted to %s.bit-babbler' % (ORIGINAL_RULE, ORIGINAL_RULE))
    # One rule acts: bbvirt's, which sets the device up as the original's did.
    lone = lab.plug(LONER)
    settle()
    bitbabbler_setup(lone, '60-bbvirt.rules')
    lab.unplug(LONER)
    settle()
    for f in PKG_FILES:
        check(os.path.exists(f), 'the package did not install %s' % f)
    check(os.access('/etc/libvirt/hooks/qemu.d/bbvirt', os.X_OK), 'hook not executable')
    check(open(VMCONF).read() == conf_before, 'dpkg changed the existing vm.conf')
    listed = must(['dpkg', '-L', 'bbvirt']).out.split()
    for f in PKG_FILES:
        check(f in listed, 'dpkg -L bbvirt lacks %s' % f)
    check(VMCONF not in listed, 'dpkg -L bbvirt lists %s (bit-babbler\'s conffile path)' % VMCONF)
    conff = must(['dpkg-query', '-W', '-f=${Conffiles}', 'bbvirt']).out
    check('/etc/libvirt/hooks/qemu.d/bbvirt' in conff and VMCONF not in conff,
          'conffiles: want the hook only: %s' % conff)
    r = lab.bbvirt('check', ok=False)
    check(r.rc == 0, 'bbvirt check after dpkg -i: %s' % r)
    r = run(['man', '-l', '/usr/share/man/man1/bbvirt.1.gz'], timeout=60)
    check(r.rc == 0 and 'bbvirt' in r.out, 'man -l of the packaged man page: %s' % r)

    # The package's rule and hook at work: hotplug, unplug, coldplug.
    k = lab.plug(KW)
    lab.timing('pkg plug->attached', lab.wait_state({'guestA': [k]}, k.t_plug, '%s attached (package rule)' % k))
    t = lab.unplug(KW)
    lab.timing('pkg unplug->detached', lab.wait_state({}, t, '%s detached (package rule)' % KW))
    k, a = lab.plug(KW, AB)
    lab.wait_state({'guestA': [k, a]}, k.t_plug, 'both attached')
    lab.destroy('guestA')
    t = lab.start('guestA')
    lab.timing('pkg start->attached', lab.wait_state({'guestA': [k, a]}, t, 'coldplug through the package hook'))
    check(not standin_runs(), 'bit-babbler\'s bbvirt ran with bbvirt\'s package installed: %s' % standin_runs())

    # Removed (conffiles stay): bbvirt's files go, bit-babbler's come back as
    # they were, and guests still start.
    must(['dpkg', '-r', 'bbvirt'], timeout=180)
    check(not os.path.exists('/usr/lib/udev/rules.d/60-bbvirt.rules'), 'dpkg -r left 60-bbvirt.rules')
    check(os.path.isfile(ORIGINAL_RULE) and not os.path.lexists(ORIGINAL_RULE + '.bit-babbler'),
          'dpkg -r did not give %s back' % ORIGINAL_RULE)
    check('stand-in' in open('/usr/bin/bbvirt').read(), '/usr/bin/bbvirt is not bit-babbler\'s after dpkg -r')
    r = run(['dpkg', '--verify', 'bit-babbler'])
    check(r.rc == 0 and not [x for x in r.out.splitlines() if not x.endswith(' c ' + VMCONF)],
          'bit-babbler\'s files changed: %s' % r)
    check(os.path.exists('/etc/libvirt/hooks/qemu.d/bbvirt'), 'the hook conffile went with dpkg -r')
    lab.destroy('guestA')
    lab.start('guestA')
    check(lab.state('guestA') == 'paused', 'guestA did not start after dpkg -r: %s' % lab.state('guestA'))
    lab.hold({}, 'package removed: nothing attached', 1)
    # bit-babbler's rule acts again.
    lone = lab.plug(LONER)
    settle()
    bitbabbler_setup(lone, 'bit-babbler\'s rule, back')
    check(any(' attach %s ' % LONER in x for x in standin_runs()),
          'bit-babbler\'s rule, back, did not run its bbvirt for %s: %s' % (LONER, standin_runs()))
    lab.unplug(LONER)
    must(['dpkg', '-P', 'bit-babbler'], timeout=180)
    if os.path.exists(STANDIN_LOG):
        os.unlink(STANDIN_LOG)
    lab.notes.append('bit-babbler (stand-in) first: diverted, one rule, given back')

    # Back to the `make install` tree for the scenarios after this one.
    for e in sorted(os.listdir(lab.args.stage)):
        must(['cp', '-a', os.path.join(lab.args.stage, e), '/'])
    must(['udevadm', 'control', '--reload'])
    lab.unplug_all()


# ------------------------------------------------------------------ bench

BENCH_SERIALS = ['BENCH%02d' % i for i in range(1, 17)]


def bench_conf():
    return ('# bbvirt lab: benchmarks\nDOMAIN_RNG_guestA=( %s %s )\nDOMAIN_RNG_guestB=( %s )\n'
            % (KW, ' '.join(BENCH_SERIALS + STORM), BR))


def mask_rule(on):
    if on:
        if not os.path.lexists(RULE_MASK):
            os.symlink('/dev/null', RULE_MASK)
    elif os.path.lexists(RULE_MASK):
        os.unlink(RULE_MASK)
    must(['udevadm', 'control', '--reload'])


def hostdev_file(d):
    path = '%s/hd-%s.xml' % (WORK, d.serial)
    wfile(path, "<hostdev mode='subsystem' type='usb'><source><address type='usb' bus='%d' device='%d'/>"
          "</source><alias name='%s'/></hostdev>" % (d.bus, d.dev, d.alias))
    return path


def timed(argv, timeout=120):
    r = run(argv, timeout=timeout)
    check(r.rc == 0, 'failed: %s' % r)
    return r.secs


def med(xs):
    return statistics.median(xs)


def count_connects(trace):
    """connect() calls to a libvirt socket in an strace -f log."""
    n = 0
    with open(trace, errors='replace') as f:
        for line in f:
            if 'connect(' in line and re.search(r'libvirt[^"]*-sock', line):
                n += 1
    return n


# Only when asked for (lab/run --bench): it takes minutes and asserts little.
@scenario(40, 'bench', bench=True)
def sc_bench(lab):
    rounds = lab.args.bench_rounds
    # 16 devices need more than one xHCI controller's 15 ports.
    lab.reset(running=(), conf=bench_conf())
    xml = must(['virsh', '-c', URI, 'dumpxml', '--inactive', 'guestA']).out
    xml = xml.replace('</devices>', "<controller type='usb' index='1' model='qemu-xhci' ports='15'/>\n</devices>", 1)
    wfile(WORK + '/guestA-bench.xml', xml)
    must(['virsh', '-c', URI, 'define', WORK + '/guestA-bench.xml'])
    lab.reset(conf=bench_conf())
    rows = []
    lat = {'plug': [], 'unplug': [], 'virsh_attach': [], 'virsh_detach': [],
           'cli_attach': [], 'cli_detach': []}
    for i in range(rounds):
        out('bench: latency round %d/%d' % (i + 1, rounds))
        # the whole chain: plug -> kernel -> udev -> bbvirt -> libvirt -> QEMU
        d = lab.plug(KW)
        lat['plug'].append(lab.wait_state({'guestA': [d]}, d.t_plug, 'attached'))
        t = lab.unplug(KW)
        lat['unplug'].append(lab.wait_state({}, t, 'detached'))
        # bbvirt by hand and bare virsh, on the same device, rule masked
        mask_rule(True)
        d = lab.plug(KW)
        settle()
        lat['cli_attach'].append(timed(['/usr/bin/bbvirt', 'attach', KW]))
        lab.wait_state({'guestA': [d]}, now(), 'attached by bbvirt attach', 10)
        lat['cli_detach'].append(timed(['/usr/bin/bbvirt', 'detach', KW]))
        lab.wait_state({}, now(), 'detached by bbvirt detach', 10)
        hd = hostdev_file(d)
        lat['virsh_attach'].append(timed(['virsh', '-c', URI, 'attach-device', 'guestA', hd, '--live']))
        lab.wait_state({'guestA': [d]}, now(), 'attached by virsh', 10)
        lat['virsh_detach'].append(timed(['virsh', '-c', URI, 'detach-device', 'guestA', hd, '--live']))
        lab.wait_state({}, now(), 'detached by virsh', 10)
        lab.unplug(KW)
        mask_rule(False)

    # plug -> attached split into its parts, from the kernel's uevent (udev
    # monitor) and bbvirt's own log lines at -vvv (the rule's words with
    # -vvv added, in an override rule; the only change to the chain)
    parts = {'kernel': [], 'udev_front': [], 'front_exec': [], 'bbvirt': [], 'libvirt': [],
             'after': []}
    installed = '/usr/lib/udev/rules.d/60-bbvirt.rules'
    with open(installed) as f:
        rule = f.read()
    check(' --syslog"' in rule, '%s has no --syslog RUN line' % installed)
    for i in range(rounds):
        out('bench: chain split round %d/%d' % (i + 1, rounds))
        wfile(RULE_MASK, rule.replace(' --syslog"', ' --syslog -vvv"'))
        must(['udevadm', 'control', '--reload'])
        d = lab.plug(KW)
        lab.wait_state({'guestA': [d]}, d.t_plug, 'attached (split round)')
        settle()
        t_k = lab.udev.find('KERNEL', 'add', d.name, d.t_plug)
        lines = [(t, m) for t, m in lab.syslog.lines if t >= d.t_plug and 'bbvirt' in m]

        def at(text):
            hit = [t for t, m in lines if text in m]
            check(hit, 'bbvirt logged no line with %r: %s' % (text, [m for _, m in lines]))
            return hit[0]
        # "001:004 is KWIF4Q (001:004, 1-1)": logged first by the front
        # (bbvirt-event), then again by bbvirt in the same process after the
        # exec (libvirt loaded, config and sysfs read again)
        found = [t for t, m in lines if ' is %s (' % KW in m]
        check(len(found) >= 2, 'want the line "is %s" from the front and from bbvirt: %s'
              % (KW, [m for _, m in lines]))
        t_front, t_full = found[0], found[-1]
        t_xml = at('hostdev XML for')
        t_att = at('attached %s' % KW)
        t_u = lab.udev.find('UDEV', 'add', d.name, d.t_plug)
        check(t_k is not None and t_u is not None, 'udev monitor missed the add of %s' % d.name)
        parts['kernel'].append(t_k - d.t_plug)
        parts['udev_front'].append(t_front - t_k)
        parts['front_exec'].append(t_full - t_front)
        parts['bbvirt'].append(t_xml - t_full)
        parts['libvirt'].append(t_att - t_xml)
        parts['after'].append(max(0.0, t_u - t_att))
        t = lab.unplug(KW)
        lab.wait_state({}, t, 'detached (split round)')
        os.unlink(RULE_MASK)
        must(['udevadm', 'control', '--reload'])

    va, vd = med(lat['virsh_attach']), med(lat['virsh_detach'])
    rows.append(('plug -> attached (udev, bbvirt)', med(lat['plug']), 'virsh attach-device', va))
    rows.append(('unplug -> detached (udev, bbvirt)', med(lat['unplug']), 'virsh detach-device', vd))
    rows.append(('bbvirt attach SERIAL', med(lat['cli_attach']), 'virsh attach-device', va))
    rows.append(('bbvirt detach SERIAL', med(lat['cli_detach']), 'virsh detach-device', vd))

    # guest start -> its four devices attached (hook -> udev -> bbvirt),
    # next to virsh start plus four bare virsh attach-device calls
    starts, bares = [], []
    for i in range(rounds):
        out('bench: guest start round %d/%d' % (i + 1, rounds))
        lab.reset(running=('guestB',), conf=bench_conf())
        devs = lab.plug(*STORM)
        settle()
        t = lab.start('guestA')
        starts.append(lab.wait_state({'guestA': devs}, t, 'guestA start attaching 4'))
        lab.destroy('guestA')
        mask_rule(True)
        bare = timed(['virsh', '-c', URI, 'start', 'guestA', '--paused'])
        for d in devs:
            bare += timed(['virsh', '-c', URI, 'attach-device', 'guestA', hostdev_file(d), '--live'])
        bares.append(bare)
        lab.wait_state({'guestA': devs}, now(), 'attached by virsh', 10)
        lab.destroy('guestA')
        mask_rule(False)
    rows.append(('guest start -> 4 attached (hook)', med(starts), 'virsh start + 4 x attach-device', med(bares)))

    # attach-all scaling: devices plugged with the rule masked, then one
    # bbvirt attach-all; connections counted with strace in a second run.
    scale = []
    for n in (1, 4, 16):
        out('bench: attach-all of %d' % n)
        lab.reset(conf=bench_conf())
        mask_rule(True)
        devs = lab.plug(*BENCH_SERIALS[:n])
        if n == 1:
            devs = [devs]
        settle()
        wall = timed(['/usr/bin/bbvirt', 'attach-all', 'guestA'])
        lab.wait_state({'guestA': devs}, now(), 'attach-all of %d' % n, 30)
        dwall = timed(['/usr/bin/bbvirt', 'detach-all', 'guestA'])
        lab.wait_state({}, now(), 'detach-all of %d' % n, 30)
        trace = '%s/strace-%d' % (WORK, n)
        timed(['strace', '-f', '-qq', '-e', 'trace=connect', '-o', trace,
               '/usr/bin/bbvirt', 'attach-all', 'guestA'], timeout=300)
        conns = count_connects(trace)
        lab.wait_state({'guestA': devs}, now(), 'attach-all of %d (strace)' % n, 30)
        timed(['/usr/bin/bbvirt', 'detach-all', 'guestA'])
        lab.wait_state({}, now(), 'detach-all of %d' % n, 30)
        # bare virsh, one attach-device per device (as the original bbvirt
        # did); strace on the first call counts what one call opens
        vw, per_call = 0.0, None
        for d in devs:
            argv = ['virsh', '-c', URI, 'attach-device', 'guestA', hostdev_file(d), '--live']
            vw += timed(argv)
        lab.wait_state({'guestA': devs}, now(), '%d attached by virsh' % n, 30)
        for j, d in enumerate(devs):
            argv = ['virsh', '-c', URI, 'detach-device', 'guestA', hostdev_file(d), '--live']
            if j == 0:
                timed(['strace', '-f', '-qq', '-e', 'trace=connect', '-o', trace] + argv)
                per_call = count_connects(trace)
            else:
                timed(argv)
        lab.wait_state({}, now(), 'detached by virsh', 30)
        vconns = per_call * n
        lab.unplug_all()
        mask_rule(False)
        scale.append((n, conns, wall, dwall, vconns, vw))

    out('')
    out('BENCH lab latencies: median of %d rounds, TCG guest (%s)' % (rounds, os.uname().release))
    out('BENCH | measured | bbvirt (s) | bare virsh | virsh (s) | ratio |')
    out('BENCH |---|---|---|---|---|')
    for what, secs, base, bsecs in rows:
        out('BENCH | %s | %.2f | %s | %.2f | %.2f |' % (what, secs, base, bsecs, secs / bsecs))
    out('BENCH')
    out('BENCH plug -> attached, split (median of %d rounds; times from the lab\'s clock: the '
        'gadget bind, the kernel uevent seen by udevadm monitor, bbvirt\'s -vvv log lines, '
        'udev\'s own event after RUN)' % rounds)
    out('BENCH | part | from | to | s |')
    out('BENCH |---|---|---|---|')
    for key, a, b in [('kernel', 'bind (plug)', 'kernel uevent'),
                      ('udev_front', 'kernel uevent', "the front's line (udev rules, fork, exec, "
                       "vm.conf and sysfs read)"),
                      ('front_exec', "the front's line", "bbvirt's line (exec, libvirt loaded, "
                       "vm.conf and sysfs read again)"),
                      ('bbvirt', "bbvirt's line", 'hostdev XML built (lock, connect, live XML read)'),
                      ('libvirt', 'hostdev XML built', 'attach call returned ("attached")'),
                      ('after', '"attached"', "udev's event (bbvirt exits, udev done)")]:
        out('BENCH | %s | %s | %s | %.2f |' % (key, a, b, med(parts[key])))
    out('BENCH')
    out('BENCH attach-all scaling (connections: connect() calls to the libvirt socket, counted by '
        'strace in a separate run; virsh: one attach-device per device, wall times summed, '
        'connections = n x those of one virsh call under strace)')
    out('BENCH | devices | bbvirt connections | attach-all (s) | detach-all (s) | virsh connections | n x virsh attach-device (s) | ratio |')
    out('BENCH |---|---|---|---|---|---|---|')
    for n, conns, wall, dwall, vconns, vw in scale:
        out('BENCH | %d | %d | %.2f | %.2f | %d | %.2f | %.2f |' % (n, conns, wall, dwall, vconns, vw, wall / vw))
    for n, conns, *_ in scale:
        check(conns == 1, 'attach-all of %d devices opened %d libvirt connections' % (n, conns))
    lab.notes.append('%d rounds' % rounds)

