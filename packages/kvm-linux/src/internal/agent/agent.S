# kvmtest guest agent: x86-64, 64-bit mode, CPL 0, position independent (RIP-relative only).
#
# The host implements the Guest interface of a TypeScript guest program by posting one operation at
# a time into this vCPU's mailbox page and running the vCPU; the agent executes the operation as the
# real instruction, writes the results and signals completion with an OUT to the agent port. An
# exception during an operation enters one of 32 IDT stubs; the common handler records vector,
# error code, CR2 and the faulting RIP, resets the stack and signals the same way.
#
# Registers: RSP = the top of this vCPU's agent stack page, which is also the base of its mailbox
# page (the host sets it on entry; the agent never pushes, and the exception path recomputes the
# mailbox from RSP and resets RSP). RBX = mailbox, EDX = agent port, R12 = op_nop, RFLAGS.DF = 0,
# IF = 0.
#
# Assembled with GNU as (`as --64`); a test reassembles this file and compares with agent-bytes.ts.
# Constants are literals, not forward `.set` symbols: GNU as in Intel syntax turns a forward
# reference like `cmp rax, N` into a memory operand.

        .intel_syntax noprefix
        .text
        .code64

# ---- header (read by the host) ----------------------------------------------------------------
header:
        .long   agent_entry - header        # +0  entry point
        .long   stubs - header              # +4  IDT stub 0
        .long   16                          # +8  stub stride
        .long   0x61676e74                  # +12 magic "tnga"
        .long   optable - header            # +16 operation table (offsets from the header)
        .long   (optable_end - optable) / 4 # +20 number of operations
        .long   qword_ladder - header       # +24 the qword copy ladder (14 bytes a pair)
        .long   byte_ladder - header        # +28 the byte copy ladder (6 bytes a pair)

# Mailbox offsets (u64 each): 0x00 the GVA of the operation's code (the host writes it from the
# operation table, so dispatch is one indirect jump), 0x08..0x28 args A0..A4, 0x40..0x58 results
# R0..R3, 0x60 status (the host writes 0 with each operation; the exception path writes 1),
# 0x68 vector, 0x70 error code, 0x78 CR2, 0x80 faulting RIP. The data page (mailbox + 4096) holds
# readBytes / writeBytes data.
#
# PVM hosts emulate most guest instructions (about 1.4 us each), so the path from one OUT to the
# next is kept as short as it can be: RBX (mailbox) and EDX (the agent port) stay loaded across
# operations, each operation ends with its own OUT, and the next one starts with `jmp [rbx]`.
# Operations that clobber RBX or EDX restore them before signalling.
#
# An operation whose instruction exits to the host (OUT, IN, HLT, MMIO) does not signal after it:
# the exit itself tells the host the instruction ran, and the host completes the operation from
# the exit (an IN's or MMIO read's value is the data it hands back). The agent then dispatches the
# next operation as soon as the host resumes the vCPU. Before the instruction it points the mailbox
# at op_nop, so that an instruction the kernel handles without exiting is signalled as usual.

        .macro  signal
        out     dx, al
        jmp     qword ptr [rbx]
        .endm
        .macro  signal_port
        mov     edx, 0x7ff0                 # the agent port
        out     dx, al
        jmp     qword ptr [rbx]
        .endm
        .macro  exit_next                   # after an instruction that exited: the next operation
        mov     edx, 0x7ff0
        jmp     qword ptr [rbx]
        .endm
        .macro  signal_unless_exit          # op_nop signals if the instruction does not exit
        mov     [rbx], r12
        .endm

        .balign 16
agent_entry:
        cld
        mov     rbx, rsp                    # the host starts the agent with RSP = the mailbox base
        mov     edx, 0x7ff0
        lea     r12, [rip + op_nop]         # for signal_unless_exit (no operation changes R12)
        jmp     qword ptr [rbx]             # the first operation is posted before the first run

        .balign 4
