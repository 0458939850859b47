/**
 * The subset of the OCI runtime specification (config.json, spec 1.0.2) that Airlock writes.
 * Field names follow https://github.com/opencontainers/runtime-spec/blob/main/config.md.
 */

export interface OciSpec {
  ociVersion: string;
  process: OciProcess;
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: OciMount[];
  linux: OciLinux;
}

export interface OciProcess {
  terminal: boolean;
  user: { uid: number; gid: number; additionalGids: number[]; umask?: number };
  args: string[];
  env: string[];
  cwd: string;
  capabilities: {
    bounding: string[];
    effective: string[];
    inheritable: string[];
    permitted: string[];
    ambient: string[];
  };
  rlimits: { type: string; hard: number; soft: number }[];
  noNewPrivileges: boolean;
  oomScoreAdj: number;
}

export interface OciMount {
  destination: string;
  type: string;
  source: string;
  options: string[];
}

export interface OciIdMapping {
  containerID: number;
  hostID: number;
  size: number;
}

export interface OciDeviceRule {
  allow: boolean;
  type?: 'a' | 'c' | 'b';
  major?: number;
  minor?: number;
  access: string;
}

export interface OciResources {
  devices: OciDeviceRule[];
  memory: { limit: number; swap: number; disableOOMKiller?: boolean };
  cpu: { quota: number; period: number };
  pids: { limit: number };
  unified?: Record<string, string>;
}

export interface OciSeccompRule {
  names: string[];
  action: string;
  errnoRet?: number;
  args?: { index: number; value: number; valueTwo?: number; op: string }[];
  comment?: string;
}

export interface OciSeccomp {
  defaultAction: string;
  defaultErrnoRet?: number;
  architectures: string[];
  syscalls: OciSeccompRule[];
}

export interface OciLinux {
  namespaces: { type: string; path?: string }[];
  uidMappings: OciIdMapping[];
  gidMappings: OciIdMapping[];
  cgroupsPath: string;
  resources: OciResources;
  rootfsPropagation: string;
  seccomp: OciSeccomp;
  maskedPaths: string[];
  readonlyPaths: string[];
}
