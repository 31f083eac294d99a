/*
 * effect-qemu-hwclock: `/sbin/hwclock` of the test guest (scripts/build-guest.sh).
 *
 * The guest agent's `guest-set-time` sets the clock and then runs
 * `/sbin/hwclock -w` (QGA always does); after every restore and clone the
 * library sets the guest clock that way. Busybox's hwclock costs a fork and an
 * exec of the 2 MB busybox through a translation cache that starts cold in a
 * clone. This program does `-w` itself (the system time, as UTC, into
 * /dev/rtc0 with RTC_SET_TIME: what busybox does in a guest without
 * /etc/adjtime) and hands any other use to busybox's applet. No libc: a few
 * kilobytes, no start-up work. x86-64 Linux only.
 */
#include "nolibc.h"

#define SYS_close 3
#define SYS_open 2
#define SYS_ioctl 16
#define SYS_execve 59
#define SYS_exit 60
#define SYS_clock_gettime 228
#define O_WRONLY 1
#define O_CLOEXEC 02000000
#define CLOCK_REALTIME 0
/* _IOW('p', 0x0a, struct rtc_time): nine ints. */
#define RTC_SET_TIME 0x4024700aL

struct rtc_time {
  int tm_sec, tm_min, tm_hour, tm_mday, tm_mon, tm_year, tm_wday, tm_yday, tm_isdst;
};

static int is(const char *a, const char *b) {
  while (*a && *a == *b) a++, b++;
  return *a == *b;
}

/* Seconds since the epoch to a UTC calendar date (days-from-civil inverted, proleptic Gregorian). */
static void utc(long secs, struct rtc_time *tm) {
  long days = secs / 86400, rem = secs % 86400;
  if (rem < 0) rem += 86400, days--;
  tm->tm_hour = (int)(rem / 3600);
  tm->tm_min = (int)(rem / 60 % 60);
  tm->tm_sec = (int)(rem % 60);
  tm->tm_wday = (int)(((days % 7) + 11) % 7); /* 1970-01-01 was a Thursday */
  long z = days + 719468;
  long era = (z >= 0 ? z : z - 146096) / 146097;
  long doe = z - era * 146097;
  long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  long mp = (5 * doy + 2) / 153;
  long month = mp < 10 ? mp + 3 : mp - 9;
  long year = yoe + era * 400 + (month <= 2);
  tm->tm_mday = (int)(doy - (153 * mp + 2) / 5 + 1);
  tm->tm_mon = (int)(month - 1);
  tm->tm_year = (int)(year - 1900);
  tm->tm_yday = 0;
  tm->tm_isdst = 0;
}

static int write_rtc(void) {
  struct timespec now;
  struct rtc_time tm;
  if (sys4(SYS_clock_gettime, CLOCK_REALTIME, (long)&now, 0, 0) != 0) return 0;
  utc(now.tv_sec, &tm);
  long fd = sys4(SYS_open, (long)"/dev/rtc0", O_WRONLY | O_CLOEXEC, 0, 0);
  if (fd < 0) return 0;
  long r = sys4(SYS_ioctl, fd, RTC_SET_TIME, (long)&tm, 0);
  sys4(SYS_close, fd, 0, 0, 0);
  return r == 0;
}

__attribute__((noreturn, used)) void hwclock_main(long *sp) {
  long argc = sp[0];
  char **argv = (char **)(sp + 1);
  char **envp = argv + argc + 1;
  if (argc == 2 && is(argv[1], "-w") && write_rtc()) sys4(SYS_exit, 0, 0, 0, 0);
  /* Anything else, or a failed write (busybox then says why): busybox's own hwclock. */
  argv[0] = "hwclock";
  sys4(SYS_execve, (long)"/bin/busybox", (long)argv, (long)envp, 0);
  sys4(SYS_exit, 127, 0, 0, 0);
  for (;;) {}
}

NOLIBC_START(hwclock_main);
