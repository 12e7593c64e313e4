#!/usr/bin/python3
"""Where the bytes of the static binary come from.

  size.py BINARY MAP             stripped size, xz -9 size, and what each library and iotbox's own
                                 code put into the file, summed from the linker map (`make size`)
  size.py --symbols BINARY MAP   the same, with iotbox's own code split by lib/ module, from the
                                 symbols of an unstripped link (cmake -DIOT_STRIP=OFF)
  size.py --table [--archs 'x86_64 aarch64 armhf mipsel'] [--jobs 2] [--out build-size]
                                 builds every architecture with Debian's and the trimmed OpenSSL
                                 and the EXCLUDE_* subsets under --out, and writes --out/sizes.md
                                 (`make size-table`)

The map attributes every input section the linker kept to the archive (or object) it came from.
With link-time optimisation iotbox's own objects come back as *.ltrans.o partitions: they are
counted as iotbox's code. What an applet or an iotd feature costs is measured by leaving it out
(EXCLUDE_<APPLET>, EXCLUDE_<FEATURE>) and taking the difference: of the stripped files (which grow
in 4 KiB pages) and of the code and data in the maps; what a lib/ module costs, from the sizes of the
symbols in iotbox's partitions, by C++ namespace.
"""
import argparse
import bisect
import json
import lzma
import os
import re
import subprocess
import sys
import time
from collections import defaultdict

SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = "iotbox's own code"

# Archive -> the name the table shows; the ones listed first are always shown, even at 0.
LIBRARIES = [
    ('libcrypto', ('libcrypto.a',)),
    ('libssl', ('libssl.a',)),
    ('glibc', ('libc.a', 'libm.a', 'libpthread.a', 'libresolv.a', 'libdl.a', 'librt.a')),
    ('libstdc++', ('libstdc++.a',)),
    ('libprotobuf-lite', ('libprotobuf-lite.a',)),
    ('libmosquitto', ('libmosquitto_static.a', 'libmosquitto.a')),
    ('cJSON', ('libcjson.a',)),
    ('zlib', ('libz.a',)),
    ('libgcc', ('libgcc.a', 'libgcc_eh.a', 'libatomic.a')),
]
ARCHIVE_NAME = {a: name for name, archives in LIBRARIES for a in archives}
SHOWN = [name for name, _ in LIBRARIES] + [OURS]

KINDS = ('code', 'rodata', 'data', 'unwind')
UNWIND = ('.eh_frame', '.eh_frame_hdr', '.gcc_except_table', '.ARM.exidx', '.ARM.extab')
CODE = ('.text', '.init', '.fini', '.plt', '.iplt', '__libc_freeres_fn', '.MIPS.stubs')
NOBITS = ('.bss', '.tbss', '.sbss', '__libc_freeres_ptrs')
NOT_LOADED = ('.debug', '.comment', '.stab', '.gnu.attributes', '.ARM.attributes', '.pdr', '.mdebug', '.gnu_debug')


def kind_of(output_section):
    if output_section in UNWIND:
        return 'unwind'
    if output_section in CODE:
        return 'code'
    if output_section.startswith(('.rodata', '.data.rel.ro', '.got', '.note', '.init_array', '.fini_array',
                                  '.rela', '.rel.', '.tdata', '.MIPS', '.reginfo', '.ARM.attributes')):
        return 'rodata'
    return 'data'


def library_of(origin):
    m = re.search(r'([^/]+\.a)\(', origin)
    if m and m.group(1) != 'libiotcore.a':
        if re.match(r'libm-[\d.]+\.a$', m.group(1)):
            return 'glibc'
        return ARCHIVE_NAME.get(m.group(1), m.group(1))
    if m or 'ltrans' in origin or '/lib/' in origin or '/applets/' in origin or 'CMakeFiles' in origin:
        return OURS
    return 'other (crt, linker)'


