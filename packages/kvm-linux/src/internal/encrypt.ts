// KVM_MEMORY_ENCRYPT_OP, REG_REGION and UNREG_REGION: the SEV and TDX command structs.
//
// `struct kvm_sev_cmd { __u32 id; __u32 pad0; __u64 data; __u32 error; __u32 sev_fd; }` and
// `struct kvm_tdx_cmd { __u32 id; __u32 flags; __u64 data; __u64 hw_error; }` (both 24 bytes;
// include/uapi/linux/kvm.h, arch/x86/include/uapi/asm/kvm.h). The `data` structs marshalled here
// are the simple ones (fixed-size, pointers to caller buffers); for the others the header is sent
// with a NULL argument first: a kernel without the op (no SEV/TDX, as on PVM) fails with its own
// errno (ENOTTY from kvm_arch_vm_ioctl() when kvm_x86_ops.mem_enc_ioctl is NULL), and a kernel
// with it gets a clear "not marshalled" error instead of a guessed struct.

import type { EncRegion, HostPtr, SevCommand, TdxCommand } from '@kvmtest/kvm';
import { KvmError, SEV_CMD } from '@kvmtest/kvm';
import { addressOf, ioctlBufRaw, lastErrno } from './sys.js';
import { IOCTL, SIZE } from './uapi.js';

const OP = 'KVM_MEMORY_ENCRYPT_OP';

function ptr(p: HostPtr | undefined): bigint {
  if (p === undefined) return 0n;
  return addressOf(p.buffer) + BigInt(p.offset);
}

function isTdx(cmd: SevCommand | TdxCommand): cmd is TdxCommand {
  return typeof (cmd as TdxCommand).hwError === 'bigint';
}

/** Marshals `cmd.data` for SEV commands with a simple struct; undefined when not marshalled here. */
function sevData(cmd: SevCommand): { buf: Uint8Array | null; after?: (v: DataView) => void } | undefined {
  const d = cmd.data as Record<string, unknown> | undefined;
  if (d === undefined) return { buf: null };
  const mk = (n: number) => {
    const buf = new Uint8Array(n);
    return { buf, v: new DataView(buf.buffer) };
  };
  switch (cmd.id) {
    case SEV_CMD.LAUNCH_UPDATE_DATA:
    case SEV_CMD.LAUNCH_MEASURE: {
      // struct kvm_sev_launch_update_data / kvm_sev_launch_measure { __u64 uaddr; __u32 len; }
      const { buf, v } = mk(16);
      v.setBigUint64(0, ptr(d.uaddr as HostPtr | undefined), true);
      v.setUint32(8, d.len as number, true);
      return {
        buf,
        after: (r) => {
          d.len = r.getUint32(8, true);
        },
      };
    }
    case SEV_CMD.GUEST_STATUS: {
      // struct kvm_sev_guest_status { __u32 handle; __u32 policy; __u32 state; }
      const { buf } = mk(12);
      return {
        buf,
        after: (r) => {
          d.handle = r.getUint32(0, true);
          d.policy = r.getUint32(4, true);
          d.state = r.getUint32(8, true);
        },
      };
    }
    case SEV_CMD.DBG_DECRYPT:
    case SEV_CMD.DBG_ENCRYPT: {
      // struct kvm_sev_dbg { __u64 src_uaddr; __u64 dst_uaddr; __u32 len; }
      const { buf, v } = mk(24);
      v.setBigUint64(0, ptr(d.src as HostPtr | undefined), true);
      v.setBigUint64(8, ptr(d.dst as HostPtr | undefined), true);
      v.setUint32(16, d.len as number, true);
      return { buf };
    }
    case SEV_CMD.INIT2: {
      // struct kvm_sev_init { __u64 vmsa_features; __u32 flags; __u16 ghcb_version; __u16 pad1; __u32 pad2[8]; }
      const { buf, v } = mk(48);
      v.setBigUint64(0, d.vmsaFeatures as bigint, true);
      v.setUint32(8, d.flags as number, true);
      v.setUint16(12, d.ghcbVersion as number, true);
      return { buf };
    }
    default:
      return undefined;
  }
}