optable:
        .long   op_nop - header             # 0
        .long   op_rd8 - header             # 1
        .long   op_rd16 - header            # 2
        .long   op_rd32 - header            # 3
        .long   op_rd64 - header            # 4
        .long   op_wr8 - header             # 5
        .long   op_wr16 - header            # 6
        .long   op_wr32 - header            # 7
        .long   op_wr64 - header            # 8
        .long   op_bts - header             # 9
        .long   op_btr - header             # 10
        .long   op_rdbytes - header         # 11
        .long   op_wrbytes - header         # 12
        .long   op_cpuid - header           # 13
        .long   op_rdmsr - header           # 14
        .long   op_wrmsr - header           # 15
        .long   op_rdcr - header            # 16
        .long   op_wrcr - header            # 17
        .long   op_in8 - header             # 18
        .long   op_in16 - header            # 19
        .long   op_in32 - header            # 20
        .long   op_out8 - header            # 21
        .long   op_out16 - header           # 22
        .long   op_out32 - header           # 23
        .long   op_hlt - header             # 24
        .long   op_ud2 - header             # 25
        .long   op_vmcall - header          # 26
        .long   op_lidt - header            # 27
        .long   op_mmio_rd8 - header        # 28
        .long   op_mmio_rd16 - header       # 29
        .long   op_mmio_rd32 - header       # 30
        .long   op_mmio_rd64 - header       # 31
        .long   op_mmio_wr8 - header        # 32
        .long   op_mmio_wr16 - header       # 33
        .long   op_mmio_wr32 - header       # 34
        .long   op_mmio_wr64 - header       # 35
        .long   op_pvalidate - header       # 36
        .long   op_vmgexit - header         # 37
        .long   op_tdcall - header          # 38
        .long   op_xgetbv - header          # 39
        .long   op_xsetbv - header          # 40
        .long   op_xsave - header           # 41
        .long   op_xrstor - header          # 42
        .long   op_slotsend - header        # 43
        .long   op_slotsend_tail - header   # 44 (not an operation: where the copy ladder returns to)
optable_end:

op_nop:
        signal

op_rd8:
        mov     rsi, [rbx + 0x08]
        movzx   eax, byte ptr [rsi]
        mov     [rbx + 0x40], rax
        signal
op_rd16:
        mov     rsi, [rbx + 0x08]
        movzx   eax, word ptr [rsi]
        mov     [rbx + 0x40], rax
        signal
op_rd32:
        mov     rsi, [rbx + 0x08]
        mov     eax, dword ptr [rsi]
        mov     [rbx + 0x40], rax
        signal
op_rd64:
        mov     rsi, [rbx + 0x08]
        mov     rax, qword ptr [rsi]
        mov     [rbx + 0x40], rax
        signal

op_wr8:
        mov     rsi, [rbx + 0x08]
        mov     rax, [rbx + 0x10]
        mov     byte ptr [rsi], al
        signal
op_wr16:
        mov     rsi, [rbx + 0x08]
        mov     rax, [rbx + 0x10]
        mov     word ptr [rsi], ax
        signal
op_wr32:
        mov     rsi, [rbx + 0x08]
        mov     rax, [rbx + 0x10]
        mov     dword ptr [rsi], eax
        signal
op_wr64:
        mov     rsi, [rbx + 0x08]
        mov     rax, [rbx + 0x10]
        mov     qword ptr [rsi], rax
        signal

op_bts:
        mov     rsi, [rbx + 0x08]
        mov     rax, [rbx + 0x10]
        lock bts qword ptr [rsi], rax
        setc    byte ptr [rbx + 0x40]       # R0 = the old bit (the host reads its low byte)
        signal
op_btr:
        mov     rsi, [rbx + 0x08]
        mov     rax, [rbx + 0x10]
        lock btr qword ptr [rsi], rax
        setc    byte ptr [rbx + 0x40]
        signal

op_rdbytes:                                 # A0 = GVA, A1 = ladder entry, A2 = length (1..4096); the
                                            # host sets the ladder's continuation (+0x38) to op_nop
        mov     rsi, [rbx + 0x08]
        lea     rdi, [rbx + 4096]
        mov     rcx, [rbx + 0x18]
        jmp     qword ptr [rbx + 0x10]
op_wrbytes:
        lea     rsi, [rbx + 4096]
        mov     rdi, [rbx + 0x08]
        mov     rcx, [rbx + 0x18]
        jmp     qword ptr [rbx + 0x10]

# Copies RCX bytes from [RSI] to [RDI] with as few instructions as the length allows (every one
# costs microseconds on PVM; REP MOVSB is emulated a byte at a time). For RCX >= 8 the host enters
# the qword ladder at the pair that copies qword RCX/8 - 1 (pairs copy descending offsets, down to
# 0), and the last, possibly overlapping, qword at RCX - 8 follows; for RCX < 8 it enters the byte
# ladder at the pair for byte RCX - 1. Each pair is 14 (qword) or 6 (byte) bytes of code; the
# displacements are spelled as bytes so that every pair has the same size. Both ladders end with
# `jmp [rbx + 0x38]`: op_nop (signal) for readBytes / writeBytes, the rest of op_slotsend for it.
        .balign 16
