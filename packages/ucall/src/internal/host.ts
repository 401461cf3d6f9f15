// The host half: recognise a ucall exit, validate the GPA against this VM's pool, copy the slot out.

import { argTypeError, type Exit, KvmError, type Vcpu } from '@kvmtest/kvm';
import {
  UCALL,
  UCALL_FAILED_GPA,
  UCALL_MAX_ARGS,
  UCALL_PIO_PORT,
  UCALL_SLOT_LAYOUT,
  ucallCmdName,
} from './constants.js';
import { hex } from '@kvmtest/coco';
import { UcallError } from './errors.js';
import { ucallPoolOf } from './pool.js';
import { type DecodedSlot, decodeSlotAt } from './slot.js';

/**
 * A decoded ucall: the slot's contents (DecodedSlot; `message` is '' when none) plus which slot and
 * vCPU. `truncated` is present only when the guest cut its message to fit the 1024-byte buffer.
 */
export interface Ucall extends Omit<DecodedSlot, 'truncated'> {
  /** The guest cut the message to fit the 1024-byte buffer. */
  truncated?: boolean;
  /** Index of the slot the guest used (absent for NONE). */
  slot?: number;
  /** The vCPU that made the ucall. */
  vcpuId: number;
}

const SLOT_SIZE = BigInt(UCALL_SLOT_LAYOUT.size);
const decodedExit = new WeakMap<Vcpu, Exit>();
const views = new WeakMap<Uint8Array, DataView>();

function viewOf(bytes: Uint8Array): DataView {
  let v = views.get(bytes);
  if (v === undefined) {
    v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    views.set(bytes, v);
  }
  return v;
}

// Little-endian u32 at data[i] as a number (0 for bytes past the end).
function u32At(data: Uint8Array, i: number): number {
  return (
    ((data[i] ?? 0) | ((data[i + 1] ?? 0) << 8) | ((data[i + 2] ?? 0) << 16) | ((data[i + 3] ?? 0) << 24)) >>>
    0
  );
}

/**
 * True when the vCPU's last exit has a ucall's shape: OUT to port 0x1000, or a write to the pool's
 * MMIO GPA (does not validate or decode; see getUcall).
 */
export function isUcallExit(vcpu: Vcpu): boolean {
  checkVcpu(vcpu, 'isUcallExit');
  const exit = vcpu.exit;
  if (exit === undefined) return false;
  if (exit.reason === 'io') return exit.port === UCALL_PIO_PORT;
  if (exit.reason === 'mmio') {
    const pool = ucallPoolOf(vcpu.vm);
    return pool?.mmioGpa !== undefined && exit.gpa === pool.mmioGpa;
  }
  return false;
}

/**
 * Decodes the vCPU's last exit as a ucall (selftests' get_ucall), synchronously. A ucall exit is
 * `io` OUT to port 0x1000 of 4 bytes whose data is the slot's GPA (LE u32) — the shape every transport
 * (OUT, GHCB IOIO, TDVMCALL Instruction.IO) ends in — or an 8-byte MMIO write of the GPA at the pool's
 * MMIO GPA. Returns undefined for any other exit; a GPA of 0 is a bare UCALL_NONE. The GPA must be the
 * start of a slot of THIS VM's pool that is in use and whose `gpa` field holds it; the slot is then
 * copied out through host memory (the pool is shared, so plaintext). Each exit decodes once: a second
 * call for the same exit throws ALREADY_DECODED — the next vcpu.run() completes the OUT and lets the
 * guest free the slot. Throws UcallError NO_FREE_SLOT (the guest sent UCALL_FAILED_GPA with every slot
 * taken), FORGED_GPA (also the failure value while slots are free), FOREIGN_SLOT (a slot another vCPU's
 * pending exit names), KvmError EBADF once the vCPU's VM is closed,
 * STALE_GPA, SLOT_MISMATCH, NO_POOL, BAD_EXIT (wrong direction or size on the ucall port/address).
 */
