import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { before, describe, test } from 'node:test';
import fc from 'fast-check';
import {
  CompactRange,
  emptyRoot,
  leafHash,
  type NodeSource,
  nodeHash,
  nodesForAppend,
  StoredTree,
  splitPoint,
  type TreeNode,
  verifyConsistency,
  verifyInclusion,
} from '../../src/audit/merkle.js';

/**
 * The audit log's Merkle tree (RFC 6962 / RFC 9162 §2.1), checked three ways:
 * - against published known-answer vectors (transparency-dev/merkle, the Go reference the CT
 *   ecosystem tests against), hard-coded below as hex;
 * - against a naive reference written in this file straight from the RFC text (MTH, PATH,
 *   PROOF/SUBPROOF), using node:crypto and nothing from the module under test;
 * - for every tree size 1…1000, and for storage cost at 70 000 leaves.
 */

// ─── Independent reference, from the text of RFC 9162 §2.1 ─────────────────────────────────────

const HASH_LEN = 32;
const LEAF_PREFIX = Uint8Array.of(0x00);
const NODE_PREFIX = Uint8Array.of(0x01);

function sha256(...parts: readonly Uint8Array[]): Buffer {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part);
  return hash.digest();
}

/** "k is the largest power of two smaller than n (i.e., k < n ≤ 2k)" */
function refK(n: number): number {
  assert.ok(n > 1 && n <= 2 ** 30, `refK(${n})`);
  return 1 << (31 - Math.clz32(n - 1));
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === HASH_LEN && b.length === HASH_LEN && Buffer.from(a).equals(b);
}

/** The reference over a fixed list of entries D; every range is D[start:end]. */
class Reference {
  readonly #entries: readonly Uint8Array[];
  // MTH is a pure function of its range, so caching it changes nothing but the speed.
  readonly #mth = new Map<string, Buffer>();

  constructor(entries: readonly Uint8Array[]) {
    this.#entries = entries;
  }

  entry(index: number): Uint8Array {
    const entry = this.#entries[index];
    assert.ok(entry !== undefined, `no entry ${index}`);
    return entry;
  }