def read_map(mapfile):
    """{library: {kind: bytes}} of what the linker kept (file contents: no .bss), and the address
    ranges of iotbox's own code."""
    contrib = defaultdict(lambda: defaultdict(int))
    ours = []
    in_memory_map = False
    output = ''
    pending = None
    section_re = re.compile(r'^ (\.[\w.$]+|\S+)?\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$')
    output_re = re.compile(r'^(\.[\w.$]+|__libc_\w+)(\s|$)')
    with open(mapfile, errors='replace') as f:
        for line in f:
            line = line.rstrip('\n')
            if line.startswith('Linker script and memory map'):
                in_memory_map = True
                continue
            if not in_memory_map:
                continue
            if line.startswith('/DISCARD/'):
                break
            m = output_re.match(line)
            if m:
                output = m.group(1)
                continue
            # An input section name long enough to push its address onto the next line.
            m = re.match(r'^ ([^\s*]\S*)$', line)
            if m:
                pending = m.group(1)
                continue
            m = section_re.match(line)
            if not m:
                pending = None
                continue
            name = m.group(1) or pending
            pending = None
            if name is None or name.startswith(('.debug', '.comment', '.note.GNU-stack', '.gnu.build', '*')):
                continue
            if output in NOBITS or output.startswith(NOT_LOADED):
                continue
            addr, length, origin = int(m.group(2), 16), int(m.group(3), 16), m.group(4).strip()
            if addr == 0 or length == 0:
                continue
            lib = library_of(origin)
            contrib[lib][kind_of(output)] += length
            if lib == OURS:
                ours.append((addr, addr + length))
    return contrib, ours


def sizes(binary):
    with open(binary, 'rb') as f:
        data = f.read()
    return len(data), len(lzma.compress(data, preset=9))


# ----- iotbox's own code by lib/ module, from the symbols of an unstripped binary ----------------
MODULES = {'cbor': 'metrics', 'service': 'base, loop (namespace iot)'}


def module_of(name):
    if 'securedtunneling' in name:
        return 'tunnel (protobuf messages)'
    m = re.search(r'\biot::(\w+)::', name)
    if m:
        sub = m.group(1)
        if sub in ('jobs', 'metrics', 'provision', 'tunnel', 'tls', 'mqtt', 'config', 'json', 'log', 'fs', 'cbor',
                   'service'):
            return MODULES.get(sub, sub)
        return 'base, loop (namespace iot)'
    if re.search(r'\biot::', name):
        return 'base, loop (namespace iot)'
    if re.match(r'(iotd|iot_\w+)_main\b', name) or name.startswith(('(anonymous namespace)::', 'main')):
        return 'applets (main, options, help)'
    return 'templates and helpers shared by modules'


def module_table(binary, ours, nm='nm'):
    ours.sort()
    out = subprocess.run([nm, '-S', '-C', '--size-sort', binary], capture_output=True, text=True, check=True).stdout
    per = defaultdict(int)
    starts = [a for a, _ in ours]
    for line in out.splitlines():
        parts = line.split(' ', 3)
        if len(parts) < 4 or parts[2] in ('U', 'w', 'v'):
            continue
        addr, size = int(parts[0], 16), int(parts[1], 16)
        i = bisect.bisect_right(starts, addr) - 1
        if i < 0 or addr >= ours[i][1]:
            continue
        per[module_of(parts[3])] += size
    total = sum(b - a for a, b in ours)
    named = sum(per.values())
    if total > named:
        per['string literals, padding (no symbol)'] = total - named
    return per


def print_report(binary, mapfile, symbols=False):
    size, xz = sizes(binary)
    contrib, ours = read_map(mapfile)
    total = sum(sum(k.values()) for k in contrib.values()) or 1
    stripped = 'not stripped' not in subprocess.run(['file', '-b', binary], capture_output=True, text=True).stdout
    print(f'{binary}: {size:,} bytes {"stripped" if stripped else "NOT stripped"} ({size / 1e6:.2f} MB, '
          f'{size / 1048576:.2f} MiB), xz -9: {xz:,} bytes ({xz / 1e6:.2f} MB)')
    print(f'{"contributor (KiB)":32} {"total":>8} {"share":>6} {"code":>8} {"rodata":>8} {"data":>7} {"unwind":>7}')
    names = SHOWN + sorted(set(contrib) - set(SHOWN), key=lambda n: -sum(contrib[n].values()))
    for lib in sorted(names, key=lambda n: -sum(contrib[n].values())):
        k = contrib[lib]
        n = sum(k.values())
        print(f'{lib:32} {n / 1024:8.1f} {100 * n / total:5.1f}% ' +
              ' '.join(f'{k[c] / 1024:{8 if c in ("code", "rodata") else 7}.1f}' for c in KINDS))
    # The map counts strings before the linker merged duplicates, so this can come out negative.
    if stripped:
        print(f'{"headers, padding, merged strings":32} {(size - total) / 1024:8.1f}')
    if symbols:
        print(f'\n{OURS} by lib/ module (symbol sizes; inlined code counts where it was inlined):')
        per = module_table(binary, ours)
        for mod, n in sorted(per.items(), key=lambda kv: -kv[1]):
            print(f'  {mod:44} {n / 1024:8.1f} KiB')


