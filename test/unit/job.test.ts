import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { isAirlockError } from '../../src/errors.js';
import {
  checkWorkspacePath,
  DEFAULT_RESOURCES,
  JOB_BOUNDS,
  RESOURCE_BOUNDS,
  type SandboxJob,
  type SandboxResources,
  validateJob,
} from '../../src/sandbox/job.js';

const INVALID_JOB = { name: 'AirlockError', code: 'INVALID_JOB' };

/** validateJob() of a job that is deliberately malformed (the cast stands for untyped input). */
function validateUntyped(job: unknown): ReturnType<typeof validateJob> {
  return validateJob(job as SandboxJob);
}

function withResources(resources: Record<string, unknown>): SandboxJob {
  return { command: ['true'], resources: resources as Partial<SandboxResources> };
}

describe('validateJob: defaults', () => {
  test('a bare command gets the default resources, runtime and nothing else', () => {
    const job = validateJob({ command: ['echo', 'hi'] });
    assert.deepEqual(job, {
      command: ['echo', 'hi'],
      env: {},
      resources: DEFAULT_RESOURCES,
      runtime: 'runc',
      fallbackRuntimes: [],
      inputDir: undefined,
      files: [],
      egress: [],
      image: { kind: 'host', ref: 'host' },
    });
  });

  test('a partial resource request keeps the defaults of the rest', () => {
    const job = validateJob({ command: ['true'], resources: { pids: 64 } });
    assert.deepEqual(job.resources, { ...DEFAULT_RESOURCES, pids: 64 });
  });

  test('the result does not share the command array with the request', () => {
    const command = ['echo', 'a'];
    const job = validateJob({ command });
    command.push('b');
    assert.deepEqual(job.command, ['echo', 'a']);
  });
});

describe('validateJob: resources', () => {
  const names = Object.keys(RESOURCE_BOUNDS) as (keyof SandboxResources)[];

  for (const name of names) {
    const [min, max] = RESOURCE_BOUNDS[name];
    // cpus may be fractional; the others are whole numbers, so "just outside" is one unit away.
    const step = name === 'cpus' ? 0.001 : 1;

    test(`${name}: accepted at both edges [${min}, ${max}]`, () => {
      assert.equal(validateJob(withResources({ [name]: min })).resources[name], min);
      assert.equal(validateJob(withResources({ [name]: max })).resources[name], max);
    });

    test(`${name}: refused just below ${min} and just above ${max}`, () => {
      assert.throws(() => validateJob(withResources({ [name]: min - step })), {
        ...INVALID_JOB,
        message: new RegExp(`resources\\.${name}`),
      });
      assert.throws(() => validateJob(withResources({ [name]: max + step })), {
        ...INVALID_JOB,
        message: new RegExp(`resources\\.${name}`),
      });
    });

    test(`${name}: refused when not a finite number`, () => {
      for (const value of [Number.NaN, Number.POSITIVE_INFINITY, '1', null, true]) {
        assert.throws(() => validateJob(withResources({ [name]: value })), INVALID_JOB, String(value));
      }
    });

    if (name !== 'cpus') {
      test(`${name}: refused when not a whole number`, () => {
        assert.throws(() => validateJob(withResources({ [name]: min + 0.5 })), {
          ...INVALID_JOB,
          message: /whole number/,
        });
      });
    }
  }

  test('cpus may be a fraction', () => {
    assert.equal(validateJob(withResources({ cpus: 0.5 })).resources.cpus, 0.5);
  });

  test('an unknown resource is refused, not ignored', () => {
    assert.throws(() => validateJob(withResources({ gpus: 1 })), { ...INVALID_JOB, message: /gpus/ });
    assert.throws(() => validateJob(withResources({ memory: 1 << 30 })), {
      ...INVALID_JOB,
      message: /memory/,
    });
  });

  test('resources that are not an object are refused', () => {
    assert.throws(() => validateUntyped({ command: ['true'], resources: 5 }), INVALID_JOB);
  });
});

describe('validateJob: command', () => {
  const refused: [string, unknown][] = [
    ['missing', undefined],
    ['empty', []],
    ['a string, not an array', 'true'],
    ['a non-string argument', ['echo', 42]],
    ['an argument with a NUL byte', ['echo', 'a\0b']],
    ['an empty program name', ['']],
    ['too many arguments', Array.from({ length: JOB_BOUNDS.maxArgs + 1 }, () => 'x')],
    ['an argument that is too long', ['echo', 'x'.repeat(JOB_BOUNDS.maxArgBytes + 1)]],
    [
      'too many bytes in all',
      ['echo', ...Array.from({ length: 9 }, () => 'x'.repeat(JOB_BOUNDS.maxArgBytes))],
    ],
  ];
  for (const [what, command] of refused) {
    test(`refuses a command that is ${what}`, () => {
      assert.throws(() => validateUntyped({ command }), INVALID_JOB);
    });
  }

  test('accepts an empty argument after the program', () => {
    assert.deepEqual(validateJob({ command: ['echo', ''] }).command, ['echo', '']);
  });

  test('refuses a job that is not an object', () => {
    assert.throws(() => validateUntyped(null), INVALID_JOB);
    assert.throws(() => validateUntyped('true'), INVALID_JOB);
  });
});