qword_ladder:
        .set    off, 4088
        .rept   512
        .byte   0x48, 0x8b, 0x86            # mov rax, [rsi + disp32]
        .long   off
        .byte   0x48, 0x89, 0x87            # mov [rdi + disp32], rax
        .long   off
        .set    off, off - 8
        .endr
        mov     rax, [rsi + rcx - 8]
        mov     [rdi + rcx - 8], rax
        jmp     qword ptr [rbx + 0x38]

        .balign 16
byte_ladder:
        .set    off, 6
        .rept   7
        .byte   0x8a, 0x46, off             # mov al, [rsi + disp8]
        .byte   0x88, 0x47, off             # mov [rdi + disp8], al
        .set    off, off - 1
        .endr
        jmp     qword ptr [rbx + 0x38]

op_cpuid:
        mov     r15, rbx
        mov     eax, dword ptr [r15 + 0x08]
        mov     ecx, dword ptr [r15 + 0x10]
        cpuid
        mov     [r15 + 0x40], rax
        mov     [r15 + 0x48], rbx
        mov     [r15 + 0x50], rcx
        mov     [r15 + 0x58], rdx
        mov     rbx, r15
        signal_port

op_rdmsr:
        mov     ecx, dword ptr [rbx + 0x08]
        rdmsr
        mov     [rbx + 0x40], eax
        mov     [rbx + 0x44], edx
        signal_port
op_wrmsr:
        mov     ecx, dword ptr [rbx + 0x08]
        mov     eax, dword ptr [rbx + 0x10]
        mov     edx, dword ptr [rbx + 0x14]
        wrmsr
        signal_port

op_rdcr:
        mov     rcx, [rbx + 0x08]
        cmp     rcx, 0
        je      1f
        cmp     rcx, 2
        je      2f
        cmp     rcx, 3
        je      3f
        mov     rax, cr4
        jmp     4f
1:      mov     rax, cr0
        jmp     4f
2:      mov     rax, cr2
        jmp     4f
3:      mov     rax, cr3
4:      mov     [rbx + 0x40], rax
        signal

op_wrcr:
        mov     rcx, [rbx + 0x08]
        mov     rax, [rbx + 0x10]
        cmp     rcx, 0
        je      1f
        cmp     rcx, 3
        je      3f
        mov     cr4, rax
        signal
1:      mov     cr0, rax
        signal
3:      mov     cr3, rax
        signal

op_in8:
        signal_unless_exit
        mov     edx, dword ptr [rbx + 0x08]
        xor     eax, eax
        in      al, dx
        mov     [rbx + 0x40], rax
        exit_next
op_in16:
        signal_unless_exit
        mov     edx, dword ptr [rbx + 0x08]
        xor     eax, eax
        in      ax, dx
        mov     [rbx + 0x40], rax
        exit_next
op_in32:
        signal_unless_exit
        mov     edx, dword ptr [rbx + 0x08]
        in      eax, dx
        mov     [rbx + 0x40], rax
        exit_next

op_out8:
        signal_unless_exit
        mov     edx, dword ptr [rbx + 0x08]
        mov     eax, dword ptr [rbx + 0x10]
        out     dx, al
        exit_next
op_out16:
        signal_unless_exit
        mov     edx, dword ptr [rbx + 0x08]
        mov     eax, dword ptr [rbx + 0x10]
        out     dx, ax
        exit_next
op_out32:
        signal_unless_exit
        mov     edx, dword ptr [rbx + 0x08]
        mov     eax, dword ptr [rbx + 0x10]
        out     dx, eax
        exit_next

op_hlt:
        signal_unless_exit
        hlt
        jmp     qword ptr [rbx]

op_ud2:
        ud2

op_vmcall:
        mov     r15, rbx
        mov     rax, [r15 + 0x08]
        mov     rbx, [r15 + 0x10]
        mov     rcx, [r15 + 0x18]
        mov     rdx, [r15 + 0x20]
        mov     rsi, [r15 + 0x28]
        vmcall
        mov     rbx, r15
        mov     [rbx + 0x40], rax
        signal_port

op_lidt:
        lidt    [rbx + 0x08]                # limit (u16) at +0x08, base (u64) at +0x0a
        signal

op_mmio_rd8:                               # A0 = GVA in the MMIO window
        signal_unless_exit
        mov     rsi, [rbx + 0x08]
        invlpg  [rsi]
        xor     eax, eax
        mov     al, byte ptr [rsi]
        mov     [rbx + 0x40], rax
        jmp     qword ptr [rbx]