function send(fd: number, header: Uint8Array | null, what: string): boolean {
  return ioctlBufRaw(fd, IOCTL.KVM_MEMORY_ENCRYPT_OP, header) >= 0 || fail(what);
}

function fail(what: string): never {
  const e = lastErrno();
  throw new KvmError(e.code, OP, `${what} failed`, { errno: e.errno });
}

/** Probes with a NULL argument, then reports a command whose data struct is not marshalled. */
function unmarshalled(fd: number, what: string): never {
  send(fd, null, `${what} (probe with a NULL argument)`);
  throw new KvmError(
    'EINVAL',
    OP,
    `${what}: its data struct is not marshalled by kvm-linux yet (the host does have KVM_MEMORY_ENCRYPT_OP)`,
  );
}

/** KVM_MEMORY_ENCRYPT_OP on a VM fd. */
export function encryptOpVm(fd: number, cmd: SevCommand | TdxCommand | undefined): void {
  if (cmd === undefined) {
    send(fd, null, 'NULL argument');
    return;
  }
  if (isTdx(cmd)) {
    tdxOp(fd, cmd);
    return;
  }
  const what = `SEV command ${cmd.id}`;
  const data = sevData(cmd);
  if (!data) unmarshalled(fd, what);
  const header = new Uint8Array(24);
  const v = new DataView(header.buffer);
  v.setUint32(0, cmd.id >>> 0, true);
  v.setBigUint64(8, data.buf ? addressOf(data.buf) : 0n, true);
  v.setInt32(20, cmd.sevFd ?? -1, true);
  const ok = ioctlBufRaw(fd, IOCTL.KVM_MEMORY_ENCRYPT_OP, header) >= 0;
  const err = ok ? undefined : lastErrno();
  cmd.error = v.getUint32(16, true);
  if (err) throw new KvmError(err.code, OP, `${what} failed`, { errno: err.errno }, cmd.error || undefined);
  if (data.buf && data.after) data.after(new DataView(data.buf.buffer));
}

function tdxOp(fd: number, cmd: TdxCommand): void {
  const what = `TDX command ${cmd.id}`;
  // Only commands without data are marshalled (INIT_VCPU takes an integer in `data`, FINALIZE_VM none).
  if (cmd.data !== undefined && typeof cmd.data !== 'bigint') unmarshalled(fd, what);
  const header = new Uint8Array(24);
  const v = new DataView(header.buffer);
  v.setUint32(0, cmd.id >>> 0, true);
  v.setUint32(4, cmd.flags >>> 0, true);
  v.setBigUint64(8, (cmd.data as bigint | undefined) ?? 0n, true);
  const ok = ioctlBufRaw(fd, IOCTL.KVM_MEMORY_ENCRYPT_OP, header) >= 0;
  const err = ok ? undefined : lastErrno();
  cmd.hwError = v.getBigUint64(16, true);
  if (err) throw new KvmError(err.code, OP, `${what} failed`, { errno: err.errno });
}

/** KVM_MEMORY_ENCRYPT_OP on a vCPU fd (TDX only). */
export function encryptOpVcpu(fd: number, cmd: TdxCommand | undefined): void {
  if (cmd === undefined) {
    send(fd, null, 'NULL argument');
    return;
  }
  tdxOp(fd, cmd);
}

/** KVM_MEMORY_ENCRYPT_REG_REGION / UNREG_REGION with `struct kvm_enc_region { __u64 addr; __u64 size; }`. */
export function encRegion(fd: number, reg: boolean, region: EncRegion): void {
  const op = reg ? 'KVM_MEMORY_ENCRYPT_REG_REGION' : 'KVM_MEMORY_ENCRYPT_UNREG_REGION';
  const buf = new Uint8Array(SIZE.kvm_enc_region);
  const v = new DataView(buf.buffer);
  v.setBigUint64(0, ptr(region.addr), true);
  v.setBigUint64(8, region.size, true);
  if (
    ioctlBufRaw(fd, reg ? IOCTL.KVM_MEMORY_ENCRYPT_REG_REGION : IOCTL.KVM_MEMORY_ENCRYPT_UNREG_REGION, buf) <
    0
  ) {
    const e = lastErrno();
    throw new KvmError(e.code, op, `${op} failed`, { errno: e.errno });
  }
}