export function getUcall(vcpu: Vcpu): Ucall | undefined {
  checkVcpu(vcpu, 'getUcall');
  const exit = vcpu.exit;
  if (exit === undefined) return undefined;
  let value: bigint;
  if (exit.reason === 'io') {
    if (exit.port !== UCALL_PIO_PORT) return undefined;
    if (exit.direction !== 'out' || exit.size !== 4 || exit.count !== 1)
      throw new UcallError(
        'BAD_EXIT',
        `vCPU ${vcpu.id}: ${exit.direction} of ${exit.size} byte(s) ×${exit.count} on the ucall port ${hex(UCALL_PIO_PORT)}; a ucall is one 4-byte OUT of the slot GPA`,
        { vcpuId: vcpu.id, direction: exit.direction, size: exit.size, count: exit.count },
      );
    value = BigInt(u32At(exit.data, 0));
  } else if (exit.reason === 'mmio') {
    const pool = ucallPoolOf(vcpu.vm);
    if (pool?.mmioGpa === undefined || exit.gpa !== pool.mmioGpa) return undefined;
    if (!exit.isWrite || exit.len !== 8)
      throw new UcallError(
        'BAD_EXIT',
        `vCPU ${vcpu.id}: MMIO ${exit.isWrite ? 'write' : 'read'} of ${exit.len} bytes at the ucall MMIO GPA ${hex(exit.gpa)}; a ucall is one 8-byte write of the slot GPA`,
        { vcpuId: vcpu.id, isWrite: exit.isWrite, len: exit.len },
      );
    value = (BigInt(u32At(exit.data, 4)) << 32n) | BigInt(u32At(exit.data, 0));
  } else return undefined;

  if (decodedExit.get(vcpu) === exit)
    throw new UcallError(
      'ALREADY_DECODED',
      `vCPU ${vcpu.id}: getUcall was already called for this exit (ucall GPA ${hex(value)}); run the vCPU to complete it before decoding again`,
      { vcpuId: vcpu.id, gpa: value },
    );

  if (value === 0n) {
    decodedExit.set(vcpu, exit);
    return {
      cmd: UCALL.NONE,
      args: new Array<bigint>(UCALL_MAX_ARGS).fill(0n),
      buffer: '',
      message: '',
      gpa: 0n,
      vcpuId: vcpu.id,
    };
  }
  // Only the 4-byte failure value is the guest half's: all ones of 64 bits (MMIO) is not something it
  // sends, so it falls through to the pool checks and is reported as forged.
  const pool = ucallPoolOf(vcpu.vm);
  if (value === UCALL_FAILED_GPA && pool === undefined)
    throw new UcallError(
      'NO_FREE_SLOT',
      `vCPU ${vcpu.id}: the guest found no ucall pool and sent the failure value ${hex(value)} (VM fd ${vcpu.vm.fd} has none: ucallInit was not called)`,
      { vcpuId: vcpu.id, gpa: value },
    );
  if (pool === undefined)
    throw new UcallError(
      'NO_POOL',
      `vCPU ${vcpu.id}: ucall exit with GPA ${hex(value)} but VM fd ${vcpu.vm.fd} has no ucall pool (ucallInit was not called)`,
      { vcpuId: vcpu.id, gpa: value },
    );
  if (value === UCALL_FAILED_GPA) {
    // The guest half sends the failure value when every slot is taken (or its image names no pool).
    // Slots are freed only once the host runs their vCPUs again, so a free slot now means the value
    // did not come from a failed allocation of this pool.
    let free = 0;
    for (let i = 0; i < pool.slots; i++) if (!pool.inUse(i)) free++;
    if (free === 0)
      throw new UcallError(
        'NO_FREE_SLOT',
        `vCPU ${vcpu.id}: the guest found no free ucall slot and sent the failure value ${hex(value)}; every slot's in-use bit is set`,
        { vcpuId: vcpu.id, gpa: value },
      );
    throw new UcallError(
      'FORGED_GPA',
      `vCPU ${vcpu.id}: the guest sent the failure value ${hex(value)} while ${free} of the ${pool.slots} slots of this VM's ${pool.describe()} are free: a forged value, or a guest image that no longer names the pool (reloaded without ucallReapply)`,
      { vcpuId: vcpu.id, gpa: value, free },
    );
  }
  const index = pool.slotIndexOf(value);
  if (index === undefined)
    throw new UcallError(
      'FORGED_GPA',
      `vCPU ${vcpu.id}: ucall GPA ${hex(value)} is not the start of a slot of this VM's ${pool.describe()}`,
      { vcpuId: vcpu.id, gpa: value, poolGpa: pool.gpa, poolEnd: pool.endGpa },
    );
  const memory = pool.space.memory;
  const region = memory.findRegion(value);
  if (region === undefined || value + SLOT_SIZE > region.end || pool.gpa < region.gpa)
    throw new UcallError(
      'FORGED_GPA',
      `vCPU ${vcpu.id}: ucall slot at GPA ${hex(value)} is not backed by the memslot of its pool`,
      {
        vcpuId: vcpu.id,
        gpa: value,
      },
    );
  const regionGpa = Number(region.gpa);
  const bitmapByte = region.backing[Number(pool.gpa) - regionGpa + pool.layout.bitmap + (index >> 3)]!;
  if (((bitmapByte >> (index & 7)) & 1) === 0)
    throw new UcallError(
      'STALE_GPA',
      `vCPU ${vcpu.id}: ucall GPA ${hex(value)} names slot ${index} of the ${pool.describe()}, but that slot is not in use (its in-use bit is clear): a stale or forged GPA`,
      { vcpuId: vcpu.id, gpa: value, slot: index },
    );
  // A slot belongs to the vCPU that filled it until the host runs that vCPU again: another vCPU
  // whose current exit names the same slot means one of the two sent a slot it did not take.
  for (const other of vcpu.vm.vcpus)
    if (other !== vcpu && exitValue(other.exit, pool.mmioGpa) === value)
      throw new UcallError(
        'FOREIGN_SLOT',
        `vCPU ${vcpu.id}: ucall GPA ${hex(value)} names slot ${index}, which vCPU ${other.id}'s pending ucall exit also names; a vCPU may only send the slot it took`,
        { vcpuId: vcpu.id, gpa: value, slot: index, holder: other.id },
      );
  const off = Number(value) - regionGpa;
  const slot = decodeSlotAt(region.backing, viewOf(region.backing), off);
  if (slot.gpa !== value)
    throw new UcallError(
      'SLOT_MISMATCH',
      `vCPU ${vcpu.id}: slot ${index} at GPA ${hex(value)} records GPA ${hex(slot.gpa)} in its gpa field; the pool was overwritten (${pool.describe()})`,
      { vcpuId: vcpu.id, gpa: value, recorded: slot.gpa, slot: index },
    );
  decodedExit.set(vcpu, exit);
  // Fields copied one by one, not by object rest/spread: this is the host half of every ucall, and
  // a spread of the decoded slot cost several times the rest of the decode.
  const uc: Ucall = {
    cmd: slot.cmd,
    args: slot.args,
    buffer: slot.buffer,
    message: slot.message,
    slot: index,
    gpa: value,
    vcpuId: vcpu.id,
  };
  if (slot.file !== undefined) uc.file = slot.file;
  if (slot.line !== undefined) uc.line = slot.line;
  if (slot.expression !== undefined) uc.expression = slot.expression;
  if (slot.extra !== undefined) uc.extra = slot.extra;
  if (slot.truncated) uc.truncated = true;
  return uc;
}

