import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import type { OciSeccomp, OciSeccompRule } from '../../src/sandbox/oci-spec.js';
import {
  DEFAULT_SECCOMP_PROFILE_PATH,
  loadSeccompProfile,
  seccompForArch,
} from '../../src/sandbox/seccomp.js';

/**
 * The shipped seccomp profile, checked as data: what it refuses (DESIGN §4), and a small
 * evaluator of its argument rules with OCI / libseccomp semantics, so the ioctl and socket
 * filters are checked for every 64-bit argument, not just the values someone thought of.
 */

const PROFILE_TEXT = readFileSync(DEFAULT_SECCOMP_PROFILE_PATH, 'utf8');
const ARCHES = ['x64', 'arm64'] as const;

/** Actions that let a call through to the kernel. */
const PASSING_ACTIONS = new Set(['SCMP_ACT_ALLOW', 'SCMP_ACT_LOG']);

const FORBIDDEN = [
  'ptrace',
  'process_vm_readv',
  'process_vm_writev',
  'io_uring_setup',
  'io_uring_enter',
  'io_uring_register',
  'userfaultfd',
  'keyctl',
  'add_key',
  'request_key',
  'bpf',
  'perf_event_open',
  'mount',
  'umount',
  'umount2',
  'pivot_root',
  'unshare',
  'setns',
  'init_module',
  'finit_module',
  'delete_module',
  'kexec_load',
  'kexec_file_load',
  'open_tree',
  'move_mount',
  'fsopen',
  'fsmount',
  'fspick',
  'fsconfig',
  'mount_setattr',
  'open_by_handle_at',
  'name_to_handle_at',
  'chroot',
  'reboot',
  'swapon',
  'swapoff',
  'acct',
];

/** clone flags that create namespaces: NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET. */
const CLONE_NAMESPACE_FLAGS = 0x7e02_0000n;

function passingRules(seccomp: OciSeccomp, name: string): OciSeccompRule[] {
  return seccomp.syscalls.filter((rule) => rule.names.includes(name) && PASSING_ACTIONS.has(rule.action));
}

type Condition = NonNullable<OciSeccompRule['args']>[number];

function conditionHolds(condition: Condition, args: readonly bigint[]): boolean {
  const arg = args[condition.index];
  if (arg === undefined) throw new RangeError(`no argument ${condition.index}`);
  const value = BigInt(condition.value);
  switch (condition.op) {
    case 'SCMP_CMP_EQ':
      return arg === value;
    case 'SCMP_CMP_NE':
      return arg !== value;
    case 'SCMP_CMP_LT':
      return arg < value;
    case 'SCMP_CMP_LE':
      return arg <= value;
    case 'SCMP_CMP_GT':
      return arg > value;
    case 'SCMP_CMP_GE':
      return arg >= value;
    // OCI: `value` is the mask, `valueTwo` the value the masked argument must equal.
    case 'SCMP_CMP_MASKED_EQ':
      return (arg & value) === BigInt(condition.valueTwo ?? 0);
    default:
      throw new Error(`the evaluator does not know ${condition.op}`);
  }
}

/**
 * Whether the profile lets `name` through with these (64-bit) arguments: the conditions of one
 * rule are AND-ed, the rules for one syscall OR-ed, and anything unmatched gets the default action.
 */
function allows(seccomp: OciSeccomp, name: string, args: readonly bigint[]): boolean {
  const rules = seccomp.syscalls.filter((rule) => rule.names.includes(name));
  for (const rule of rules) {
    // Only allow rules, so the result never depends on the order of precedence of actions.
    assert.ok(
      PASSING_ACTIONS.has(rule.action),
      `${name} has a ${rule.action} rule the evaluator cannot order`,
    );
  }
  if (rules.some((rule) => (rule.args ?? []).every((condition) => conditionHolds(condition, args))))
    return true;
  return PASSING_ACTIONS.has(seccomp.defaultAction);
}

// fast-check 4 dropped bigUintN: the same range, every 64-bit value.
const TIOCSTI = 0x5412n;
const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });

