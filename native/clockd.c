/*
 * effect-qemu-clockd: the test guest's clock daemon (scripts/build-guest.sh).
 *
 * A clone or restore of a guest resumes with the clock it had when it was
 * saved. The guest agent can set it (`guest-set-time`), but every call makes
 * qemu-ga fork and exec /sbin/hwclock, and in a clone all of that runs through
 * a translation cache that starts cold: some 80 ms of TCG CPU per clone, plus
 * the agent's sync. This daemon instead sits in read() on a virtio-serial port
 * (`org.effect-qemu.clock`, opened by the init script): the host hands QEMU a
 * line `<nanoseconds since the epoch>\n` for that port (testing/Guest.ts) and
 * the daemon sets CLOCK_REALTIME from it, with no fork and no agent.
 *
 * When the host side closes (the chardev reached the end of its input, or was
 * never connected), read() returns 0 at once: the daemon then waits for
 * SIGIO, which the port raises when the host side opens again or data comes
 * (O_ASYNC), with a timeout as a safety net, instead of spinning; a line left
 * unfinished then is dropped. Lines that are not a plausible time (before
 * 2000, past a 64-bit count, other bytes) are ignored. No libc: a few
 * kilobytes. x86-64 Linux only.
 */
#include "nolibc.h"

#define SYS_read 0
#define SYS_open 2
#define SYS_rt_sigprocmask 14
#define SYS_getpid 39
#define SYS_fcntl 72
#define SYS_exit 60
#define SYS_rt_sigtimedwait 128
#define SYS_clock_settime 227
#define O_RDWR 2
#define O_ASYNC 020000
#define O_CLOEXEC 02000000
#define F_SETFL 4
#define F_SETOWN 8
#define SIG_BLOCK 0
#define SIGIO 29
#define CLOCK_REALTIME 0
/* 2000-01-01T00:00:00Z: anything earlier is not a time the host sent. */
#define EARLIEST_NS 946684800000000000L
#define LONG_MAX 9223372036854775807L

static void set_clock(long ns) {
  if (ns < EARLIEST_NS) return;
  struct timespec ts = { ns / 1000000000L, ns % 1000000000L };
  sys4(SYS_clock_settime, CLOCK_REALTIME, (long)&ts, 0, 0);
}

__attribute__((noreturn, used)) void clockd_main(long *sp) {
  long argc = sp[0];
  char **argv = (char **)(sp + 1);
  if (argc != 2) sys4(SYS_exit, 2, 0, 0, 0);
  long fd = sys4(SYS_open, (long)argv[1], O_RDWR | O_CLOEXEC, 0, 0);
  if (fd < 0) sys4(SYS_exit, 1, 0, 0, 0);
  /* SIGIO blocked: it stays pending until rt_sigtimedwait takes it (no handler, no race). */
  unsigned long sigio = 1UL << (SIGIO - 1);
  sys4(SYS_rt_sigprocmask, SIG_BLOCK, (long)&sigio, 0, 8);
  sys4(SYS_fcntl, fd, F_SETOWN, sys4(SYS_getpid, 0, 0, 0, 0), 0);
  sys4(SYS_fcntl, fd, F_SETFL, O_ASYNC, 0);
  char buf[256];
  long ns = 0;
  int digits = 0, bad = 0;
  for (;;) {
    long n = sys4(SYS_read, fd, (long)buf, sizeof buf, 0);
    if (n <= 0) {
      /* The host side closed: a line it left unfinished is dropped, not joined to the next input. */
      ns = 0, digits = 0, bad = 0;
      struct timespec wait = { 10, 0 };
      sys4(SYS_rt_sigtimedwait, (long)&sigio, 0, (long)&wait, 8);
      continue;
    }
    for (long i = 0; i < n; i++) {
      char c = buf[i];
      if (c == '\n') {
        if (!bad && digits > 0) set_clock(ns);
        ns = 0, digits = 0, bad = 0;
      } else if (c >= '0' && c <= '9' && ns <= (LONG_MAX - 9) / 10) {
        ns = ns * 10 + (c - '0'), digits++;
      } else {
        bad = 1;
      }
    }
  }
}

NOLIBC_START(clockd_main);