describe('validateJob: env', () => {
  test('accepts names of letters, digits and underscores not starting with a digit', () => {
    const env = { A: '1', _private: '', lower_case9: 'x=y', PATH: '/bin' };
    assert.deepEqual(validateJob({ command: ['true'], env }).env, env);
  });

  for (const name of ['', '1A', 'A-B', 'A=B', 'A B', 'Ä', 'A\0']) {
    test(`refuses the env name ${JSON.stringify(name)}`, () => {
      assert.throws(() => validateJob({ command: ['true'], env: { [name]: 'v' } }), INVALID_JOB);
    });
  }

  test('refuses a value with a NUL byte or that is not a string', () => {
    assert.throws(() => validateJob({ command: ['true'], env: { A: 'a\0b' } }), INVALID_JOB);
    assert.throws(() => validateUntyped({ command: ['true'], env: { A: 1 } }), INVALID_JOB);
  });

  test('refuses an env that is not an object of strings', () => {
    assert.throws(() => validateUntyped({ command: ['true'], env: ['A=1'] }), INVALID_JOB);
    assert.throws(() => validateUntyped({ command: ['true'], env: 'A=1' }), INVALID_JOB);
  });

  test('refuses a name or a value over its own limit', () => {
    const longName = `A${'x'.repeat(JOB_BOUNDS.maxEnvNameBytes)}`;
    assert.throws(() => validateJob({ command: ['true'], env: { [longName]: '' } }), INVALID_JOB);
    const longValue = 'x'.repeat(JOB_BOUNDS.maxEnvValueBytes + 1);
    assert.throws(() => validateJob({ command: ['true'], env: { A: longValue } }), INVALID_JOB);
  });

  test('refuses too many entries', () => {
    const env = Object.fromEntries(
      Array.from({ length: JOB_BOUNDS.maxEnvEntries + 1 }, (_, i) => [`V${i}`, '']),
    );
    assert.throws(() => validateJob({ command: ['true'], env }), INVALID_JOB);
  });

  test('refuses an env that is too large in all, though each value fits', () => {
    const value = 'x'.repeat(JOB_BOUNDS.maxEnvValueBytes);
    const count = Math.ceil(JOB_BOUNDS.maxEnvBytes / JOB_BOUNDS.maxEnvValueBytes) + 1;
    const env = Object.fromEntries(Array.from({ length: count }, (_, i) => [`V${i}`, value]));
    assert.throws(() => validateJob({ command: ['true'], env }), {
      ...INVALID_JOB,
      message: /env is larger/,
    });
  });
});

describe('validateJob: files', () => {
  const job = (files: unknown): unknown => ({ command: ['true'], files });

  test('normalises paths and defaults the mode to 0644', () => {
    const valid = validateJob({
      command: ['true'],
      files: [
        { path: './src//main.c', content: 'int main;' },
        { path: 'run.sh', content: new Uint8Array([35, 33]), mode: 0o755 },
      ],
    });
    assert.deepEqual(
      valid.files.map((file) => [file.path, file.mode]),
      [
        ['src/main.c', 0o644],
        ['run.sh', 0o755],
      ],
    );
  });

  const badPaths = ['/etc/passwd', '..', '../x', 'a/../../x', 'a/..', '', '.', './', 'a\0b'];
  for (const path of badPaths) {
    test(`refuses the file path ${JSON.stringify(path)}`, () => {
      assert.throws(() => validateUntyped(job([{ path, content: '' }])), INVALID_JOB);
    });
  }

  test('refuses two files with the same path, also after normalisation', () => {
    assert.throws(
      () =>
        validateUntyped(
          job([
            { path: 'a/b', content: '1' },
            { path: './a//b', content: '2' },
          ]),
        ),
      { ...INVALID_JOB, message: /repeats/ },
    );
  });

  for (const mode of [0o4755, 0o2755, 0o1777, 0o6777, -1, 0o1000, 1.5]) {
    test(`refuses the mode 0o${mode.toString(8)} (set-id, sticky or not permission bits)`, () => {
      assert.throws(() => validateUntyped(job([{ path: 'f', content: '', mode }])), INVALID_JOB);
    });
  }

  test('accepts the modes 0 and 0777', () => {
    const valid = validateJob({
      command: ['true'],
      files: [
        { path: 'a', content: '', mode: 0 },
        { path: 'b', content: '', mode: 0o777 },
      ],
    });
    assert.deepEqual(
      valid.files.map((file) => file.mode),
      [0, 0o777],
    );
  });

  test('refuses content that is neither a string nor bytes', () => {
    assert.throws(() => validateUntyped(job([{ path: 'f', content: 42 }])), INVALID_JOB);
    assert.throws(() => validateUntyped(job([{ path: 'f', content: [1, 2] }])), INVALID_JOB);
  });

  test("refuses files that add up to more than the job's disk", () => {
    const diskBytes = RESOURCE_BOUNDS.diskBytes[0];
    const half = 'x'.repeat(diskBytes / 2);
    assert.throws(
      () =>
        validateJob({
          command: ['true'],
          resources: { diskBytes },
          files: [
            { path: 'a', content: half },
            { path: 'b', content: `${half}!` },
          ],
        }),
      { ...INVALID_JOB, message: /disk/ },
    );
  });

  test('refuses files that are not an array', () => {
    assert.throws(() => validateUntyped(job({ path: 'f', content: '' })), INVALID_JOB);
  });
});

