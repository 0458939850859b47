import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { setFlagsFromString } from 'node:v8';
import type * as CedarWasm from '@cedar-policy/cedar-wasm/nodejs';
import { AirlockError, describeError } from '../errors.js';
import { CEDAR_SCHEMA } from './cedar-text.js';

/**
 * Cedar evaluation (@cedar-policy/cedar-wasm). A policy set is parsed, validated against
 * the schema (strict mode) and pre-parsed once per version — keyed by the SHA-256 of its
 * text — never per request.
 *
 * Fail closed: a policy that errors while evaluating (Cedar skips such a policy and would
 * decide without it) makes the whole decision an error, and so a refusal.
 */

export interface CompiledPolicySet {
  /** SHA-256 (hex) of the policy text: what the audit log records as the policy's hash. */
  readonly hash: string;
  /** The @id of every policy, in the order written. */
  readonly policyIds: readonly string[];
}

export interface EntityRef {
  readonly type: string;
  readonly id: string;
}

export interface CedarEntity {
  readonly uid: EntityRef;
  readonly attrs: Record<string, CedarWasm.CedarValueJson>;
  readonly parents: EntityRef[];
}

export interface CedarRequest {
  readonly principal: EntityRef;
  /** Action id, e.g. "job.submit" (type Airlock::Action). */
  readonly action: string;
  readonly resource: EntityRef;
  readonly context: Record<string, CedarWasm.CedarValueJson>;
  readonly entities: readonly CedarEntity[];
}

export interface CedarDecision {
  readonly allowed: boolean;
  /** The policies that decided: the forbids that matched (deny) or the permits (allow). */
  readonly policies: readonly string[];
}

/** Bounds of a policy document (POLICY_INVALID beyond). */
export const MAX_POLICY_BYTES = 256 * 1024;
const MAX_POLICIES = 1000;
const POLICY_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
/**
 * Cedar's parser recurses on nesting and on long operator chains; deep enough input
 * overflows its stack inside WebAssembly and corrupts the module's memory, after which
 * nothing can be evaluated. Text is refused before Cedar sees it when it nests deeper than
 * this or a policy has more tokens than this (real policies use a few hundred at most).
 */
export const MAX_POLICY_NESTING = 32;
export const MAX_POLICY_TOKENS = 1000;

/**
 * Bounds the text before Cedar parses it: nesting of ( [ { and tokens per policy (a policy
 * ends at a `;` outside brackets). Strings and comments are skipped as Cedar reads them.
 */
export function checkPolicyShape(text: string): void {
  let depth = 0;
  let tokens = 0;
  let policy = 1;
  let i = 0;
  const refuse = (why: string): never => {
    throw new AirlockError('POLICY_INVALID', `policy ${policy} of the set: ${why}`);
  };
  while (i < text.length) {
    const c = text[i] as string;
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      i++;
      continue;
    }
    if (c === '/' && text[i + 1] === '/') {
      const end = text.indexOf('\n', i);
      i = end === -1 ? text.length : end + 1;
      continue;
    }
    tokens++;
    if (tokens > MAX_POLICY_TOKENS)
      refuse(`more than ${MAX_POLICY_TOKENS} tokens: split it into several policies`);
    if (c === '"') {
      i++;
      while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
      i++;
      continue;
    }
    if (c === '(' || c === '[' || c === '{') {
      depth++;
      if (depth > MAX_POLICY_NESTING) refuse(`nested deeper than ${MAX_POLICY_NESTING}`);
    } else if (c === ')' || c === ']' || c === '}') depth = Math.max(0, depth - 1);
    else if (c === ';' && depth === 0) {
      policy++;
      tokens = 0;
    } else if (/[A-Za-z0-9_]/.test(c)) {
      while (i + 1 < text.length && /[A-Za-z0-9_]/.test(text[i + 1] as string)) i++;
    }
    i++;
  }
}

