"""Checks and tools that several groups of scenarios share.

  bbvirt_lines    bbvirt's log lines (syslog sink or journal) since a time
  status_json     `bbvirt status --json`, parsed, its schema checked; with
                  want_rc also its exit status and its "healthy"
  check_healthy   status says healthy, nothing stale
  qemu_pids       the QEMU processes of a guest
  crash_recorder  the kernel's core_pattern pipes to a script that records
                  every process killed by a signal (crashes() reads them)
  seed_of         the seed of a randomized scenario (--soak-seed or new)

Standard library only.
"""

import json
import os
import random
import re

from .core import WORK, Failure, act, check, rfile, run, wait_for, wfile


# A process that dies by a signal (abort, segfault) leaves a line here: the
# VM's kernel pipes its core to CRASH_SH, which only records it. udev would
# otherwise swallow a crashed RUN program quietly.
CRASHES = WORK + '/crashes.log'
CRASH_SH = WORK + '/crash.sh'


def crash_recorder():
    if os.path.exists(CRASH_SH):
        return
    wfile(CRASH_SH, '#!/bin/sh\ncat >/dev/null\necho "$*" >>%s\n' % CRASHES)
    os.chmod(CRASH_SH, 0o755)
    wfile('/proc/sys/kernel/core_pattern', '|%s %%e %%p %%s' % CRASH_SH)
    act('core_pattern: %s' % rfile('/proc/sys/kernel/core_pattern'))
    # does it work? a shell that aborts itself must show up
    run(['sh', '-c', 'kill -ABRT $$'])
    wait_for(lambda: any(c[:1] == ['sh'] and c[2:3] == ['6'] for c in crashes()), 10,
             'the crash recorder to record a test abort')


def crashes():
    try:
        with open(CRASHES) as f:
            return [l.split() for l in f.read().splitlines() if l.strip()]
    except FileNotFoundError:
        return []


def bbvirt_lines(lab, since, pid=None):
    """bbvirt's syslog messages since `since`: [(pid, text)]."""
    res = []
    for t, msg in list(lab.syslog.lines):
        if t < since:
            continue
        m = re.match(r'bbvirt\[(\d+)\]: (.*)', msg, re.S)
        if m and (pid is None or int(m.group(1)) == pid):
            res.append((int(m.group(1)), m.group(2)))
    return res


def status_json(lab, want_rc=None):
    """`bbvirt status --json`: (Result, parsed JSON), the JSON of schema 3.
    want_rc: bbvirt must exit with it, and say healthy exactly when it is 0."""
    r = lab.bbvirt('status', '--json', ok=False)
    if want_rc is not None:
        check(r.rc == want_rc, 'bbvirt status exit %s, want %s: %s' % (r.rc, want_rc, r))
    try:
        j = json.loads(r.out)
    except ValueError as e:
        raise Failure('bbvirt status --json printed no JSON (%s): %s' % (e, r))
    check(j.get('schema') == 3, 'status --json: schema %r, want 3' % j.get('schema'))
    if want_rc is not None:
        check(j['healthy'] == (want_rc == 0), 'healthy=%s with exit %s' % (j['healthy'], r.rc))
    return r, j


def check_healthy(lab, what):
    r, j = status_json(lab)
    check(r.rc == 0 and j['healthy'] and not j['stale'],
          '%s: bbvirt status is not healthy (exit %s, stale %s)' % (what, r.rc, j['stale']))
    return j


def qemu_pids(dom):
    """The pids of the QEMU processes running guest `dom`."""
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


def bbvirt_pids():
    """The pids of the bbvirt processes alive now (a hook's detached
    follow-up among them)."""
    res = []
    for p in os.listdir('/proc'):
        if p.isdigit():
            try:
                with open('/proc/%s/comm' % p) as f:
                    comm = f.read().strip()
            except OSError:
                continue
            if comm == 'bbvirt':
                res.append(int(p))
    return res


def seed_of(lab):
    """The seed of a randomized scenario: --soak-seed, or a new one."""
    s = lab.args.soak_seed
    return s if s is not None else random.SystemRandom().randrange(1, 10 ** 9)
