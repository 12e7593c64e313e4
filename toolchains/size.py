#!/usr/bin/python3
"""Size report for the static binary: the stripped size, its xz size, and what each archive (and
our own code) contributes, summed from the linker map of the loaded output sections."""
import lzma
import os
import re
import sys
from collections import defaultdict

binary, mapfile = sys.argv[1], sys.argv[2]
size = os.path.getsize(binary)
with open(binary, 'rb') as f:
    xz = len(lzma.compress(f.read(), preset=9))

contrib = defaultdict(int)
in_memory_map = False
section_re = re.compile(r'^ (\.[\w.]+)?\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$')
pending = None
with open(mapfile, errors='replace') as f:
    for line in f:
        if line.startswith('Linker script and memory map'):
            in_memory_map = True
            continue
        if not in_memory_map:
            continue
        if line.startswith('/DISCARD/'):
            break
        # An input section name long enough to push its address onto the next line.
        if re.match(r'^ \.[\w.$]+$', line.rstrip('\n')) and len(line) > 16:
            pending = line.strip()
            continue
        m = section_re.match(line.rstrip('\n'))
        if not m:
            pending = None
            continue
        name = m.group(1) or pending
        pending = None
        if name is None or name.startswith(('.debug', '.comment', '.note.GNU-stack', '.gnu.build')):
            continue
        addr, length, origin = int(m.group(2), 16), int(m.group(3), 16), m.group(4).strip()
        if addr == 0 or length == 0:
            continue
        am = re.search(r'([^/]+\.a)\(', origin)
        if am and am.group(1) != 'libiotcore.a':
            lib = am.group(1)
        elif am or '/lib/' in origin or '/applets/' in origin or 'CMakeFiles' in origin or 'ltrans' in origin:
            # With link-time optimisation our objects come back as *.ltrans.o partitions.
            lib = 'iotbox code (applets + lib/)'
        else:
            lib = 'other (crt, linker)'
        contrib[lib] += length

total = sum(contrib.values()) or 1
print(f'{binary}: {size:,} bytes stripped ({size / 1048576:.2f} MiB), xz -9: {xz:,} bytes ({xz / 1048576:.2f} MiB)')
print(f'{"contributor":40} {"KiB":>9} {"share":>6}')
for lib, n in sorted(contrib.items(), key=lambda kv: -kv[1]):
    print(f'{lib:40} {n / 1024:9.1f} {100 * n / total:5.1f}%')
print(f'{"loaded sections in all":40} {total / 1024:9.1f}')