  /** MTH(D[start:end]) */
  mth(start: number, end: number): Buffer {
    const n = end - start;
    assert.ok(n >= 0 && end <= this.#entries.length, `mth(${start}, ${end})`);
    // "The hash of an empty list is the hash of an empty string: MTH({}) = SHA-256()."
    if (n === 0) return sha256();
    // "The hash of a list with one entry: MTH({d(0)}) = SHA-256(0x00 || d(0))."
    if (n === 1) return sha256(LEAF_PREFIX, this.entry(start));
    const key = `${start}:${end}`;
    const known = this.#mth.get(key);
    if (known !== undefined) return known;
    // "MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))"
    const k = refK(n);
    const hash = sha256(NODE_PREFIX, this.mth(start, start + k), this.mth(start + k, end));
    this.#mth.set(key, hash);
    return hash;
  }

  root(n: number): Buffer {
    return this.mth(0, n);
  }

  /** PATH(m, D[n]) with D[n] = D[0:n]. */
  path(m: number, n: number): Buffer[] {
    assert.ok(m >= 0 && m < n, `path(${m}, ${n})`);
    return this.#path(m, 0, n);
  }

  #path(m: number, start: number, end: number): Buffer[] {
    const n = end - start;
    // "The path for the single leaf in a tree with a one-element input list D[1] = {d(0)} is empty"
    if (n === 1) return [];
    const k = refK(n);
    // "for m < k, PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])"
    if (m < k) return [...this.#path(m, start, start + k), this.mth(start + k, end)];
    // "for m >= k, PATH(m, D[n]) = PATH(m - k, D[k:n]) : MTH(D[0:k])"
    return [...this.#path(m - k, start + k, end), this.mth(start, start + k)];
  }

  /** PROOF(m, D[n]) = SUBPROOF(m, D[n], true), for 0 < m < n (and, by convention here, [] otherwise). */
  proof(m: number, n: number): Buffer[] {
    assert.ok(m >= 0 && m <= n, `proof(${m}, ${n})`);
    if (m === 0 || m === n) return [];
    return this.#subproof(m, 0, n, true);
  }

  #subproof(m: number, start: number, end: number, b: boolean): Buffer[] {
    const n = end - start;
    // "SUBPROOF(m, D[m], true) = {}" and "SUBPROOF(m, D[m], false) = {MTH(D[m])}"
    if (m === n) return b ? [] : [this.mth(start, end)];
    const k = refK(n);
    // "If m <= k, … SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])"
    if (m <= k) return [...this.#subproof(m, start, start + k, b), this.mth(start + k, end)];
    // "If m > k, … SUBPROOF(m, D[n], b) = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])"
    return [...this.#subproof(m - k, start + k, end, false), this.mth(start, start + k)];
  }
}

/**
 * An inclusion verifier read off the definition of PATH rather than the bit-twiddling algorithm
 * of §2.1.3.2: undo the recursion, taking proof elements from the end (the last element is the
 * sibling at the top), and require that the proof is used up exactly.
 */
function refVerifyInclusion(
  m: number,
  n: number,
  leaf: Uint8Array,
  proof: readonly Uint8Array[],
  root: Uint8Array,
): boolean {
  if (!Number.isSafeInteger(m) || !Number.isSafeInteger(n) || m < 0 || m >= n) return false;
  if (proof.some((p) => p.length !== HASH_LEN)) return false;
  let next = proof.length;
  const walk = (m: number, n: number): Uint8Array | null => {
    if (n === 1) return leaf;
    if (next === 0) return null;
    next -= 1;
    const sibling = proof[next] as Uint8Array;
    const k = refK(n);
    if (m < k) {
      const left = walk(m, k);
      return left === null ? null : sha256(NODE_PREFIX, left, sibling);
    }
    const right = walk(m - k, n - k);
    return right === null ? null : sha256(NODE_PREFIX, sibling, right);
  };
  const computed = walk(m, n);
  return computed !== null && next === 0 && same(computed, root);
}

/**
 * A consistency verifier read off the definition of SUBPROOF: rebuild MTH(D[0:m]) and
 * MTH(D[0:n]) from the proof (the old root stands in for the SUBPROOF(m, D[m], true) case).
 * Like the module under test it takes consistency from the empty tree (size 0) to need the
 * empty tree's root and an empty proof.
 */
function refVerifyConsistency(
  m: number,
  n: number,
  proof: readonly Uint8Array[],
  oldRoot: Uint8Array,
  newRoot: Uint8Array,
): boolean {
  if (!Number.isSafeInteger(m) || !Number.isSafeInteger(n) || m < 0 || m > n) return false;
  if (proof.some((p) => p.length !== HASH_LEN)) return false;
  if (m === n) return proof.length === 0 && same(oldRoot, newRoot);
  if (m === 0) return proof.length === 0 && same(oldRoot, sha256());
  let next = proof.length;
  const take = (): Uint8Array | null => {
    if (next === 0) return null;
    next -= 1;
    return proof[next] as Uint8Array;
  };
  /** [MTH of the old part, MTH of the whole] of a subtree holding m old leaves of n. */
  const sub = (m: number, n: number, b: boolean): [Uint8Array, Uint8Array] | null => {
    if (m === n) {
      if (b) return [oldRoot, oldRoot];
      const whole = take();
      return whole === null ? null : [whole, whole];
    }
    const sibling = take();
    if (sibling === null) return null;
    const k = refK(n);
    if (m <= k) {
      const left = sub(m, k, b);
      return left === null ? null : [left[0], sha256(NODE_PREFIX, left[1], sibling)];
    }
    const right = sub(m - k, n - k, false);
    if (right === null) return null;
    return [sha256(NODE_PREFIX, sibling, right[0]), sha256(NODE_PREFIX, sibling, right[1])];
  };
  const computed = sub(m, n, true);
  return computed !== null && next === 0 && same(computed[0], oldRoot) && same(computed[1], newRoot);
}

// ─── Published known-answer vectors ─────────────────────────────────────────────────────────────
// github.com/transparency-dev/merkle (Apache-2.0), the RFC 6962 test data of the CT projects:
//   testonly/constants.go   LeafInputs, NodeHashes, RootHashes, EmptyRootHash
//   proof/verify_test.go    inclusionProofs, consistencyProofs (leaf numbers there are 1-based)
//   proof/proof_test.go     TestInclusion, TestConsistency: which nodes each proof holds

function hex(text: string, length = HASH_LEN): Buffer {
  const bytes = Buffer.from(text, 'hex');
  assert.equal(bytes.length, length, `bad vector ${text}`);
  return bytes;
}

const LEAF_INPUTS: readonly Buffer[] = [
  ['', 0],
  ['00', 1],
  ['10', 1],
  ['2021', 2],
  ['3031', 2],
  ['40414243', 4],
  ['5051525354555657', 8],
  ['606162636465666768696a6b6c6d6e6f', 16],
].map(([text, length]) => hex(text as string, length as number));

/** NodeHashes()[level][index]: every perfect subtree of the 8-leaf tree. */
const NODE_HASHES: readonly (readonly Buffer[])[] = [
  [
    '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
    '96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7',
    '0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7',
    '07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7',
    'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
    '4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658',
    'b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f',
    '46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1',
  ],
  [
    'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
    '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
    '0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a',
    'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0',
  ],
  [
    'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
    '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4',
  ],
  ['5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328'],
].map((level) => level.map((text) => hex(text)));

/** RootHashes()[size], size 0…8. */
const ROOT_HASHES: readonly Buffer[] = [
  'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
  '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
  'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
  'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
  'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
  '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
  '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
  'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
  '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
].map((text) => hex(text));

interface InclusionVector {
  readonly index: number;
  readonly size: number;
  readonly proof: readonly Buffer[];
}

interface ConsistencyVector {
  readonly oldSize: number;
  readonly newSize: number;
  readonly proof: readonly Buffer[];
}

/** verify_test.go inclusionProofs, with its 1-based leaf numbers made 0-based indices. */
const PUBLISHED_INCLUSION: readonly InclusionVector[] = [
  { index: 0, size: 1, proof: [] },
  {
    index: 0,
    size: 8,
    proof: [
      hex('96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7'),
      hex('5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e'),
      hex('6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4'),
    ],
  },
  {
    index: 5,
    size: 8,
    proof: [
      hex('bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b'),
      hex('ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0'),
      hex('d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7'),
    ],
  },
  { index: 2, size: 3, proof: [hex('fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125')] },
  {
    index: 1,
    size: 5,
    proof: [
      hex('6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d'),
      hex('5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e'),
      hex('bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b'),
    ],
  },
];

/** verify_test.go consistencyProofs. */
const PUBLISHED_CONSISTENCY: readonly ConsistencyVector[] = [
  { oldSize: 1, newSize: 1, proof: [] },
  {
    oldSize: 1,
    newSize: 8,
    proof: [
      hex('96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7'),
      hex('5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e'),
      hex('6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4'),
    ],
  },
  {
    oldSize: 6,
    newSize: 8,
    proof: [
      hex('0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a'),
      hex('ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0'),
      hex('d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7'),
    ],
  },
  {
    oldSize: 2,
    newSize: 5,
    proof: [
      hex('5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e'),
      hex('bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b'),
    ],
  },
  {
    oldSize: 6,
    newSize: 7,
    proof: [
      hex('0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a'),
      hex('b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f'),
      hex('d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7'),
    ],
  },
];

function published(level: number, index: number): Buffer {
  const hash = NODE_HASHES[level]?.[index];
  assert.ok(hash !== undefined, `no published node (${level}, ${index})`);
  return hash;
}

/**
 * proof_test.go names the nodes of the 7/8-leaf tree: leaves a b c d e f j (d0…d6), g h i over
 * pairs, k over a…d, and l over e…h (size 8) or e f j (size 7, "l=hash(i,j)", a node no store
 * holds, rehashed from i and j).
 */
const named = {
  a: published(0, 0),
  b: published(0, 1),
  c: published(0, 2),
  d: published(0, 3),
  e: published(0, 4),
  f: published(0, 5),
  j: published(0, 6),
  d7: published(0, 7),
  g: published(1, 0),
  h: published(1, 1),
  i: published(1, 2),
  k: published(2, 0),
  l8: published(2, 1),
  l7: sha256(NODE_PREFIX, published(1, 2), published(0, 6)),
};
type Name = keyof typeof named;
const nodesNamed = (...names: Name[]): Buffer[] => names.map((name) => named[name]);

/** proof_test.go TestInclusion (size, index → nodes). */
const PUBLISHED_INCLUSION_SHAPES: readonly InclusionVector[] = [
  { size: 1, index: 0, proof: [] },
  { size: 2, index: 0, proof: nodesNamed('b') },
  { size: 2, index: 1, proof: nodesNamed('a') },
  { size: 3, index: 1, proof: nodesNamed('a', 'c') },
  { size: 7, index: 0, proof: nodesNamed('b', 'h', 'l7') },
  { size: 7, index: 1, proof: nodesNamed('a', 'h', 'l7') },
  { size: 7, index: 2, proof: nodesNamed('d', 'g', 'l7') },
  { size: 7, index: 3, proof: nodesNamed('c', 'g', 'l7') },
  { size: 7, index: 4, proof: nodesNamed('f', 'j', 'k') },
  { size: 7, index: 5, proof: nodesNamed('e', 'j', 'k') },
  { size: 7, index: 6, proof: nodesNamed('i', 'k') },
  { size: 4, index: 2, proof: nodesNamed('d', 'g') },
  { size: 5, index: 3, proof: nodesNamed('c', 'g', 'e') },
  { size: 6, index: 3, proof: nodesNamed('c', 'g', 'i') },
  { size: 6, index: 4, proof: nodesNamed('f', 'k') },
];

/** proof_test.go TestConsistency (size1, size2 → nodes). */
const PUBLISHED_CONSISTENCY_SHAPES: readonly ConsistencyVector[] = [
  { oldSize: 1, newSize: 2, proof: nodesNamed('b') },
  { oldSize: 1, newSize: 4, proof: nodesNamed('b', 'h') },
  { oldSize: 1, newSize: 6, proof: nodesNamed('b', 'h', 'i') },
  { oldSize: 2, newSize: 3, proof: nodesNamed('c') },
  { oldSize: 2, newSize: 8, proof: nodesNamed('h', 'l8') },
  { oldSize: 3, newSize: 7, proof: nodesNamed('c', 'd', 'g', 'l7') },
  { oldSize: 4, newSize: 7, proof: nodesNamed('l7') },
  { oldSize: 5, newSize: 7, proof: nodesNamed('e', 'f', 'j', 'k') },
  { oldSize: 6, newSize: 7, proof: nodesNamed('i', 'j', 'k') },
  { oldSize: 7, newSize: 8, proof: nodesNamed('j', 'd7', 'i', 'k') },
  { oldSize: 2, newSize: 4, proof: nodesNamed('h') },
  { oldSize: 3, newSize: 5, proof: nodesNamed('c', 'd', 'g', 'e') },
  { oldSize: 3, newSize: 6, proof: nodesNamed('c', 'd', 'g', 'i') },
  { oldSize: 4, newSize: 6, proof: nodesNamed('i') },
  { oldSize: 1, newSize: 7, proof: nodesNamed('b', 'h', 'l7') },
  ...[1, 2, 3, 4, 5, 7, 8].map((size) => ({ oldSize: size, newSize: size, proof: [] })),
];

// ─── Helpers: a store as the real one fills it ──────────────────────────────────────────────────

/** A Map of stored nodes, written once each, filled by nodesForAppend; counts reads. */
class MemoryNodes implements NodeSource {
  readonly stored = new Map<string, Buffer>();
  size = 0;
  reads = 0;

  node(level: number, index: number): Buffer | null {
    this.reads += 1;
    return this.stored.get(`${level}:${index}`) ?? null;
  }

  /** Appends one entry the way the audit store does; returns the nodes written. */
  async append(entry: Uint8Array): Promise<TreeNode[]> {
    const nodes = await nodesForAppend(this, this.size, leafHash(entry));
    for (const node of nodes) {
      const key = `${node.level}:${node.index}`;
      assert.ok(!this.stored.has(key), `node ${key} written twice`);
      this.stored.set(key, node.hash);
    }
    this.size += 1;
    return nodes;
  }

  /** The store as it was at `size` leaves: nodes covering later leaves were not written yet. */
  asOf(size: number): NodeSource {
    return { node: (level, index) => ((index + 1) * 2 ** level <= size ? this.node(level, index) : null) };
  }
}

/** Deterministic pseudo-random numbers (mulberry32), so a failure can be replayed. */
function seeded(seed: number): (below: number) => number {
  let state = seed >>> 0;
  return (below) => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * below);
  };
}

function trailingZeros(n: number): number {
  let zeros = 0;
  while (n % 2 === 0) {
    n /= 2;
    zeros += 1;
  }
  return zeros;
}

function popcount(n: number): number {
  let ones = 0;
  for (let rest = n; rest > 0; rest = Math.floor(rest / 2)) ones += rest % 2;
  return ones;
}

function hexes(list: readonly Uint8Array[]): string[] {
  return list.map((item) => Buffer.from(item).toString('hex'));
}

function flipBit(bytes: Uint8Array, byte: number, mask: number): Buffer {
  const copy = Buffer.from(bytes);
  copy[byte] = (copy[byte] as number) ^ mask;
  return copy;
}

function withElement(proof: readonly Buffer[], at: number, element: Buffer): Buffer[] {
  const copy = [...proof];
  copy[at] = element;
  return copy;
}

const entryFor = (index: number): Buffer => Buffer.from(`audit entry ${index}`);
const SOME_HASH = hex('abacaba000000000000000000000000000000000000000000060061e00123456');

/** Proofs that no verifier may accept, whatever the tree: tampered, cut, padded. */
function brokenProofs(proof: readonly Buffer[], root: Buffer): [string, Buffer[]][] {
  const broken: [string, Buffer[]][] = [
    ['trailing root', [...proof, root]],
    ['trailing zero hash', [...proof, Buffer.alloc(HASH_LEN)]],
    ['trailing empty element', [...proof, Buffer.alloc(0)]],
    ['preceding root', [root, ...proof]],
    ['preceding empty element', [Buffer.alloc(0), ...proof]],
  ];
  proof.forEach((element, at) => {
    broken.push([`proof[${at}] bit 3 of byte 0 flipped`, withElement(proof, at, flipBit(element, 0, 8))]);
    broken.push([`proof[${at}] bit 0 of byte 31 flipped`, withElement(proof, at, flipBit(element, 31, 1))]);
    broken.push([`proof[${at}] cut to 31 bytes`, withElement(proof, at, element.subarray(0, 31))]);
    broken.push([`proof[${at}] dropped`, proof.filter((_, other) => other !== at)]);
    broken.push([`proof[${at}] repeated`, [...proof.slice(0, at + 1), ...proof.slice(at)]]);
  });
  if (proof.length > 1)
    broken.push(['inserted component', [proof[0] as Buffer, SOME_HASH, ...proof.slice(1)]]);
  if (proof.length > 1) broken.push(['reversed', [...proof].reverse()]);
  return broken;
}

/** Asserts every refusal an inclusion proof must meet. */
function checkInclusionRefusals(
  index: number,
  size: number,
  leaf: Buffer,
  proof: Buffer[],
  root: Buffer,
): void {
  const label = `inclusion of ${index} in ${size}`;
  assert.ok(verifyInclusion(index, size, leaf, proof, root), `${label}: the good proof`);
  for (const [what, bad] of brokenProofs(proof, root)) {
    assert.ok(!verifyInclusion(index, size, leaf, bad, root), `${label}: ${what} accepted`);
  }
  const wrongLeaves: [string, Buffer][] = [
    ['leaf bit flipped', flipBit(leaf, 0, 1)],
    ['leaf last bit flipped', flipBit(leaf, 31, 0x80)],
    ['entry instead of its hash', Buffer.from('WrongLeaf')],
    ['root as leaf', root],
  ];
  for (const [what, wrong] of wrongLeaves) {
    if (size === 1 && what === 'root as leaf') continue; // in a 1-leaf tree the root is the leaf hash
    assert.ok(!verifyInclusion(index, size, wrong, proof, root), `${label}: ${what} accepted`);
  }
  for (const [what, wrong] of [
    ['root bit flipped', flipBit(root, 7, 0x10)],
    ['empty tree root', sha256()],
    ['some other hash', SOME_HASH],
    ['short root', root.subarray(1)],
  ] as [string, Buffer][]) {
    assert.ok(!verifyInclusion(index, size, leaf, proof, wrong), `${label}: ${what} accepted`);
  }
  for (const [i, n] of [
    [size, size],
    [size + 1, size],
    [-1, size],
    [index, 0],
    [index + 0.5, size],
    [index, size + 0.5],
    [index, Number.NaN],
    [Number.POSITIVE_INFINITY, size],
    [index, 2 ** 53],
  ]) {
    assert.ok(
      !verifyInclusion(i as number, n as number, leaf, proof, root),
      `${label}: (${i}, ${n}) accepted`,
    );
  }
  // A wrong index or size: the verifier must agree with the PATH definition exactly. (Where the
  // proof has the same shape, e.g. index 0 of size 3 and of size 4, both verify, since a root does
  // not commit to its size; a signed tree head does.)
  for (const [i, n] of [
    [index - 1, size],
    [index + 1, size],
    [index ^ 1, size],
    [index ^ 2, size],
    [index, size - 1],
    [index, size + 1],
    [index, size * 2],
    [index, Math.floor(size / 2)],
  ] as [number, number][]) {
    assert.equal(
      verifyInclusion(i, n, leaf, proof, root),
      refVerifyInclusion(i, n, leaf, proof, root),
      `${label}: verifying as (${i}, ${n}) disagrees with the reference`,
    );
  }
}

function checkConsistencyRefusals(
  oldSize: number,
  newSize: number,
  proof: Buffer[],
  oldRoot: Buffer,
  newRoot: Buffer,
): void {
  const label = `consistency ${oldSize} → ${newSize}`;
  assert.ok(verifyConsistency(oldSize, newSize, proof, oldRoot, newRoot), `${label}: the good proof`);
  for (const [what, bad] of [
    ...brokenProofs(proof, oldRoot),
    ['preceding new root', [newRoot, ...proof]],
    ['trailing new root', [...proof, newRoot]],
    ['empty proof', []],
  ] as [string, Buffer[]][]) {
    assert.ok(!verifyConsistency(oldSize, newSize, bad, oldRoot, newRoot), `${label}: ${what} accepted`);
  }
  for (const [what, o, n] of [
    ['old root bit flipped', flipBit(oldRoot, 0, 1), newRoot],
    ['new root bit flipped', oldRoot, flipBit(newRoot, 31, 4)],
    ['swapped roots', newRoot, oldRoot],
    ['old root for both', oldRoot, oldRoot],
    ['new root for both', newRoot, newRoot],
    ['wrong old root', SOME_HASH, newRoot],
    ['wrong new root', oldRoot, SOME_HASH],
    ['short old root', oldRoot.subarray(1), newRoot],
  ] as [string, Buffer, Buffer][]) {
    assert.ok(!verifyConsistency(oldSize, newSize, proof, o, n), `${label}: ${what} accepted`);
  }
  for (const [m, n] of [
    [newSize + 1, newSize],
    [newSize, oldSize],
    [-1, newSize],
    [0, newSize],
    [oldSize, newSize + 0.5],
    [oldSize + 0.5, newSize],
    [oldSize, Number.NaN],
    [oldSize, 2 ** 53],
  ]) {
    assert.ok(
      !verifyConsistency(m as number, n as number, proof, oldRoot, newRoot),
      `${label}: (${m}, ${n})`,
    );
  }
  for (const [m, n] of [
    [oldSize - 1, newSize],
    [oldSize + 1, newSize],
    [oldSize ^ 2, newSize],
    [oldSize, newSize - 1],
    [oldSize, newSize + 1],
    [oldSize, newSize * 2],
    [oldSize, Math.floor(newSize / 2)],
    [oldSize - 1, newSize - 1],
    [oldSize + 1, newSize + 1],
  ] as [number, number][]) {
    assert.equal(
      verifyConsistency(m, n, proof, oldRoot, newRoot),
      refVerifyConsistency(m, n, proof, oldRoot, newRoot),
      `${label}: verifying as (${m}, ${n}) disagrees with the reference`,
    );
  }
}

// ─── Known answers ──────────────────────────────────────────────────────────────────────────────

describe('merkle: published known answers (transparency-dev/merkle)', () => {
  const reference = new Reference(LEAF_INPUTS);
  const store = new MemoryNodes();
  const compact = new CompactRange();
  before(async () => {
    for (const entry of LEAF_INPUTS) {
      await store.append(entry);
      compact.push(leafHash(entry));
    }
  });

  test('the reference itself reproduces every published node and root', () => {
    NODE_HASHES.forEach((level, l) => {
      level.forEach((hash, index) => {
        assert.equal(
          reference.mth(index * 2 ** l, (index + 1) * 2 ** l).toString('hex'),
          hash.toString('hex'),
        );
      });
    });
    ROOT_HASHES.forEach((root, size) => {
      assert.equal(reference.root(size).toString('hex'), root.toString('hex'), `reference root of ${size}`);
    });
    for (const { index, size, proof } of [...PUBLISHED_INCLUSION, ...PUBLISHED_INCLUSION_SHAPES]) {
      assert.deepEqual(hexes(reference.path(index, size)), hexes(proof), `reference PATH(${index}, ${size})`);
    }
    for (const { oldSize, newSize, proof } of [...PUBLISHED_CONSISTENCY, ...PUBLISHED_CONSISTENCY_SHAPES]) {
      assert.deepEqual(
        hexes(reference.proof(oldSize, newSize)),
        hexes(proof),
        `PROOF(${oldSize}, ${newSize})`,
      );
    }
  });

  test('leafHash, nodeHash and emptyRoot give the published hashes', () => {
    LEAF_INPUTS.forEach((entry, index) => {
      assert.equal(leafHash(entry).toString('hex'), published(0, index).toString('hex'), `leaf ${index}`);
    });
    for (let level = 1; level < NODE_HASHES.length; level += 1) {
      (NODE_HASHES[level] as Buffer[]).forEach((hash, index) => {
        const left = published(level - 1, 2 * index);
        const right = published(level - 1, 2 * index + 1);
        assert.equal(
          nodeHash(left, right).toString('hex'),
          hash.toString('hex'),
          `node (${level}, ${index})`,
        );
      });
    }
    assert.equal(emptyRoot().toString('hex'), (ROOT_HASHES[0] as Buffer).toString('hex'));
    // Domain separation: a leaf is not hashed like a node, nor a node like a leaf.
    const [a, b] = [published(0, 0), published(0, 1)];
    assert.notEqual(leafHash(Buffer.concat([a, b])).toString('hex'), nodeHash(a, b).toString('hex'));
  });

  test('splitPoint is the largest power of two below n, and refuses n < 2', () => {
    const expected: [number, number][] = [
      [2, 1],
      [3, 2],
      [4, 2],
      [5, 4],
      [7, 4],
      [8, 4],
      [9, 8],
      [1000, 512],
      [1024, 512],
      [1025, 1024],
      [2 ** 40 + 1, 2 ** 40],
      [2 ** 53 - 1, 2 ** 52],
    ];
    for (const [n, k] of expected) assert.equal(splitPoint(n), k, `splitPoint(${n})`);
    for (let n = 2; n <= 4096; n += 1) assert.equal(splitPoint(n), refK(n), `splitPoint(${n})`);
    for (const bad of [1, 0, -4, 2.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53]) {
      assert.throws(() => splitPoint(bad), RangeError, `splitPoint(${bad})`);
    }
  });

  test('appending the 8 leaves stores exactly the published perfect-subtree nodes', () => {
    const expected = new Map<string, string>();
    NODE_HASHES.forEach((level, l) => {
      level.forEach((hash, index) => {
        expected.set(`${l}:${index}`, hash.toString('hex'));
      });
    });
    const stored = new Map([...store.stored].map(([key, hash]) => [key, hash.toString('hex')]));
    assert.deepEqual(stored, expected);
  });

  test('StoredTree and CompactRange give the published root of every size 0…8', async () => {
    for (let size = 0; size <= 8; size += 1) {
      const tree = new StoredTree(store.asOf(size));
      const root = ROOT_HASHES[size] as Buffer;
      assert.equal((await tree.root(size)).toString('hex'), root.toString('hex'), `root of ${size}`);
      // And the same root read off the full store: later nodes do not disturb an old size.
      assert.equal((await new StoredTree(store).root(size)).toString('hex'), root.toString('hex'));
    }
    assert.equal(compact.size, 8);
    assert.equal(compact.root().toString('hex'), (ROOT_HASHES[8] as Buffer).toString('hex'));
    const growing = new CompactRange();
    assert.equal(growing.root().toString('hex'), (ROOT_HASHES[0] as Buffer).toString('hex'));
    LEAF_INPUTS.forEach((entry, index) => {
      growing.push(leafHash(entry));
      assert.equal(growing.root().toString('hex'), (ROOT_HASHES[index + 1] as Buffer).toString('hex'));
    });
  });

  test('inclusion proofs are the published ones and verify', async () => {
    const tree = new StoredTree(store);
    for (const { index, size, proof } of [...PUBLISHED_INCLUSION, ...PUBLISHED_INCLUSION_SHAPES]) {
      const got = await tree.inclusionProof(index, size);
      assert.deepEqual(hexes(got), hexes(proof), `inclusionProof(${index}, ${size})`);
      const root = ROOT_HASHES[size] as Buffer;
      assert.ok(verifyInclusion(index, size, published(0, index), proof, root), `verify (${index}, ${size})`);
    }
  });

  test('consistency proofs are the published ones and verify', async () => {
    const tree = new StoredTree(store);
    for (const { oldSize, newSize, proof } of [...PUBLISHED_CONSISTENCY, ...PUBLISHED_CONSISTENCY_SHAPES]) {
      const got = await tree.consistencyProof(oldSize, newSize);
      assert.deepEqual(hexes(got), hexes(proof), `consistencyProof(${oldSize}, ${newSize})`);
      const [oldRoot, newRoot] = [ROOT_HASHES[oldSize] as Buffer, ROOT_HASHES[newSize] as Buffer];
      assert.ok(
        verifyConsistency(oldSize, newSize, proof, oldRoot, newRoot),
        `verify ${oldSize} → ${newSize}`,
      );
    }
  });

  test('the published proofs, corrupted as verify_test.go corrupts them, are refused', () => {
    for (const { index, size, proof } of PUBLISHED_INCLUSION) {
      const [leaf, root] = [published(0, index), ROOT_HASHES[size] as Buffer];
      // corruptInclusionProof: wrong index, wrong tree height, wrong leaf or root, garbage.
      for (const [i, n] of [
        [index - 1, size],
        [index + 1, size],
        [index ^ 2, size],
        [index, size * 2],
        [index, Math.floor(size / 2)],
      ] as [number, number][]) {
        assert.ok(!verifyInclusion(i, n, leaf, proof, root), `(${index}, ${size}) verified as (${i}, ${n})`);
      }
      checkInclusionRefusals(index, size, leaf, [...proof], root);
    }
    for (const { oldSize, newSize, proof } of PUBLISHED_CONSISTENCY) {
      if (proof.length === 0) continue;
      const [oldRoot, newRoot] = [ROOT_HASHES[oldSize] as Buffer, ROOT_HASHES[newSize] as Buffer];
      // corruptConsistencyProof: a consistency proof for a wrong size is refused.
      for (const [m, n] of [
        [oldSize - 1, newSize],
        [oldSize + 1, newSize],
        [oldSize ^ 2, newSize],
        [oldSize, newSize * 2],
        [oldSize, Math.floor(newSize / 2)],
      ] as [number, number][]) {
        assert.ok(
          !verifyConsistency(m, n, proof, oldRoot, newRoot),
          `${oldSize} → ${newSize} verified as ${m} → ${n}`,
        );
      }
      checkConsistencyRefusals(oldSize, newSize, [...proof], oldRoot, newRoot);
    }
  });
});

// ─── Every size 1…1000 ──────────────────────────────────────────────────────────────────────────

describe('merkle: every tree size from 1 to 1000, against the reference', () => {
  const LEAVES = 1000;
  const ALL_UP_TO = 64;
  const entries = Array.from({ length: LEAVES }, (_, index) => entryFor(index));
  const reference = new Reference(entries);
  const store = new MemoryNodes();
  const written: TreeNode[][] = [];
  const madeByCompact: TreeNode[][] = [];
  const compactRoots: Buffer[] = [];

  before(async () => {
    const compact = new CompactRange();
    for (const entry of entries) {
      written.push(await store.append(entry));
      madeByCompact.push(compact.push(leafHash(entry)));
      compactRoots.push(compact.root());
    }
  });

  /** Leaf indices checked at a size: all of them up to 64, else the ends, the split and 2 random. */
  function indicesAt(size: number, random: (below: number) => number): number[] {
    if (size <= ALL_UP_TO) return Array.from({ length: size }, (_, i) => i);
    const picks = [0, 1, size - 2, size - 1, size >> 1, refK(size), refK(size) - 1];
    for (let n = 0; n < 2; n += 1) picks.push(random(size));
    return [...new Set(picks)].filter((i) => i < size);
  }

  /** Old sizes checked against a size: all of 0…size up to 64, else edges, the split and 2 random. */
  function oldSizesAt(size: number, random: (below: number) => number): number[] {
    if (size <= ALL_UP_TO) return Array.from({ length: size + 1 }, (_, m) => m);
    const picks = [0, 1, 2, size - 1, size, refK(size), refK(size) + 1, refK(size) - 1];
    for (let n = 0; n < 2; n += 1) picks.push(1 + random(size - 1));
    return [...new Set(picks)];
  }

  test('each append writes the leaf and the perfect subtrees it completes, as CompactRange does', () => {
    let total = 0;
    written.forEach((nodes, index) => {
      const size = index + 1;
      // Leaf `index` completes the subtrees of 2^L leaves ending at `size`, for 2^L dividing size.
      const expected = Array.from({ length: trailingZeros(size) + 1 }, (_, level) => ({
        level,
        index: size / 2 ** level - 1,
        hash: reference.mth(size - 2 ** level, size).toString('hex'),
      }));
      const show = (list: TreeNode[]) =>
        list.map(({ level, index, hash }) => ({ level, index, hash: hash.toString('hex') }));
      assert.deepEqual(show(nodes), expected, `nodes written by append ${index}`);
      assert.deepEqual(show(madeByCompact[index] as TreeNode[]), expected, `CompactRange push ${index}`);
      assert.ok(nodes.length <= Math.log2(size) + 1, `append ${index} wrote ${nodes.length} nodes`);
      total += nodes.length;
    });
    assert.equal(store.stored.size, total);
    assert.equal(total, 2 * LEAVES - popcount(LEAVES));
  });

  test('StoredTree.root and CompactRange.root equal MTH for every size', async () => {
    assert.equal((await new StoredTree(store.asOf(0)).root(0)).toString('hex'), sha256().toString('hex'));
    for (let size = 1; size <= LEAVES; size += 1) {
      const expected = reference.root(size).toString('hex');
      const tree = new StoredTree(store.asOf(size));
      assert.equal((await tree.root(size)).toString('hex'), expected, `StoredTree root of ${size}`);
      assert.equal(
        (compactRoots[size - 1] as Buffer).toString('hex'),
        expected,
        `CompactRange root of ${size}`,
      );
    }
  });

  test('inclusion proofs equal PATH and verify (every leaf up to 64, sampled leaves up to 1000)', async () => {
    const random = seeded(6962);
    let checked = 0;
    for (let size = 1; size <= LEAVES; size += 1) {
      const tree = new StoredTree(store.asOf(size));
      const root = reference.root(size);
      for (const index of indicesAt(size, random)) {
        const proof = await tree.inclusionProof(index, size);
        assert.deepEqual(
          hexes(proof),
          hexes(reference.path(index, size)),
          `inclusionProof(${index}, ${size})`,
        );
        const leaf = leafHash(reference.entry(index));
        assert.ok(verifyInclusion(index, size, leaf, proof, root), `verifyInclusion(${index}, ${size})`);
        assert.ok(refVerifyInclusion(index, size, leaf, proof, root));
        checked += 1;
      }
    }
    assert.ok(checked > (64 * 65) / 2 + 936 * 6, `only ${checked} proofs checked`);
  });

  test('consistency proofs equal PROOF and verify (every pair up to 64, sampled pairs up to 1000)', async () => {
    const random = seeded(9162);
    let checked = 0;
    for (let size = 1; size <= LEAVES; size += 1) {
      const tree = new StoredTree(store.asOf(size));
      const newRoot = reference.root(size);
      for (const oldSize of oldSizesAt(size, random)) {
        const proof = await tree.consistencyProof(oldSize, size);
        const expected = reference.proof(oldSize, size);
        assert.deepEqual(hexes(proof), hexes(expected), `consistencyProof(${oldSize}, ${size})`);
        const oldRoot = reference.root(oldSize);
        assert.ok(verifyConsistency(oldSize, size, proof, oldRoot, newRoot), `verify ${oldSize} → ${size}`);
        assert.ok(refVerifyConsistency(oldSize, size, proof, oldRoot, newRoot));
        checked += 1;
      }
    }
    assert.ok(checked > (64 * 65) / 2 + 936 * 6, `only ${checked} proofs checked`);
  });

  test('every tampered, cut, padded or misplaced inclusion proof up to size 32 is refused', async () => {
    const tree = new StoredTree(store);
    for (let size = 1; size <= 32; size += 1) {
      const root = reference.root(size);
      for (let index = 0; index < size; index += 1) {
        const proof = await tree.inclusionProof(index, size);
        checkInclusionRefusals(index, size, leafHash(reference.entry(index)), proof, root);
      }
    }
  });

  test('every tampered, cut, padded or wrong-size consistency proof up to size 32 is refused', async () => {
    const tree = new StoredTree(store);
    for (let size = 2; size <= 32; size += 1) {
      for (let oldSize = 1; oldSize < size; oldSize += 1) {
        const proof = await tree.consistencyProof(oldSize, size);
        checkConsistencyRefusals(oldSize, size, proof, reference.root(oldSize), reference.root(size));
      }
    }
  });

  test('a consistency proof for a wrong size is refused, unless the RFC shape is the same', async (t) => {
    // The right proof with a wrong old size (±1) is always refused. With a wrong new size (±1)
    // it is refused unless the PATH / PROOF definitions combine the same hashes the same way for
    // that size too (e.g. 2 → 3 and 2 → 4 are both [MTH(D[2:n])]): a root does not commit to its
    // size, a signed tree head does. There the verifier must agree with the definition exactly.
    const tree = new StoredTree(store);
    let refused = 0;
    let sameShape = 0;
    for (let size = 2; size <= 64; size += 1) {
      for (let oldSize = 1; oldSize < size; oldSize += 1) {
        const proof = await tree.consistencyProof(oldSize, size);
        const [oldRoot, newRoot] = [reference.root(oldSize), reference.root(size)];
        for (const m of [oldSize - 1, oldSize + 1]) {
          assert.ok(
            !verifyConsistency(m, size, proof, oldRoot, newRoot),
            `${oldSize}→${size} as ${m}→${size}`,
          );
        }
        for (const n of [size - 1, size + 1]) {
          const got = verifyConsistency(oldSize, n, proof, oldRoot, newRoot);
          assert.equal(
            got,
            refVerifyConsistency(oldSize, n, proof, oldRoot, newRoot),
            `${oldSize}→${size} as →${n}`,
          );
          if (got) sameShape += 1;
          else refused += 1;
        }
      }
    }
    assert.ok(refused > 0 && sameShape > 0, `refused ${refused}, same shape ${sameShape}`);
    t.diagnostic(`wrong new size ±1: ${refused} refused, ${sameShape} with the same shape (and verified)`);
  });

  test('verifyConsistency handles size 0 and equal sizes', async () => {
    const empty = sha256();
    for (const size of [0, 1, 2, 7, 1000]) {
      const root = reference.root(size);
      // From the empty tree: an empty proof and the empty tree's root.
      assert.ok(verifyConsistency(0, size, [], empty, root), `0 → ${size}`);
      assert.ok(!verifyConsistency(0, size, [root], empty, root), `0 → ${size} with a proof element`);
      if (size > 0)
        assert.ok(!verifyConsistency(0, size, [], root, root), `0 → ${size} with a non-empty old root`);
      // Equal sizes: an empty proof, and equal roots.
      assert.ok(verifyConsistency(size, size, [], root, root), `${size} → ${size}`);
      assert.ok(
        !verifyConsistency(size, size, [], root, flipBit(root, 3, 2)),
        `${size} → ${size}, other root`,
      );
      assert.ok(!verifyConsistency(size, size, [root], root, root), `${size} → ${size} with a proof element`);
      assert.ok(!verifyConsistency(size, size, [], root.subarray(1), root.subarray(1)), 'short roots');
    }
    // And the stored tree proves them with empty proofs.
    const tree = new StoredTree(store);
    assert.deepEqual(await tree.consistencyProof(0, 0), []);
    assert.deepEqual(await tree.consistencyProof(0, 500), []);
    assert.deepEqual(await tree.consistencyProof(500, 500), []);
  });

  test('verifyInclusion refuses an index at or past the size, and odd numbers', () => {
    const root = reference.root(5);
    const leaf = leafHash(reference.entry(4));
    const proof = reference.path(4, 5);
    assert.ok(verifyInclusion(4, 5, leaf, proof, root));
    for (const [index, size] of [
      [5, 5],
      [6, 5],
      [4, 4],
      [0, 0],
      [-1, 5],
      [4.5, 5],
      [4, 5.5],
      [Number.NaN, 5],
      [4, Number.POSITIVE_INFINITY],
    ]) {
      assert.ok(!verifyInclusion(index as number, size as number, leaf, proof, root), `(${index}, ${size})`);
    }
    // The 1-leaf tree: the leaf hash is the root, and the proof is empty.
    const single = leafHash(reference.entry(0));
    assert.ok(verifyInclusion(0, 1, single, [], single));
    assert.ok(!verifyInclusion(0, 1, single, [single], single));
    assert.ok(!verifyInclusion(0, 1, single.subarray(1), [], single.subarray(1)));
  });

  test('StoredTree refuses sizes and leaves that are not stored, and bad numbers', async () => {
    const tree = new StoredTree(store.asOf(10));
    assert.equal((await tree.root(10)).toString('hex'), reference.root(10).toString('hex'));
    await assert.rejects(tree.root(11), RangeError);
    await assert.rejects(tree.root(16), RangeError);
    await assert.rejects(tree.inclusionProof(3, 11), RangeError);
    await assert.rejects(tree.inclusionProof(9, 12), RangeError);
    await assert.rejects(tree.consistencyProof(5, 11), RangeError);
    await assert.rejects(tree.consistencyProof(10, 12), RangeError);
    const full = new StoredTree(store);
    await assert.rejects(full.root(LEAVES + 1), RangeError);
    await assert.rejects(full.inclusionProof(LEAVES - 1, LEAVES + 1), RangeError);
    await assert.rejects(full.inclusionProof(LEAVES, LEAVES), RangeError);
    await assert.rejects(full.inclusionProof(7, 7), RangeError);
    await assert.rejects(full.inclusionProof(0, 0), RangeError);
    await assert.rejects(full.consistencyProof(8, 7), RangeError);
    await assert.rejects(full.consistencyProof(1, LEAVES + 1), RangeError);
    for (const bad of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      await assert.rejects(full.root(bad), RangeError, `root(${bad})`);
      await assert.rejects(full.inclusionProof(bad, 10), RangeError, `inclusionProof(${bad}, 10)`);
      await assert.rejects(full.inclusionProof(0, bad), RangeError, `inclusionProof(0, ${bad})`);
      await assert.rejects(full.consistencyProof(bad, 10), RangeError, `consistencyProof(${bad}, 10)`);
      await assert.rejects(full.consistencyProof(1, bad), RangeError, `consistencyProof(1, ${bad})`);
    }
  });

  test('StoredTree refuses a proof about a tree size it has not stored, even when no node is missing', async () => {
    // Every path below touches no stored node beyond leaf 9 except the leaf the proof is about
    // (inclusion of the last leaf uses only left siblings), or touches nothing at all (empty
    // proofs), so a store that only fails on missing nodes answers them for trees never built.
    const outcome = async (ask: () => Promise<Buffer[]>): Promise<string> => {
      try {
        return `resolved with ${(await ask()).length} elements`;
      } catch (error) {
        return error instanceof RangeError ? 'RangeError' : String(error);
      }
    };
    const ten = new StoredTree(store.asOf(10));
    const none = new StoredTree(new MemoryNodes());
    const outcomes = {
      'empty store: inclusionProof(0, 1)': await outcome(() => none.inclusionProof(0, 1)),
      'empty store: consistencyProof(0, 5)': await outcome(() => none.consistencyProof(0, 5)),
      '10 leaves: inclusionProof(10, 11)': await outcome(() => ten.inclusionProof(10, 11)),
      '10 leaves: consistencyProof(11, 11)': await outcome(() => ten.consistencyProof(11, 11)),
      '10 leaves: consistencyProof(0, 11)': await outcome(() => ten.consistencyProof(0, 11)),
    };
    assert.deepEqual(
      outcomes,
      Object.fromEntries(Object.keys(outcomes).map((key) => [key, 'RangeError'])),
      'proofs for sizes past the stored leaves must be refused',
    );
  });

  test('nodesForAppend refuses a missing left sibling and a bad index', async () => {
    const empty = new MemoryNodes();
    await assert.rejects(nodesForAppend(empty, 1, leafHash(Buffer.from('x'))), /missing node \(0, 0\)/);
    await assert.rejects(nodesForAppend(empty, 3, leafHash(Buffer.from('x'))), /missing node/);
    await assert.rejects(nodesForAppend(empty, -1, leafHash(Buffer.from('x'))), RangeError);
    await assert.rejects(nodesForAppend(empty, 0.5, leafHash(Buffer.from('x'))), RangeError);
    // An even index completes nothing and reads nothing.
    empty.reads = 0;
    const nodes = await nodesForAppend(empty, 6, leafHash(Buffer.from('x')));
    assert.deepEqual(
      nodes.map(({ level, index }) => [level, index]),
      [[0, 6]],
    );
    assert.equal(empty.reads, 0);
  });
});

// ─── Storage and read cost ──────────────────────────────────────────────────────────────────────

describe('merkle: storage cost and O(log n) reads', () => {
  const LEAVES = 70_000;
  const entries = Array.from({ length: LEAVES }, (_, index) => entryFor(index));
  const store = new MemoryNodes();
  const writes: number[] = [];
  const appendReads: number[] = [];
  before(async () => {
    for (const entry of entries) {
      const readsBefore = store.reads;
      writes.push((await store.append(entry)).length);
      appendReads.push(store.reads - readsBefore);
    }
  });

  test('append n writes at most log2(n)+1 nodes, about 2 on average, and reads one fewer', () => {
    writes.forEach((count, index) => {
      const size = index + 1;
      assert.ok(count >= 1 && count <= Math.floor(Math.log2(size)) + 1, `append ${index} wrote ${count}`);
      assert.equal(appendReads[index], count - 1, `append ${index} read ${appendReads[index]}`);
    });
    const first1024 = writes.slice(0, 1024).reduce((sum, count) => sum + count, 0);
    assert.equal(first1024, 2047); // 2·1024 − popcount(1024)
    assert.ok(first1024 / 1024 < 2, `average ${first1024 / 1024}`);
    const all = writes.reduce((sum, count) => sum + count, 0);
    assert.ok(all / LEAVES < 2, `average ${all / LEAVES} over ${LEAVES}`);
    assert.equal(store.stored.size, all);
  });

  test('roots and proofs at sizes past 2^16 read O(log n) stored nodes', async () => {
    const reference = new Reference(entries);
    const random = seeded(65536);
    const sizes = [65_535, 65_536, 65_537, 69_999, LEAVES];
    for (let n = 0; n < 3; n += 1) sizes.push(65_536 + random(LEAVES - 65_536));
    let worst = 0;
    const measure = async <T>(
      size: number,
      what: string,
      run: (tree: StoredTree) => Promise<T>,
    ): Promise<T> => {
      const tree = new StoredTree(store.asOf(size)); // a fresh tree, as for one request: no warm memo
      const readsBefore = store.reads;
      const result = await run(tree);
      const reads = store.reads - readsBefore;
      const bound = 4 * Math.log2(size);
      assert.ok(reads <= bound, `${what} at size ${size} read ${reads} nodes (bound ${bound.toFixed(1)})`);
      worst = Math.max(worst, reads);
      return result;
    };
    for (const size of sizes) {
      const root = await measure(size, 'root', (tree) => tree.root(size));
      assert.equal(root.toString('hex'), reference.root(size).toString('hex'), `root of ${size}`);
      const readsBefore = store.reads;
      await new StoredTree(store.asOf(size)).root(size);
      // One node per set bit of the size, plus the last leaf (the check that the size is stored).
      assert.equal(
        store.reads - readsBefore,
        popcount(size) + 1,
        `a root reads one node per set bit of ${size}, plus the last leaf`,
      );
      for (const index of [0, size - 1, size >> 1, 40_000 % size, random(size), random(size)]) {
        const proof = await measure(size, `inclusionProof(${index})`, (tree) =>
          tree.inclusionProof(index, size),
        );
        assert.deepEqual(hexes(proof), hexes(reference.path(index, size)), `PATH(${index}, ${size})`);
        assert.ok(verifyInclusion(index, size, leafHash(reference.entry(index)), proof, root));
      }
      for (const oldSize of [1, 2 ** 15, 65_535, 65_536, size - 1, 1 + random(size - 1)]) {
        if (oldSize >= size) continue;
        const proof = await measure(size, `consistencyProof(${oldSize})`, (tree) =>
          tree.consistencyProof(oldSize, size),
        );
        assert.deepEqual(hexes(proof), hexes(reference.proof(oldSize, size)), `PROOF(${oldSize}, ${size})`);
        assert.ok(verifyConsistency(oldSize, size, proof, reference.root(oldSize), root));
      }
    }
    assert.ok(worst > 0);
  });
});

// ─── Properties ─────────────────────────────────────────────────────────────────────────────────

describe('merkle: properties (fast-check)', () => {
  const LEAVES = 300;
  const entries = Array.from({ length: LEAVES }, (_, index) => entryFor(index));
  const reference = new Reference(entries);
  const store = new MemoryNodes();
  before(async () => {
    for (const entry of entries) await store.append(entry);
  });

  const sizeAndIndex = fc
    .integer({ min: 1, max: LEAVES })
    .chain((size) => fc.tuple(fc.constant(size), fc.integer({ min: 0, max: size - 1 })));
  const twoSizes = fc
    .integer({ min: 2, max: LEAVES })
    .chain((size) => fc.tuple(fc.integer({ min: 1, max: size - 1 }), fc.constant(size)));
  const change = fc.record({
    element: fc.nat(),
    byte: fc.integer({ min: 0, max: HASH_LEN - 1 }),
    mask: fc.integer({ min: 1, max: 255 }),
  });

  test('inclusion proofs verify, and any one-byte change to the proof or the leaf is refused', async () => {
    await fc.assert(
      fc.asyncProperty(sizeAndIndex, change, change, async ([size, index], inProof, inLeaf) => {
        const tree = new StoredTree(store.asOf(size));
        const root = await tree.root(size);
        const proof = await tree.inclusionProof(index, size);
        const leaf = leafHash(reference.entry(index));
        assert.ok(verifyInclusion(index, size, leaf, proof, root));
        assert.ok(!verifyInclusion(index, size, flipBit(leaf, inLeaf.byte, inLeaf.mask), proof, root));
        if (proof.length > 0) {
          const at = inProof.element % proof.length;
          const bad = withElement(proof, at, flipBit(proof[at] as Buffer, inProof.byte, inProof.mask));
          assert.ok(!verifyInclusion(index, size, leaf, bad, root));
        }
      }),
      { numRuns: 300 },
    );
  });

  test('consistency proofs verify, and any one-byte change to the proof or a root is refused', async () => {
    await fc.assert(
      fc.asyncProperty(twoSizes, change, change, async ([oldSize, size], inProof, inRoot) => {
        const tree = new StoredTree(store.asOf(size));
        const [oldRoot, newRoot] = [await tree.root(oldSize), await tree.root(size)];
        const proof = await tree.consistencyProof(oldSize, size);
        assert.ok(proof.length > 0);
        assert.ok(verifyConsistency(oldSize, size, proof, oldRoot, newRoot));
        const at = inProof.element % proof.length;
        const bad = withElement(proof, at, flipBit(proof[at] as Buffer, inProof.byte, inProof.mask));
        assert.ok(!verifyConsistency(oldSize, size, bad, oldRoot, newRoot));
        const [byte, mask] = [inRoot.byte, inRoot.mask];
        assert.ok(!verifyConsistency(oldSize, size, proof, flipBit(oldRoot, byte, mask), newRoot));
        assert.ok(!verifyConsistency(oldSize, size, proof, oldRoot, flipBit(newRoot, byte, mask)));
      }),
      { numRuns: 300 },
    );
  });

  test('the verifiers agree with the PATH / PROOF definitions for any claimed index and sizes', () => {
    // A real proof, presented with arbitrary (nearby or unrelated) parameters: the §2.1.3.2 and
    // §2.1.4.2 algorithms must accept exactly what undoing the definitions accepts.
    const near = (value: number) =>
      fc.oneof(
        fc.integer({ min: -2, max: 2 }).map((d) => value + d),
        fc.nat(LEAVES),
      );
    fc.assert(
      fc.property(
        sizeAndIndex.chain(([size, index]) => fc.tuple(fc.constant([size, index]), near(index), near(size))),
        ([[size, index], claimedIndex, claimedSize]) => {
          const proof = reference.path(index as number, size as number);
          const leaf = leafHash(reference.entry(index as number));
          const root = reference.root(size as number);
          assert.equal(
            verifyInclusion(claimedIndex, claimedSize, leaf, proof, root),
            refVerifyInclusion(claimedIndex, claimedSize, leaf, proof, root),
          );
        },
      ),
      { numRuns: 1000 },
    );
    fc.assert(
      fc.property(
        twoSizes.chain(([oldSize, size]) =>
          fc.tuple(fc.constant([oldSize, size]), near(oldSize), near(size)),
        ),
        ([[oldSize, size], claimedOld, claimedNew]) => {
          const proof = reference.proof(oldSize as number, size as number);
          const [oldRoot, newRoot] = [reference.root(oldSize as number), reference.root(size as number)];
          assert.equal(
            verifyConsistency(claimedOld, claimedNew, proof, oldRoot, newRoot),
            refVerifyConsistency(claimedOld, claimedNew, proof, oldRoot, newRoot),
          );
        },
      ),
      { numRuns: 1000 },
    );
  });
});