op_mmio_rd16:                               # A0 = GVA in the MMIO window
        signal_unless_exit
        mov     rsi, [rbx + 0x08]
        invlpg  [rsi]
        xor     eax, eax
        mov     ax, word ptr [rsi]
        mov     [rbx + 0x40], rax
        jmp     qword ptr [rbx]

op_mmio_rd32:                               # A0 = GVA in the MMIO window
        signal_unless_exit
        mov     rsi, [rbx + 0x08]
        invlpg  [rsi]
        mov     eax, dword ptr [rsi]
        mov     [rbx + 0x40], rax
        jmp     qword ptr [rbx]

op_mmio_rd64:                               # A0 = GVA in the MMIO window
        signal_unless_exit
        mov     rsi, [rbx + 0x08]
        invlpg  [rsi]
        mov     rax, qword ptr [rsi]
        mov     [rbx + 0x40], rax
        jmp     qword ptr [rbx]

op_mmio_wr8:                               # A0 = GVA in the MMIO window, A1 = value
        signal_unless_exit
        mov     rsi, [rbx + 0x08]
        mov     rax, [rbx + 0x10]
        invlpg  [rsi]
        mov     byte ptr [rsi], al
        jmp     qword ptr [rbx]

op_mmio_wr16:                               # A0 = GVA in the MMIO window, A1 = value
        signal_unless_exit
        mov     rsi, [rbx + 0x08]
        mov     rax, [rbx + 0x10]
        invlpg  [rsi]
        mov     word ptr [rsi], ax
        jmp     qword ptr [rbx]

op_mmio_wr32:                               # A0 = GVA in the MMIO window, A1 = value
        signal_unless_exit
        mov     rsi, [rbx + 0x08]
        mov     rax, [rbx + 0x10]
        invlpg  [rsi]
        mov     dword ptr [rsi], eax
        jmp     qword ptr [rbx]

op_mmio_wr64:                               # A0 = GVA in the MMIO window, A1 = value
        signal_unless_exit
        mov     rsi, [rbx + 0x08]
        mov     rax, [rbx + 0x10]
        invlpg  [rsi]
        mov     qword ptr [rsi], rax
        jmp     qword ptr [rbx]

op_pvalidate:
        mov     rax, [rbx + 0x08]           # RAX = GVA, ECX = 0 (4 KiB page), EDX = validate
        xor     ecx, ecx
        mov     rdx, [rbx + 0x10]
        .byte   0xf2, 0x0f, 0x01, 0xff      # pvalidate
        mov     [rbx + 0x40], rax
        signal_port

op_vmgexit:
        .byte   0xf3, 0x0f, 0x01, 0xd9      # vmgexit (rep vmmcall)
        signal

op_tdcall:
        mov     rax, [rbx + 0x08]
        .byte   0x66, 0x0f, 0x01, 0xcc      # tdcall
        mov     [rbx + 0x40], rax
        signal_port

# XGETBV / XSETBV / XSAVE / XRSTOR (#UD unless the guest's CR4.OSXSAVE). XSAVE and XRSTOR take
# the 64-bit forms (REX.W: FIP and FDP as 64-bit offsets, the layout the kvm_xsave uABI uses); the
# requested-feature bitmap is EDX:EAX. EDX holds the agent port otherwise: signal_port restores it.
op_xgetbv:                                  # A0 = XCR index; R0 = EDX:EAX
        mov     ecx, dword ptr [rbx + 0x08]
        xgetbv
        mov     [rbx + 0x40], eax
        mov     [rbx + 0x44], edx
        signal_port
op_xsetbv:                                  # A0 = XCR index, A1 = value
        mov     ecx, dword ptr [rbx + 0x08]
        mov     eax, dword ptr [rbx + 0x10]
        mov     edx, dword ptr [rbx + 0x14]
        xsetbv
        signal_port
op_xsave:                                   # A0 = GVA of the area, A1 = RFBM
        mov     rsi, [rbx + 0x08]
        mov     eax, dword ptr [rbx + 0x10]
        mov     edx, dword ptr [rbx + 0x14]
        xsave64 [rsi]
        signal_port
op_xrstor:                                  # A0 = GVA of the area, A1 = RFBM
        mov     rsi, [rbx + 0x08]
        mov     eax, dword ptr [rbx + 0x10]
        mov     edx, dword ptr [rbx + 0x14]
        xrstor64 [rsi]
        signal_port