describe('validateJob: runtimes', () => {
  test('accepts a runtime and fallbacks among runc, crun and gvisor', () => {
    const valid = validateJob({ command: ['true'], runtime: 'crun', fallbackRuntimes: ['runc', 'gvisor'] });
    assert.equal(valid.runtime, 'crun');
    assert.deepEqual(valid.fallbackRuntimes, ['runc', 'gvisor']);
  });

  test('refuses an unknown runtime', () => {
    assert.throws(() => validateUntyped({ command: ['true'], runtime: 'docker' }), INVALID_JOB);
  });

  test('refuses unknown or malformed fallbacks', () => {
    assert.throws(() => validateUntyped({ command: ['true'], fallbackRuntimes: ['docker'] }), INVALID_JOB);
    assert.throws(() => validateUntyped({ command: ['true'], fallbackRuntimes: ['runc', 7] }), INVALID_JOB);
    assert.throws(() => validateUntyped({ command: ['true'], fallbackRuntimes: 'runc' }), INVALID_JOB);
  });
});

describe('checkWorkspacePath', () => {
  test('normalises "." and empty components away', () => {
    assert.equal(checkWorkspacePath('p', 'a/./b//c/'), 'a/b/c');
    assert.equal(checkWorkspacePath('p', './x'), 'x');
  });

  test('refuses a value that is not a string', () => {
    assert.throws(() => checkWorkspacePath('p', 42), INVALID_JOB);
    assert.throws(() => checkWorkspacePath('p', undefined), INVALID_JOB);
  });

  test('refuses a path longer than the bound', () => {
    assert.throws(() => checkWorkspacePath('p', 'a'.repeat(JOB_BOUNDS.maxPathBytes + 1)), INVALID_JOB);
  });

  test('property: the result is a clean relative path with the same real components, or INVALID_JOB', () => {
    const segment = fc.oneof(
      fc.constantFrom('', '.', '..', '...', 'a', 'b c', '.hidden', '..a', 'a..', '\\', '\0'),
      fc.string({ maxLength: 6 }),
    );
    const path = fc
      .tuple(fc.boolean(), fc.array(segment, { maxLength: 8 }))
      .map(([absolute, parts]) => `${absolute ? '/' : ''}${parts.join('/')}`);
    fc.assert(
      fc.property(path, (input) => {
        let result: string;
        try {
          result = checkWorkspacePath('p', input);
        } catch (error) {
          assert.ok(isAirlockError(error, 'INVALID_JOB'), `unexpected error ${String(error)}`);
          // Refused only for a reason: absolute, "..", NUL, or nothing left to name.
          const real = input.split('/').filter((part) => part !== '' && part !== '.');
          assert.ok(
            input.startsWith('/') || input.includes('\0') || real.includes('..') || real.length === 0,
            `refused ${JSON.stringify(input)} for no reason`,
          );
          return;
        }
        assert.ok(!result.startsWith('/'), result);
        assert.ok(!input.startsWith('/'), `accepted the absolute path ${JSON.stringify(input)}`);
        const parts = result.split('/');
        assert.ok(!parts.includes('..'), result);
        assert.ok(!parts.includes(''), result);
        assert.ok(!parts.includes('.'), result);
        assert.ok(!result.includes('\0'), result);
        // The same components as the input, minus "" and ".".
        assert.deepEqual(
          parts,
          input.split('/').filter((part) => part !== '' && part !== '.'),
        );
      }),
      { numRuns: 2000 },
    );
  });
});
