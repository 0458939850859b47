import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * The Merkle tree of the audit log, as RFC 6962 / RFC 9162 §2.1 define it: a leaf is
 * SHA-256(0x00 || entry), an interior node SHA-256(0x01 || left || right), and a tree of n
 * leaves splits at the largest power of two below n. The domain-separation bytes stop a
 * second-preimage attack that passes an interior node off as a leaf.
 *
 * Storage: every *perfect* subtree is kept as a node (level L, index i covers leaves
 * [i·2^L, (i+1)·2^L)), written once when its last leaf is appended and never changed. An
 * append writes one leaf and at most log2(n) parents (amortised two nodes); the hash of any
 * range the RFC's recursion asks for is a fold of at most log2(n) stored nodes, so a root,
 * an inclusion proof and a consistency proof each read O(log n) nodes.
 */

export const HASH_BYTES = 32;

export type Awaitable<T> = T | Promise<T>;

export interface TreeNode {
  readonly level: number;
  readonly index: number;
  readonly hash: Buffer;
}

/** Reads stored perfect-subtree nodes; null when the node is not (yet) stored. */
export interface NodeSource {
  node(level: number, index: number): Awaitable<Buffer | null>;
}

export function leafHash(entry: Uint8Array): Buffer {
  return createHash('sha256')
    .update(Buffer.from([0]))
    .update(entry)
    .digest();
}

export function nodeHash(left: Uint8Array, right: Uint8Array): Buffer {
  return createHash('sha256')
    .update(Buffer.from([1]))
    .update(left)
    .update(right)
    .digest();
}

/** The root of the empty tree: SHA-256 of nothing. */
export function emptyRoot(): Buffer {
  return createHash('sha256').digest();
}

/** The largest power of two strictly below n (n ≥ 2). */
export function splitPoint(n: number): number {
  if (!Number.isSafeInteger(n) || n < 2) throw new RangeError(`splitPoint: n must be ≥ 2, got ${n}`);
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

function checkSize(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0)
    throw new RangeError(`${name} must be a whole number ≥ 0, got ${value}`);
}

/**
 * The nodes to store when leaf `index` (0-based, = the current tree size) is appended: the
 * leaf, then each perfect subtree it completes. Reads the left siblings it needs.
 */
export async function nodesForAppend(source: NodeSource, index: number, leaf: Buffer): Promise<TreeNode[]> {
  checkSize('index', index);
  const nodes: TreeNode[] = [{ level: 0, index, hash: leaf }];
  let level = 0;
  let at = index;
  let hash = leaf;
  while (at % 2 === 1) {
    const left = await source.node(level, at - 1);
    if (left === null) throw new Error(`the audit tree is missing node (${level}, ${at - 1})`);
    hash = nodeHash(left, hash);
    level += 1;
    at = (at - 1) / 2;
    nodes.push({ level, index: at, hash });
  }
  return nodes;
}

/**
 * The tree as stored: roots and proofs for any size up to the number of leaves stored.
 * Range hashes are memoised per instance, so make one per request.
 */
export class StoredTree {
  readonly #source: NodeSource;
  readonly #memo = new Map<string, Buffer>();

  constructor(source: NodeSource) {
    this.#source = source;
  }

  /** MTH(D[start:end]) for the ranges the RFC recursion produces (start aligned to the split). */
  async rangeHash(start: number, end: number): Promise<Buffer> {
    const size = end - start;
    if (size <= 0) throw new RangeError(`rangeHash: empty range [${start}, ${end})`);
    const key = `${start}:${end}`;
    const known = this.#memo.get(key);
    if (known !== undefined) return known;
    let hash: Buffer;
    if (isPowerOfTwo(size) && start % size === 0) {
      const level = Math.log2(size);
      const stored = await this.#source.node(level, start / size);
      if (stored === null) throw new RangeError(`the audit tree has no node for leaves [${start}, ${end})`);
      hash = stored;
    } else {
      const k = splitPoint(size);
      hash = nodeHash(await this.rangeHash(start, start + k), await this.rangeHash(start + k, end));
    }
    this.#memo.set(key, hash);
    return hash;
  }

