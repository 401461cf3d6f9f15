/* The C reference of the agent benchmarks: a ucall-shaped round trip as the selftests' host does it
 * (tools/testing/selftests/kvm/lib/x86/ucall.c: ucall_arch_get_ucall() reads RDI with KVM_GET_REGS;
 * lib/ucall_common.c: get_ucall() copies the struct ucall out of guest memory).
 *   agent-baseline ucall N   N times: KVM_RUN -> KVM_EXIT_IO on port 0x1000 -> KVM_GET_REGS ->
 *                            copy the 1096-byte struct ucall at the GPA the guest sent; prints ns each.
 * The guest (real mode, CS base 0, at 0x1000): mov eax, 0x2000; out 0x1000, eax (through DX); jmp.
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) { perror(what); exit(1); }

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

struct ucall { unsigned long cmd, args[7]; char buffer[1024]; unsigned long gpa; };

int main(int argc, char **argv) {
  if (argc < 3 || strcmp(argv[1], "ucall")) { fprintf(stderr, "usage: %s ucall N\n", argv[0]); return 2; }
  long n = atol(argv[2]);
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) die("open /dev/kvm");
  int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  size_t mem_size = 0x10000;
  unsigned char *mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) die("mmap memory");
  struct kvm_userspace_memory_region region = { .slot = 0, .guest_phys_addr = 0, .memory_size = mem_size,
                                                 .userspace_addr = (unsigned long)mem };
  /* 66 b8 00 20 00 00  mov eax, 0x2000 | ba 00 10  mov dx, 0x1000 | 66 ef  out dx, eax | eb f4  jmp */
  static const unsigned char code[] = { 0x66, 0xb8, 0x00, 0x20, 0x00, 0x00, 0xba, 0x00, 0x10, 0x66, 0xef, 0xeb, 0xf3 };
  memcpy(mem + 0x1000, code, sizeof code);
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) die("KVM_CREATE_VM");
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) die("KVM_CREATE_VCPU");
  struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (run == MAP_FAILED) die("mmap kvm_run");
  struct kvm_sregs sregs;
  if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) die("KVM_GET_SREGS");
  sregs.cs.base = 0;
  sregs.cs.selector = 0;
  if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) die("KVM_SET_SREGS");
  struct kvm_regs regs = { .rip = 0x1000, .rflags = 2 };
  if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");
  struct ucall uc;
  unsigned long sum = 0;
  long warm = n / 10 + 1;
  double t0 = 0;
  for (long i = -warm; i < n; i++) {
    if (i == 0) t0 = now_ns();
    if (ioctl(vcpu, KVM_RUN, 0) < 0 || run->exit_reason != KVM_EXIT_IO || run->io.port != 0x1000) die("KVM_RUN");
    if (ioctl(vcpu, KVM_GET_REGS, &regs) < 0) die("KVM_GET_REGS");
    unsigned int gpa = *(unsigned int *)((char *)run + run->io.data_offset);
    memcpy(&uc, mem + gpa, sizeof uc);
    sum += uc.cmd + regs.rip;
  }
  printf("%.1f\n", (now_ns() - t0) / n);
  return sum == 0xdeadbeef;
}