# ----- make size-table --------------------------------------------------------------------------
APPLETS = ['IOTD', 'IOT_PROVISION', 'IOT_JOB_RUN', 'IOT_METRICS', 'IOT_TUNNEL', 'IOT_CONFIG']
FEATURES = ['JOBS', 'DD', 'ST', 'FP']
EXCLUDES = APPLETS + FEATURES
SUBSETS = [
    ('all', 'all six applets, every iotd feature', []),
    ('iotd', 'iotd alone, every feature', ['IOT_PROVISION', 'IOT_JOB_RUN', 'IOT_METRICS', 'IOT_TUNNEL', 'IOT_CONFIG']),
    ('jobs', 'jobs only: iotd with jobs, iot-job-run', ['DD', 'ST', 'FP', 'IOT_CONFIG']),
    ('provisioning', 'provisioning only: iot-provision', ['IOTD', 'IOT_JOB_RUN', 'IOT_METRICS', 'IOT_TUNNEL',
                                                          'IOT_CONFIG']),
    ('metrics', 'metrics only: iotd with metrics, iot-metrics', ['JOBS', 'ST', 'FP', 'IOT_CONFIG']),
    ('no-tunnel', 'all but secure tunneling', ['ST']),
]
OPENSSLS = ['debian', 'trimmed']
TRIPLETS = {'x86_64': 'x86_64-linux-gnu', 'aarch64': 'aarch64-linux-gnu', 'armhf': 'arm-linux-gnueabihf',
            'mipsel': 'mipsel-linux-gnu'}
GOAL = 4_000_000


def run_logged(cmd, log, cwd=SOURCE):
    start = time.time()
    with open(log, 'a') as f:
        f.write(f'$ {" ".join(cmd)}\n')
        f.flush()
        rc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT).returncode
    return rc, time.time() - start


def measure(tree):
    binary, mapfile = os.path.join(tree, 'iotbox'), os.path.join(tree, 'iotbox.map')
    size, xz = sizes(binary)
    contrib, _ = read_map(mapfile)
    return {'size': size, 'xz': xz, 'libs': {lib: sum(k.values()) for lib, k in contrib.items()},
            'unwind': sum(k['unwind'] for k in contrib.values())}


def openssl_seconds(log):
    try:
        text = open(log, errors='replace').read()
    except OSError:
        return None
    m = re.findall(r'openssl: built in (\d+) s', text)
    return int(m[-1]) if m else None


def build_arch(arch, openssl, out, jobs, results):
    tree = os.path.join(out, f'{arch}-{openssl}')
    log = os.path.join(out, f'{arch}-{openssl}.log')
    rel = os.path.relpath(tree, SOURCE)
    if arch == 'x86_64':
        cmd = ['make', '-f', 'Makefile', f'OPENSSL={openssl}', f'BUILD={rel}', f'JOBS={jobs}',
               'CMAKE_FLAGS=-DIOT_TESTS=OFF', 'all']
    else:
        cmd = ['make', '-f', 'Makefile.cross', f'ARCH={arch}', f'OPENSSL={openssl}', f'BUILD={rel}', f'JOBS={jobs}',
               'all']
    print(f'size-table: {arch} with {openssl} OpenSSL in {rel} (log: {os.path.relpath(log, SOURCE)})', flush=True)
    rc, seconds = run_logged(cmd, log)
    key = f'{arch}-{openssl}'
    if rc != 0:
        results[key] = {'failed': f'make failed (exit {rc}), see {os.path.relpath(log, SOURCE)}'}
        print(f'size-table: {key} FAILED, see {log}', flush=True)
        return None
    results[key] = measure(tree)
    results[key]['seconds'] = round(seconds)
    results[key]['openssl_seconds'] = openssl_seconds(log) if openssl == 'trimmed' else None
    print(f'size-table: {key}: {results[key]["size"]:,} bytes, xz {results[key]["xz"]:,}', flush=True)
    return tree