describe('seccomp profile', () => {
  const profiles = Object.fromEntries(
    ARCHES.map((arch) => [arch, loadSeccompProfile(undefined, arch).seccomp]),
  );
  const x64 = loadSeccompProfile(undefined, 'x64').seccomp;

  test('loads from the default path (from dist/ as from src/)', () => {
    const loaded = loadSeccompProfile();
    assert.ok(loaded.seccomp.syscalls.length > 0);
  });

  test('is an allowlist: anything not listed answers an error', () => {
    for (const arch of ARCHES) {
      assert.equal(profiles[arch]?.defaultAction, 'SCMP_ACT_ERRNO', arch);
      assert.equal(typeof profiles[arch]?.defaultErrnoRet, 'number', arch);
    }
  });

  test('names only the native ABI, so 32-bit and x32 calls are killed, not filtered (decision 0005)', () => {
    // A sub-architecture in the filter would let i386 socketcall() create any socket family:
    // libseccomp allows socketcall(SYS_SOCKET) for a socket rule and cannot see its arguments.
    assert.deepEqual(x64.architectures, ['SCMP_ARCH_X86_64']);
    assert.deepEqual(seccompForArch(PROFILE_TEXT, 'arm64').seccomp.architectures, ['SCMP_ARCH_AARCH64']);
  });

  for (const arch of ARCHES) {
    test(`${arch}: no forbidden syscall is allowed, with or without conditions`, () => {
      const seccomp = profiles[arch];
      assert.ok(seccomp);
      const allowed = FORBIDDEN.filter((name) => passingRules(seccomp, name).length > 0);
      assert.deepEqual(allowed, []);
    });
  }

  test('the profile file itself allows no forbidden syscall for any architecture', () => {
    const raw = JSON.parse(PROFILE_TEXT) as { syscalls: OciSeccompRule[] };
    const allowed = raw.syscalls
      .filter((rule) => PASSING_ACTIONS.has(rule.action))
      .flatMap((rule) => rule.names)
      .filter((name) => FORBIDDEN.includes(name));
    assert.deepEqual(allowed, []);
  });

  test('clone is allowed only without namespace flags', () => {
    const rules = passingRules(x64, 'clone');
    assert.ok(rules.length > 0, 'clone must be allowed: fork and threads need it');
    for (const rule of rules) {
      const guard = (rule.args ?? []).find(
        (arg) =>
          arg.index === 0 &&
          arg.op === 'SCMP_CMP_MASKED_EQ' &&
          (BigInt(arg.value) & CLONE_NAMESPACE_FLAGS) === CLONE_NAMESPACE_FLAGS &&
          arg.valueTwo === 0,
      );
      assert.ok(guard, `an unguarded clone rule: ${JSON.stringify(rule)}`);
    }
  });

  test('clone: fork and thread flags pass, any namespace flag is refused', () => {
    const SIGCHLD = 17n;
    const THREAD = 0x3d0f00n; // CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|PARENT_SETTID|CHILD_CLEARTID
    assert.equal(allows(x64, 'clone', [SIGCHLD, 0n]), true);
    assert.equal(allows(x64, 'clone', [THREAD, 0n]), true);
    for (let bit = 0n; bit < 32n; bit += 1n) {
      const flag = 1n << bit;
      if ((flag & CLONE_NAMESPACE_FLAGS) === 0n) continue;
      assert.equal(allows(x64, 'clone', [SIGCHLD | flag, 0n]), false, `clone flag 0x${flag.toString(16)}`);
    }
  });

  test('clone3 answers ENOSYS so that libc falls back to clone', () => {
    for (const arch of ARCHES) {
      const seccomp = profiles[arch];
      assert.ok(seccomp);
      assert.deepEqual(passingRules(seccomp, 'clone3'), [], arch);
      const rules = seccomp.syscalls.filter((rule) => rule.names.includes('clone3'));
      assert.equal(rules.length, 1, arch);
      assert.equal(rules[0]?.action, 'SCMP_ACT_ERRNO');
      assert.equal(rules[0]?.errnoRet, 38);
    }
  });

  test('ioctl is never allowed unconditionally', () => {
    const rules = passingRules(x64, 'ioctl');
    assert.ok(rules.length > 0, 'ioctl must be allowed for most commands');
    for (const rule of rules) assert.ok((rule.args ?? []).length > 0, JSON.stringify(rule));
  });

  test('ioctl: TIOCSTI is refused whatever the upper 32 bits, other commands pass', () => {
    assert.equal(allows(x64, 'ioctl', [1n, 0x5412n]), false);
    assert.equal(allows(x64, 'ioctl', [1n, 0x1_0000_5412n]), false);
    assert.equal(allows(x64, 'ioctl', [1n, 0xffff_ffff_0000_5412n]), false);
    assert.equal(allows(x64, 'ioctl', [1n, 0x5401n]), true); // TCGETS
    assert.equal(allows(x64, 'ioctl', [1n, 0x541bn]), true); // FIONREAD
  });

  test('ioctl: a command one low bit away from TIOCSTI passes, whatever the upper 32 bits', () => {
    // Only these commands tell whether the rule for each bit is there and right.
    for (let bit = 0n; bit < 32n; bit += 1n) {
      for (const high of [0n, 0xffff_ffff_0000_0000n]) {
        const cmd = high | (TIOCSTI ^ (1n << bit));
        assert.equal(allows(x64, 'ioctl', [1n, cmd]), true, `0x${cmd.toString(16)}`);
      }
    }
  });

  test('property: ioctl is allowed iff the low 32 bits of the command are not TIOCSTI', () => {
    // Uniform 64-bit commands almost never come near TIOCSTI: half the runs flip a few of its
    // low bits instead, under random upper bits.
    const nearTiocsti = fc
      .tuple(
        fc.bigInt({ min: 0n, max: 2n ** 32n - 1n }),
        fc.uniqueArray(fc.integer({ min: 0, max: 31 }), { maxLength: 3 }),
      )
      .map(([high, bits]) => (high << 32n) | bits.reduce((cmd, bit) => cmd ^ (1n << BigInt(bit)), TIOCSTI));
    fc.assert(
      fc.property(u64, fc.oneof(u64, nearTiocsti), (fd, cmd) => {
        assert.equal(allows(x64, 'ioctl', [fd, cmd]), (cmd & 0xffff_ffffn) !== TIOCSTI);
      }),
      {
        numRuns: 5000,
        examples: [
          [0n, 0x5412n],
          [0n, 0x1_0000_5412n],
          [0n, 0x5413n],
        ],
      },
    );
  });

  test('socket: AF_VSOCK (40) is refused, other families pass', () => {
    assert.equal(allows(x64, 'socket', [40n, 1n, 0n]), false);
    assert.equal(allows(x64, 'socket', [1n, 1n, 0n]), true); // AF_UNIX
    assert.equal(allows(x64, 'socket', [2n, 1n, 0n]), true); // AF_INET
  });

  test('property: socket(AF_VSOCK) is refused whatever the upper 32 bits of the family', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 32n - 1n }), (high) => {
        assert.equal(allows(x64, 'socket', [(high << 32n) | 40n, 1n, 0n]), false);
      }),
    );
  });

  test('socket(AF_VSOCK) cannot be reached through the 32-bit socketcall multiplexer', () => {
    assert.ok(!x64.architectures.includes('SCMP_ARCH_X86'), 'i386 calls are outside the filter: killed');
    assert.equal(passingRules(x64, 'socketcall').length, 0);
  });

  test('socket() allows exactly AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK, on the low 32 bits', () => {
    const allowedFamilies = [1n, 2n, 10n, 16n];
    for (let family = 0n; family < 64n; family += 1n) {
      assert.equal(
        allows(x64, 'socket', [family, 1n, 0n]),
        allowedFamilies.includes(family),
        `family ${family}`,
      );
      assert.equal(allows(x64, 'socket', [family | (1n << 32n), 1n, 0n]), allowedFamilies.includes(family));
    }
  });

  test('inotify and POSIX message queues are refused (charged to the host root user)', () => {
    for (const name of ['inotify_init', 'inotify_init1', 'inotify_add_watch', 'mq_open', 'mq_timedsend']) {
      assert.equal(passingRules(x64, name).length, 0, name);
    }
  });
});

