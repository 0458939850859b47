import { readFile } from 'node:fs/promises';
import { TOKEN_ROLES, type TokenCreateRequest, type TokenInfo, type TokenRole } from '../api/types.js';
import { connect } from '../client/connect.js';
import { shortTime, table } from '../client/format.js';
import { DURATION_FORMS, parseDuration } from '../config/units.js';
import { AirlockError, describeError } from '../errors.js';
import type { CliContext, CommandResult } from './io.js';

/**
 * `airlock token create|list|revoke` (admin tokens). The secret of a new token is printed
 * once, alone on stdout (so `TOKEN=$(airlock token create …)` captures only it); what it
 * is goes to stderr. The server keeps only a hash: a lost secret means a new token.
 */

export interface TokenCreateOptions {
  principal: string;
  role: string;
  project?: string[];
  expires?: string;
  requestKey?: string;
  json?: boolean;
}

function bad(option: string, message: string): never {
  throw new AirlockError('INVALID_OPTION', `--${option}: ${message}`);
}

const PROJECT = /^(\*|[a-z0-9][a-z0-9._-]{0,63})$/;

/**
 * Least privilege: a submitter or viewer token must name its projects; admin and worker
 * tokens act across projects by nature and default to "*".
 */
export function tokenRequest(options: TokenCreateOptions): TokenCreateRequest {
  if (!(TOKEN_ROLES as readonly string[]).includes(options.role))
    bad('role', `must be one of ${TOKEN_ROLES.join(', ')}, got "${options.role}"`);
  const role = options.role as TokenRole;
  const principal = options.principal.trim();
  if (principal === '' || principal.length > 128) bad('principal', 'must be 1–128 characters');
  let projects = options.project ?? [];
  for (const project of projects)
    if (!PROJECT.test(project)) bad('project', `must be a project name or "*", got "${project}"`);
  if (projects.length === 0) {
    if (role === 'submitter' || role === 'viewer')
      bad(
        'project',
        `a ${role} token must name its projects (repeat --project; "*" for all, if you mean it)`,
      );
    projects = ['*'];
  }
  const request: TokenCreateRequest = { principal, role, projects: [...new Set(projects)] };
  if (options.expires !== undefined) {
    const ms = parseDuration(options.expires);
    if (ms === null || ms < 1000)
      bad('expires', `must be ${DURATION_FORMS}, at least 1s, got "${options.expires}"`);
    request.expiresInSeconds = Math.ceil(ms / 1000);
  }
  return request;
}

function tokenTable(tokens: readonly TokenInfo[]): string {
  return table(
    ['ID', 'PRINCIPAL', 'ROLE', 'PROJECTS', 'CREATED', 'EXPIRES', 'REVOKED'],
    tokens.map((token) => [
      token.id,
      token.principal,
      token.role,
      token.projects.join(','),
      shortTime(token.createdAt),
      shortTime(token.expiresAt),
      shortTime(token.revokedAt),
    ]),
  );
}

export async function tokenCreateCommand(
  context: CliContext,
  options: TokenCreateOptions,
): Promise<CommandResult> {
  const request = tokenRequest(options);
  if (options.requestKey !== undefined) {
    try {
      const text = await readFile(options.requestKey, 'utf8');
      if (text.length > 16 * 1024 || text.includes('PRIVATE KEY'))
        throw new Error('not a public key file (give the .pub or the public PEM)');
      request.requestKey = text.trim();
    } catch (error) {
      bad('request-key', `${options.requestKey}: ${describeError(error)}`);
    }
  }
  const api = await connect(context.config.client);
  const created = await api.createToken(request);
  if (options.json === true) {
    context.stdout.write(`${JSON.stringify(created)}\n`);
    return 0;
  }
  context.stderr.write(tokenTable([created.token]));
  context.stderr.write('airlock: the secret below is shown this once; store it now\n');
  context.stdout.write(`${created.secret}\n`);
  return 0;
}

export async function tokenListCommand(
  context: CliContext,
  options: { json?: boolean },
): Promise<CommandResult> {
  const api = await connect(context.config.client);
  const tokens = await api.listTokens();
  context.stdout.write(options.json === true ? `${JSON.stringify({ tokens })}\n` : tokenTable(tokens));
  return 0;
}

export async function tokenRevokeCommand(
  context: CliContext,
  id: string,
  options: { json?: boolean },
): Promise<CommandResult> {
  const api = await connect(context.config.client);
  const token = await api.revokeToken(id);
  context.stdout.write(
    options.json === true
      ? `${JSON.stringify(token)}\n`
      : `${token.id} (${token.principal}) revoked at ${shortTime(token.revokedAt)}\n`,
  );
  return 0;
}