def configure_variant(tree, base, excluded, strip=True):
    """A tree that reuses the per-architecture tree's deps; only the EXCLUDE_* options change."""
    cache = {}
    with open(os.path.join(base, 'CMakeCache.txt')) as f:
        for line in f:
            m = re.match(r'(IOT_DEPS_PREFIX|IOT_OPENSSL_ROOT):PATH=(.*)', line.strip())
            if m:
                cache[m.group(1)] = m.group(2)
    args = ['cmake', '-S', SOURCE, '-B', tree, '-DIOT_TESTS=OFF', f'-DIOT_STRIP={"ON" if strip else "OFF"}',
            f'-DIOT_DEPS_PREFIX={cache.get("IOT_DEPS_PREFIX", "")}',
            f'-DIOT_OPENSSL_ROOT={cache.get("IOT_OPENSSL_ROOT", "")}']
    args += [f'-DEXCLUDE_{x}={"ON" if x in excluded else "OFF"}' for x in EXCLUDES]
    return args


def build_variant(name, base, excluded, out, jobs, openssl, strip=True):
    tree = os.path.join(out, f'x86_64-{openssl}-variants')
    log = os.path.join(out, f'x86_64-{openssl}-variants.log')
    rc, _ = run_logged(configure_variant(tree, base, excluded, strip), log)
    if rc == 0:
        rc, _ = run_logged(['cmake', '--build', tree, f'-j{jobs}', '--target', 'iotbox'], log)
    if rc != 0:
        print(f'size-table: variant {name} ({openssl}) FAILED, see {log}', flush=True)
        return None
    if not strip:
        return tree
    r = measure(tree)
    print(f'size-table: x86_64 {openssl} {name}: {r["size"]:,} bytes', flush=True)
    return r


def source_state():
    r = subprocess.run(['git', 'describe', '--always', '--dirty'], cwd=SOURCE, capture_output=True, text=True)
    return f'source {r.stdout.strip()}' if r.returncode == 0 else 'source not a git checkout'


def kib(n):
    return f'{n / 1024:,.0f}' if n else '0'


def write_table(results, archs, out, jobs=2):
    lines = ['# iotbox sizes', '',
             f'Measured by `make size-table` ({time.strftime("%Y-%m-%d")}, {source_state()}): stripped static '
             'binaries, `xz -9` of them, and what each library puts into the file (KiB, from the linker map; '
             'iotbox\'s own code includes its link-time-optimised partitions).', '',
             '## Every architecture, all applets', '',
             '| target | OpenSSL | stripped | xz -9 | ' + ' | '.join(SHOWN[:-1]) + ' | iotbox | build |',
             '| --- | --- | ---: | ---: | ' + ' | '.join('---:' for _ in SHOWN) + ' | ---: |']
    for arch in archs:
        for openssl in OPENSSLS:
            r = results.get(f'{arch}-{openssl}')
            if not r:
                continue
            if 'failed' in r:
                lines.append(f'| {arch} | {openssl} | {r["failed"]} |')
                continue
            build = f'{r["seconds"]} s'
            if r.get('openssl_seconds'):
                build += f' (OpenSSL {r["openssl_seconds"]} s)'
            lines.append(f'| {arch} | {openssl} | {r["size"]:,} | {r["xz"]:,} | ' +
                         ' | '.join(kib(r['libs'].get(lib, 0)) for lib in SHOWN) + f' | {build} |')
    goal = results.get('x86_64-trimmed')
    if goal and 'size' in goal:
        verdict = 'met' if goal['size'] <= GOAL else f'missed by {goal["size"] - GOAL:,} bytes'
        lines += ['', f'Goal: all applets, x86_64, trimmed OpenSSL, at most {GOAL:,} bytes: '
                      f'{goal["size"]:,} bytes, {verdict}.']
    lines += ['', 'build: wall time of the `make` that built the tree from nothing (OpenSSL included), with '
                  f'-j{jobs} on {os.cpu_count()} cores.']
    lines += ['', '## Subsets (x86_64, EXCLUDE_* options)', '',
              '| subset | Debian OpenSSL | xz -9 | trimmed OpenSSL | xz -9 |', '| --- | ---: | ---: | ---: | ---: |']
    for name, what, excluded in SUBSETS:
        row = [what + (' (' + ', '.join(f'EXCLUDE_{x}' for x in excluded) + ')' if excluded else '')]
        for openssl in OPENSSLS:
            r = results.get(f'subset-{openssl}-{name}')
            row += [f'{r["size"]:,}', f'{r["xz"]:,}'] if r else ['', '']
        lines.append('| ' + ' | '.join(row) + ' |')
    lines += ['', '## What leaving one out saves (x86_64, bytes)', '',
              'An applet\'s own code and whatever only it links; `EXCLUDE_JOBS`, `_DD`, `_ST`, `_FP` also take the '
              'feature out of iotd. The stripped file grows in 4 KiB pages; the code and data the linker kept '
              '(from the map) show the exact difference.', '',
              '| option | file, Debian OpenSSL | file, trimmed OpenSSL | code and data, trimmed |',
              '| --- | ---: | ---: | ---: |']
    for x in EXCLUDES:
        row = [f'`EXCLUDE_{x}`']
        for openssl in OPENSSLS:
            full, r = results.get(f'subset-{openssl}-all'), results.get(f'without-{openssl}-{x}')
            row.append(f'{full["size"] - r["size"]:,}' if full and r else '')
        full, r = results.get('subset-trimmed-all'), results.get(f'without-trimmed-{x}')
        row.append(f'{sum(full["libs"].values()) - sum(r["libs"].values()):,}' if full and r else '')
        lines.append('| ' + ' | '.join(row) + ' |')
    mods = results.get('modules')
    if mods:
        lines += ['', '## iotbox\'s own code by lib/ module (x86_64, trimmed OpenSSL)', '',
                  'Sizes of the symbols in iotbox\'s partitions of an unstripped link, by C++ namespace; code the '
                  'optimiser inlined counts where it was inlined.', '', '| module | KiB |', '| --- | ---: |']
        for mod, n in sorted(mods.items(), key=lambda kv: -kv[1]):
            lines.append(f'| {mod} | {n / 1024:,.1f} |')
    text = '\n'.join(lines) + '\n'
    with open(os.path.join(out, 'sizes.md'), 'w') as f:
        f.write(text)
    return text