describe('seccompForArch', () => {
  test('arm64 gets the ARM architectures and its own rules, not the x86 ones', () => {
    const { seccomp } = seccompForArch(PROFILE_TEXT, 'arm64');
    assert.ok(seccomp.architectures.includes('SCMP_ARCH_AARCH64'));
    assert.ok(!seccomp.architectures.includes('SCMP_ARCH_X86_64'));
    assert.equal(passingRules(seccomp, 'arch_prctl').length, 0);
    assert.ok(passingRules(seccomp, 'set_tls').length > 0);
  });

  test('x64 gets arch_prctl but not the ARM-only rules', () => {
    const { seccomp } = seccompForArch(PROFILE_TEXT, 'x64');
    assert.ok(passingRules(seccomp, 'arch_prctl').length > 0);
    assert.equal(passingRules(seccomp, 'set_tls').length, 0);
  });

  test('an architecture the profile does not cover is HOST_UNSUPPORTED', () => {
    assert.throws(() => seccompForArch(PROFILE_TEXT, 'mips'), {
      name: 'AirlockError',
      code: 'HOST_UNSUPPORTED',
      message: /mips/,
    });
  });

  test('a profile whose default is to allow is refused (INVALID_CONFIG)', () => {
    const allowing = { ...JSON.parse(PROFILE_TEXT), defaultAction: 'SCMP_ACT_ALLOW' };
    assert.throws(() => seccompForArch(JSON.stringify(allowing), 'x64'), {
      name: 'AirlockError',
      code: 'INVALID_CONFIG',
    });
  });

  for (const [what, text] of [
    ['not JSON', '{'],
    ['not an object', '"profile"'],
    ['without rules', JSON.stringify({ ...JSON.parse(PROFILE_TEXT), syscalls: [] })],
    [
      'a rule without names',
      JSON.stringify({ ...JSON.parse(PROFILE_TEXT), syscalls: [{ action: 'SCMP_ACT_ALLOW' }] }),
    ],
  ] as const) {
    test(`a profile that is ${what} is refused (INVALID_CONFIG)`, () => {
      assert.throws(() => seccompForArch(text, 'x64'), { name: 'AirlockError', code: 'INVALID_CONFIG' });
    });
  }

  test('a profile that cannot be read is INVALID_CONFIG', () => {
    assert.throws(() => loadSeccompProfile('/nonexistent/profile.json'), {
      name: 'AirlockError',
      code: 'INVALID_CONFIG',
    });
  });

  test('the digest is a stable sha256 of the section, different per architecture', () => {
    const first = seccompForArch(PROFILE_TEXT, 'x64');
    const second = seccompForArch(PROFILE_TEXT, 'x64');
    assert.match(first.digest, /^sha256:[0-9a-f]{64}$/);
    assert.equal(first.digest, second.digest);
    assert.notEqual(first.digest, seccompForArch(PROFILE_TEXT, 'arm64').digest);
  });

  test('the digest changes when the profile does', () => {
    const raw = JSON.parse(PROFILE_TEXT) as { syscalls: OciSeccompRule[] };
    raw.syscalls.push({ names: ['getpid'], action: 'SCMP_ACT_ALLOW' });
    assert.notEqual(
      seccompForArch(JSON.stringify(raw), 'x64').digest,
      seccompForArch(PROFILE_TEXT, 'x64').digest,
    );
  });

  test('profile comments and arch filters do not reach the OCI section', () => {
    const { seccomp } = seccompForArch(PROFILE_TEXT, 'x64');
    for (const rule of seccomp.syscalls) {
      assert.deepEqual(
        Object.keys(rule).filter((key) => !['names', 'action', 'errnoRet', 'args'].includes(key)),
        [],
      );
    }
  });
});
