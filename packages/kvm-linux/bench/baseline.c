/* The C baseline of the kvm-linux benchmarks: the same loops as kvm-linux.bench.ts, in C.
 *   baseline exit N    N round trips of a real-mode guest doing OUT to port 0x80 in a loop
 *                      (KVM_RUN -> KVM_EXIT_IO -> KVM_RUN); prints ns per round trip.
 *   baseline create N  N times: KVM_CREATE_VM + one 64 KiB memslot + KVM_CREATE_VCPU + mmap of
 *                      kvm_run, then munmap and close; prints ns per iteration.
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

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: %s exit|create N\n", argv[0]); return 2; }
  long n = atol(argv[2]);
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) die("open /dev/kvm");
  int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  size_t mem_size = 0x10000;
  unsigned char *mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) die("mmap memory");
  struct kvm_userspace_memory_region region = { .slot = 0, .guest_phys_addr = 0, .memory_size = mem_size,
                                                 .userspace_addr = (unsigned long)mem };
  if (!strcmp(argv[1], "create")) {
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
      int vm = ioctl(kvm, KVM_CREATE_VM, 0);
      if (vm < 0) die("KVM_CREATE_VM");
      if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");
      int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
      if (vcpu < 0) die("KVM_CREATE_VCPU");
      void *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
      if (run == MAP_FAILED) die("mmap kvm_run");
      munmap(run, run_size);
      close(vcpu);
      close(vm);
    }
    printf("%.1f\n", (now_ns() - t0) / n);
    return 0;
  }
  /* exit: out 0x80, al; jmp $-2 at 0x1000, CS base 0. */
  static const unsigned char code[] = { 0xe6, 0x80, 0xeb, 0xfc };
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
  long warm = n / 10 + 1;
  for (long i = 0; i < warm; i++)
    if (ioctl(vcpu, KVM_RUN, 0) < 0 || run->exit_reason != KVM_EXIT_IO) die("KVM_RUN (warm-up)");
  double t0 = now_ns();
  for (long i = 0; i < n; i++)
    if (ioctl(vcpu, KVM_RUN, 0) < 0 || run->exit_reason != KVM_EXIT_IO) die("KVM_RUN");
  printf("%.1f\n", (now_ns() - t0) / n);
  return 0;
}