def table(archs, jobs, out):
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    results_file = os.path.join(out, 'results.json')
    # Kept from earlier runs, so that one architecture can be measured again on its own.
    try:
        with open(results_file) as f:
            results = json.load(f)
    except (OSError, ValueError):
        results = {}
    for arch in archs:
        for openssl in OPENSSLS:
            base = build_arch(arch, openssl, out, jobs, results)
            if arch != 'x86_64' or not base:
                continue
            for name, _, excluded in SUBSETS:
                r = build_variant(name, base, excluded, out, jobs, openssl)
                if r:
                    results[f'subset-{openssl}-{name}'] = r
            for x in EXCLUDES:
                r = build_variant(f'without {x}', base, [x], out, jobs, openssl)
                if r:
                    results[f'without-{openssl}-{x}'] = r
            if openssl == 'trimmed':
                tree = build_variant('unstripped', base, [], out, jobs, openssl, strip=False)
                if tree:
                    _, ours = read_map(os.path.join(tree, 'iotbox.map'))
                    results['modules'] = module_table(os.path.join(tree, 'iotbox'), ours)
            with open(results_file, 'w') as f:
                json.dump(results, f, indent=1)
    with open(results_file, 'w') as f:
        json.dump(results, f, indent=1)
    print(write_table(results, [a for a in TRIPLETS if any(k.startswith(f'{a}-') for k in results)], out, jobs))
    failed = [f'{a}-{o}' for a in archs for o in OPENSSLS if 'failed' in results.get(f'{a}-{o}', {})]
    return 1 if failed else 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--table', action='store_true')
    p.add_argument('--symbols', action='store_true')
    p.add_argument('--archs', default='x86_64 aarch64 armhf mipsel')
    p.add_argument('--jobs', type=int, default=2)
    p.add_argument('--out', default=os.path.join(SOURCE, 'build-size'))
    p.add_argument('binary', nargs='?')
    p.add_argument('map', nargs='?')
    a = p.parse_args()
    if a.table:
        archs = a.archs.split()
        unknown = [x for x in archs if x not in TRIPLETS]
        if unknown:
            p.error(f'unknown architecture {" ".join(unknown)} (known: {" ".join(TRIPLETS)})')
        return table(archs, a.jobs, a.out)
    if not a.binary or not a.map:
        p.error('BINARY and MAP are needed')
    print_report(a.binary, a.map, a.symbols)
    return 0


if __name__ == '__main__':
    sys.exit(main())