  /** Refuses a size beyond the leaves stored (some proofs would read no node that shows it). */
  async #requireLeaves(size: number): Promise<void> {
    if (size > 0 && (await this.#source.node(0, size - 1)) === null)
      throw new RangeError(`the audit tree has fewer than ${size} leaves`);
  }

  async root(size: number): Promise<Buffer> {
    checkSize('tree size', size);
    await this.#requireLeaves(size);
    return size === 0 ? emptyRoot() : this.rangeHash(0, size);
  }

  /** PATH(m, D[n]) of RFC 9162 §2.1.3.1, leaf first. */
  async inclusionProof(leafIndex: number, size: number): Promise<Buffer[]> {
    checkSize('leaf index', leafIndex);
    checkSize('tree size', size);
    if (leafIndex >= size) throw new RangeError(`leaf ${leafIndex} is not in a tree of size ${size}`);
    await this.#requireLeaves(size);
    const path: Buffer[] = [];
    const walk = async (m: number, start: number, end: number): Promise<void> => {
      const n = end - start;
      if (n === 1) return;
      const k = splitPoint(n);
      if (m < k) {
        await walk(m, start, start + k);
        path.push(await this.rangeHash(start + k, end));
      } else {
        await walk(m - k, start + k, end);
        path.push(await this.rangeHash(start, start + k));
      }
    };
    await walk(leafIndex, 0, size);
    return path;
  }

  /** PROOF(m, D[n]) of RFC 9162 §2.1.4.1 (empty when m is 0 or m = n). */
  async consistencyProof(oldSize: number, newSize: number): Promise<Buffer[]> {
    checkSize('old size', oldSize);
    checkSize('new size', newSize);
    if (oldSize > newSize) throw new RangeError(`old size ${oldSize} is larger than new size ${newSize}`);
    await this.#requireLeaves(newSize);
    if (oldSize === 0 || oldSize === newSize) return [];
    const proof: Buffer[] = [];
    const sub = async (m: number, start: number, end: number, whole: boolean): Promise<void> => {
      const n = end - start;
      if (m === n) {
        if (!whole) proof.push(await this.rangeHash(start, end));
        return;
      }
      const k = splitPoint(n);
      if (m <= k) {
        await sub(m, start, start + k, whole);
        proof.push(await this.rangeHash(start + k, end));
      } else {
        await sub(m - k, start + k, end, false);
        proof.push(await this.rangeHash(start, start + k));
      }
    };
    await sub(oldSize, 0, newSize, true);
    return proof;
  }
}

/**
 * The right frontier of a tree being built leaf by leaf (the perfect subtrees covering
 * [0, n)): O(log n) memory, so a full verification streams a log of any length. `push`
 * reports each node it completes, so the caller can compare it with the stored one.
 */
export class CompactRange {
  readonly #stack: TreeNode[] = [];
  #size = 0;

  get size(): number {
    return this.#size;
  }

  push(leaf: Buffer): TreeNode[] {
    const made: TreeNode[] = [{ level: 0, index: this.#size, hash: leaf }];
    let node: TreeNode = made[0] as TreeNode;
    for (;;) {
      const top = this.#stack.at(-1);
      if (top === undefined || top.level !== node.level) break;
      this.#stack.pop();
      node = { level: node.level + 1, index: top.index / 2, hash: nodeHash(top.hash, node.hash) };
      made.push(node);
    }
    this.#stack.push(node);
    this.#size += 1;
    return made;
  }

  root(): Buffer {
    let root: Buffer | null = null;
    for (let i = this.#stack.length - 1; i >= 0; i -= 1) {
      const { hash } = this.#stack[i] as TreeNode;
      root = root === null ? hash : nodeHash(hash, root);
    }
    return root ?? emptyRoot();
  }
}

function equalHash(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === HASH_BYTES && b.length === HASH_BYTES && timingSafeEqual(a, b);
}

function lsb(n: bigint): boolean {
  return (n & 1n) === 1n;
}

/** RFC 9162 §2.1.3.2: does `proof` show the leaf with hash `leaf` at `leafIndex` in the tree of `root`? */
export function verifyInclusion(
  leafIndex: number,
  treeSize: number,
  leaf: Uint8Array,
  proof: readonly Uint8Array[],
  root: Uint8Array,
): boolean {
  if (!Number.isSafeInteger(leafIndex) || !Number.isSafeInteger(treeSize)) return false;
  if (leafIndex < 0 || leafIndex >= treeSize) return false;
  let fn = BigInt(leafIndex);
  let sn = BigInt(treeSize - 1);
  let r: Uint8Array = leaf;
  for (const p of proof) {
    if (p.length !== HASH_BYTES || sn === 0n) return false;
    if (lsb(fn) || fn === sn) {
      r = nodeHash(p, r);
      if (!lsb(fn)) {
        while (!lsb(fn) && fn !== 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n && equalHash(r, root);
}

/** RFC 9162 §2.1.4.2: does `proof` show that the tree of `newRoot` extends the tree of `oldRoot`? */
export function verifyConsistency(
  oldSize: number,
  newSize: number,
  proof: readonly Uint8Array[],
  oldRoot: Uint8Array,
  newRoot: Uint8Array,
): boolean {
  if (!Number.isSafeInteger(oldSize) || !Number.isSafeInteger(newSize)) return false;
  if (oldSize < 0 || oldSize > newSize) return false;
  if (proof.some((p) => p.length !== HASH_BYTES)) return false;
  if (oldSize === newSize) return proof.length === 0 && equalHash(oldRoot, newRoot);
  // Every tree extends the empty one; the empty tree's root is fixed.
  if (oldSize === 0) return proof.length === 0 && equalHash(oldRoot, emptyRoot());
  if (proof.length === 0) return false;
  const path: Uint8Array[] = isPowerOfTwo(oldSize) ? [oldRoot, ...proof] : [...proof];
  let fn = BigInt(oldSize - 1);
  let sn = BigInt(newSize - 1);
  while (lsb(fn)) {
    fn >>= 1n;
    sn >>= 1n;
  }
  let fr: Uint8Array = path[0] as Uint8Array;
  let sr: Uint8Array = fr;
  for (const c of path.slice(1)) {
    if (sn === 0n) return false;
    if (lsb(fn) || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      if (!lsb(fn)) {
        while (!lsb(fn) && fn !== 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n && equalHash(fr, oldRoot) && equalHash(sr, newRoot);
}