function messages(errors: ReadonlyArray<{ message: string }>): string {
  return errors
    .slice(0, 5)
    .map((error) => error.message)
    .join('; ');
}

/**
 * Loads Cedar's WebAssembly module, compiled by V8's baseline tier (Liftoff) only. By default
 * V8 compiles WebAssembly functions with Liftoff and then again, optimized, when they run
 * hot, keeping both: for Cedar about 50 MiB more resident memory. Optimized code alone
 * (`--no-liftoff`) still took 45 MiB and a second to compile; Liftoff alone takes about
 * 27 MiB and 0.1 s, and a decision costs about 0.15 ms more (0.42 ms instead of 0.27 ms,
 * the whole admission step 0.59 ms, within issue #4's 1 ms), which keeps the idle server
 * under issue #3's 100 MiB. A WebAssembly-only flag: JavaScript is not affected. Measured
 * in docs/performance.md.
 */
let loaded: typeof CedarWasm | undefined;
function cedarWasm(): typeof CedarWasm {
  if (loaded === undefined) {
    setFlagsFromString('--liftoff-only');
    loaded = createRequire(import.meta.url)('@cedar-policy/cedar-wasm/nodejs') as typeof CedarWasm;
  }
  return loaded;
}

export class CedarEngine {
  readonly #compiled = new Map<string, CompiledPolicySet>();
  /** Set when the WebAssembly module failed (a trap, a stack overflow): its memory may be corrupt. */
  #broken: string | null = null;

  /**
   * Calls into Cedar. A trap inside WebAssembly leaves the module unusable: from then on every
   * call is refused (fail closed) until the process is restarted.
   */
  #call<T>(work: () => T): T {
    if (this.#broken !== null)
      throw new AirlockError(
        'POLICY_ERROR',
        `the policy engine failed earlier (${this.#broken}) and refuses every decision: restart the server`,
      );
    try {
      return work();
    } catch (error) {
      if (error instanceof RangeError || (error instanceof Error && error.name === 'RuntimeError')) {
        this.#broken = describeError(error);
        throw new AirlockError(
          'POLICY_ERROR',
          `the policy engine failed: ${this.#broken}; restart the server`,
          {
            cause: error,
          },
        );
      }
      throw error;
    }
  }

  /** Why the engine stopped working, or null (health checks and logs). */
  get broken(): string | null {
    return this.#broken;
  }

  readonly #module: (() => typeof CedarWasm) | undefined;

  /**
   * `module`: the Cedar module to use (tests wrap the real one to make it fail); by default
   * the real one, loaded at the first compile — a server that decides nothing pays nothing.
   */
  constructor(options: { module?: () => typeof CedarWasm } = {}) {
    this.#module = options.module;
  }

  get #cedar(): typeof CedarWasm {
    return (this.#module ?? cedarWasm)();
  }

