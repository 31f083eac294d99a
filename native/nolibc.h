/*
 * What the test guest's libc-free helpers (hwclock.c, clockd.c) share: a raw
 * x86-64 Linux system call and the entry point that hands `main` the initial
 * stack (argc, argv..., NULL, envp...). Statically linked with -nostdlib.
 */
#ifndef EFFECT_QEMU_NOLIBC_H
#define EFFECT_QEMU_NOLIBC_H

struct timespec {
  long tv_sec, tv_nsec;
};

/* System call `n` with up to four arguments (the fourth goes in r10, not rcx). */
static long sys4(long n, long a, long b, long c, long d) {
  long r;
  register long r10 __asm__("r10") = d;
  __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
  return r;
}

/* _start: a zeroed frame pointer, the stack aligned, then main(sp), which must not return. */
#define NOLIBC_START(main) \
  __asm__(".globl _start\n_start:\n xor %ebp,%ebp\n mov %rsp,%rdi\n and $-16,%rsp\n call " #main "\n")

#endif