/** The value a ucall-shaped exit carries (OUT of 4 bytes to the ucall port, 8-byte MMIO write), or undefined. */
function exitValue(exit: Exit | undefined, mmioGpa: bigint | undefined): bigint | undefined {
  if (exit === undefined) return undefined;
  if (exit.reason === 'io')
    return exit.port === UCALL_PIO_PORT && exit.direction === 'out' && exit.size === 4
      ? BigInt(u32At(exit.data, 0))
      : undefined;
  if (
    exit.reason === 'mmio' &&
    mmioGpa !== undefined &&
    exit.gpa === mmioGpa &&
    exit.isWrite &&
    exit.len === 8
  )
    return (BigInt(u32At(exit.data, 4)) << 32n) | BigInt(u32At(exit.data, 0));
  return undefined;
}

/** A Vcpu of an open VM: TypeError for anything else, KvmError EBADF once its VM is closed. */
export function checkVcpu(vcpu: Vcpu, op: string): void {
  if (typeof vcpu !== 'object' || vcpu === null || typeof vcpu.vm !== 'object' || vcpu.vm === null)
    throw argTypeError(op, 'vcpu', 'a Vcpu', vcpu);
  // A closed VM's memory may already back another VM: its vCPU's last exit must not be decoded.
  if (vcpu.vm.closed)
    throw new KvmError('EBADF', op, `vCPU ${vcpu.id} belongs to VM fd ${vcpu.vm.fd}, which is closed`, {
      vcpuId: vcpu.id,
      fd: vcpu.vm.fd,
    });
}

/** `SYNC args [0x1, …]` / `ABORT "msg" at file:line (expr)`, for messages. */
export function describeUcall(uc: Ucall): string {
  if (typeof uc !== 'object' || uc === null || !Array.isArray(uc.args))
    throw argTypeError('describeUcall', 'uc', 'a Ucall (from getUcall)', uc);
  const name = ucallCmdName(uc.cmd);
  if (uc.file !== undefined) return `${name} at ${uc.file}:${uc.line}: ${uc.expression ?? ''}: ${uc.message}`;
  if (uc.message !== '') return `${name} ${JSON.stringify(uc.message)}`;
  return `${name} args [${uc.args.map((a) => hex(a)).join(', ')}]`;
}
