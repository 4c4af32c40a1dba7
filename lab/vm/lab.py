#!/usr/bin/python3 -u
"""The bbvirt lab, VM side: the program lab/run runs in the VM,
`python3 -u lab.py ...` (and on the host `lab.py --print-conf`).

The lab is the package bbvirtlab next to this file: start reading at
bbvirtlab/__init__.py. Output: one line per scenario (PASS/FAIL, key
timings), then `N passed, N failed`. Exit status 0 only when every scenario
selected passed. Standard library only.
"""

import sys

from bbvirtlab import runner

if __name__ == '__main__':
    sys.exit(runner.main())