  /**
   * Parses and validates a policy set (POLICY_INVALID with Cedar's messages when it does not
   * parse or does not validate), and pre-parses it for evaluation. Cached by hash.
   */
  compile(text: string): CompiledPolicySet {
    const cedar = this.#cedar;
    const hash = createHash('sha256').update(text, 'utf8').digest('hex');
    const cached = this.#compiled.get(hash);
    if (cached !== undefined) return cached;
    if (Buffer.byteLength(text, 'utf8') > MAX_POLICY_BYTES)
      throw new AirlockError('POLICY_INVALID', `a policy set may hold at most ${MAX_POLICY_BYTES} bytes`);
    checkPolicyShape(text);
    const parts = this.#call(() => cedar.policySetTextToParts(text));
    if (parts.type !== 'success')
      throw new AirlockError('POLICY_INVALID', `the policy does not parse: ${messages(parts.errors)}`);
    if (parts.policy_templates.length > 0)
      throw new AirlockError('POLICY_INVALID', 'policy templates are not supported: write static policies');
    if (parts.policies.length === 0 || parts.policies.length > MAX_POLICIES)
      throw new AirlockError('POLICY_INVALID', `a policy set holds 1 to ${MAX_POLICIES} policies`);
    // Every policy carries a unique @id: decisions and the audit log name policies by it.
    const byId: Record<string, string> = {};
    for (const policy of parts.policies) {
      const json = this.#call(() => cedar.policyToJson(policy));
      if (json.type !== 'success')
        throw new AirlockError('POLICY_INVALID', `the policy does not parse: ${messages(json.errors)}`);
      const id = json.json.annotations?.id;
      if (id === undefined || !POLICY_ID.test(id))
        throw new AirlockError(
          'POLICY_INVALID',
          `every policy needs an @id("…") annotation of [A-Za-z0-9._:-] (at most 128): ${policy.slice(0, 80)}…`,
        );
      if (id in byId) throw new AirlockError('POLICY_INVALID', `two policies have the @id "${id}"`);
      byId[id] = policy;
    }
    const validation = this.#call(() =>
      cedar.validate({
        schema: CEDAR_SCHEMA,
        policies: { staticPolicies: byId },
        validationSettings: { mode: 'strict' },
      }),
    );
    if (validation.type !== 'success')
      throw new AirlockError(
        'POLICY_INVALID',
        `the policy cannot be validated: ${messages(validation.errors)}`,
      );
    if (validation.validationErrors.length > 0)
      throw new AirlockError(
        'POLICY_INVALID',
        `the policy does not validate against the schema (docs/policy.md): ${validation.validationErrors
          .slice(0, 5)
          .map((error) => `${error.policyId}: ${error.error.message}`)
          .join('; ')}`,
      );
    const preparsed = this.#call(() => cedar.preparsePolicySet(hash, { staticPolicies: byId }));
    if (preparsed.type !== 'success')
      throw new AirlockError('POLICY_INVALID', `the policy does not parse: ${messages(preparsed.errors)}`);
    const compiled: CompiledPolicySet = { hash, policyIds: Object.keys(byId) };
    this.#compiled.set(hash, compiled);
    return compiled;
  }

  /** Decides one request; POLICY_ERROR when Cedar cannot evaluate it (fail closed). */
  decide(policy: CompiledPolicySet, request: CedarRequest): CedarDecision {
    const cedar = this.#cedar;
    let answer: CedarWasm.AuthorizationAnswer;
    try {
      answer = this.#call(() =>
        cedar.statefulIsAuthorized({
          principal: request.principal,
          action: { type: 'Airlock::Action', id: request.action },
          resource: request.resource,
          context: request.context,
          entities: request.entities as CedarWasm.EntityJson[],
          preparsedPolicySetId: policy.hash,
          // The request is not validated against the schema here: it costs a third of the
          // decision, and it guards nothing the rest does not. Policies are validated against
          // the schema when compiled, requests are built by buildRequest() alone, and a
          // context that lacked an attribute a policy reads would make that policy error —
          // which refuses the request below (fail closed).
          validateRequest: false,
        }),
      );
    } catch (error) {
      if (error instanceof AirlockError) throw error;
      throw new AirlockError('POLICY_ERROR', `the policy could not be evaluated: ${describeError(error)}`, {
        cause: error,
      });
    }
    if (answer.type !== 'success')
      throw new AirlockError('POLICY_ERROR', `the policy could not be evaluated: ${messages(answer.errors)}`);
    const { decision, diagnostics } = answer.response;
    if (diagnostics.errors.length > 0)
      throw new AirlockError(
        'POLICY_ERROR',
        `policy evaluation failed (refused, fail closed): ${diagnostics.errors
          .slice(0, 5)
          .map((error) => `${error.policyId}: ${error.error.message}`)
          .join('; ')}`,
      );
    return { allowed: decision === 'allow', policies: [...diagnostics.reason].sort() };
  }
}