# A slot send (Guest.slotSend): the ucall-shaped sequence of loads, LOCK BTS, stores, a load, the
# OUT and LOCK BTR in one operation, each as the same instruction the one-operation-at-a-time path
# executes, in the same order. An exception stops it where it was raised (the host finds the step
# from the faulting RIP and goes on one operation at a time, where the fault recurs in its own
# operation). Mailbox: +0x08 GVA of the
# pool global, +0x10 the pool it must hold (the bitmap's GVA), +0x18 GVA of the count global, +0x20
# the count it must hold, +0x28 the bit, +0x30 the port, +0x38 the tail, +0x88 the slot's
# GVA, +0x90 the ladder entry, +0x98 the length (the data is in the data page), +0xa0 GVA of the
# value to send, +0xa8 GVA of the selector global, +0xb0 the selector it must hold, +0xb8
# 0xffffffff. R0's low byte (the host zeroes it): 0 sent, 1 a global held another value (nothing
# else done), 2 the bit was already set (nothing else done), 3 the slot was filled but the
# selector held another value or the value does not fit 32 bits (no OUT, the bit stays set).
# R8 and R9 keep the bitmap and the bit across the ladder and the OUT exit; the LOCK BTR runs when
# the host resumes the vCPU, before the next operation.
op_slotsend:
        signal_unless_exit
        mov     rsi, [rbx + 0x08]
        mov     r8, [rbx + 0x10]
        cmp     [rsi], r8
        jne     1f
        mov     rsi, [rbx + 0x18]
        mov     rax, [rbx + 0x20]
        cmp     [rsi], rax
        jne     1f
        mov     r9, [rbx + 0x28]
        lock bts qword ptr [r8], r9
        jc      2f
        lea     rsi, [rbx + 4096]
        mov     rdi, [rbx + 0x88]
        mov     rcx, [rbx + 0x98]
        jmp     qword ptr [rbx + 0x90]
1:      mov     byte ptr [rbx + 0x40], 1
        signal
2:      mov     byte ptr [rbx + 0x40], 2
        signal
op_slotsend_tail:
        mov     rsi, [rbx + 0xa0]
        mov     rax, [rsi]
        mov     rsi, [rbx + 0xa8]
        mov     rcx, [rbx + 0xb0]
        cmp     [rsi], rcx
        jne     3f
        cmp     rax, [rbx + 0xb8]
        ja      3f
        mov     edx, dword ptr [rbx + 0x30]
        out     dx, eax
        lock btr qword ptr [r8], r9         # the release, when the host resumes the vCPU
        exit_next
3:      mov     byte ptr [rbx + 0x40], 3
        signal

# ---- exceptions: 32 stubs of 16 bytes each, then the common handler ---------------------------
# Vectors 8, 10-14, 17, 21, 29 and 30 push an error code; the others get a dummy 0 so that every
# frame is [vector][error code][RIP][CS][RFLAGS][RSP][SS].

        .macro  stub_noerr vec
        .balign 16
        push    0
        push    \vec
        jmp     exc_common
        .endm
        .macro  stub_err vec
        .balign 16
        push    \vec
        jmp     exc_common
        .endm

        .balign 16
stubs:
        stub_noerr 0
        stub_noerr 1
        stub_noerr 2
        stub_noerr 3
        stub_noerr 4
        stub_noerr 5
        stub_noerr 6
        stub_noerr 7
        stub_err   8
        stub_noerr 9
        stub_err   10
        stub_err   11
        stub_err   12
        stub_err   13
        stub_err   14
        stub_noerr 15
        stub_noerr 16
        stub_err   17
        stub_noerr 18
        stub_noerr 19
        stub_noerr 20
        stub_err   21
        stub_noerr 22
        stub_noerr 23
        stub_noerr 24
        stub_noerr 25
        stub_noerr 26
        stub_noerr 27
        stub_noerr 28
        stub_err   29
        stub_err   30
        stub_noerr 31

        .balign 16
exc_common:
        mov     rbx, rsp                    # the mailbox is the page after the stack page
        and     rbx, -4096
        add     rbx, 4096
        mov     rax, [rsp]
        mov     [rbx + 0x68], rax           # vector
        mov     rax, [rsp + 8]
        mov     [rbx + 0x70], rax           # error code (0 when the CPU pushed none)
        mov     rax, cr2
        mov     [rbx + 0x78], rax           # CR2 (meaningful for #PF only)
        mov     rax, [rsp + 16]
        mov     [rbx + 0x80], rax           # faulting RIP
        mov     qword ptr [rbx + 0x60], 1
        mov     rsp, rbx                    # reset the stack: no IRET, the agent loops again
        cld
        signal_port
