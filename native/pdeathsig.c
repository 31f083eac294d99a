/*
 * effect-qemu-exec: run a program that dies with its parent.
 *
 *   effect-qemu-exec PARENT_PID PROGRAM [ARGS...]
 *
 * Sets PR_SET_PDEATHSIG to SIGKILL, checks that the parent is still the one
 * that spawned us (it may have died before the prctl took effect), then
 * execs PROGRAM. QEMU 7.2 has no `-run-with exit-with-parent`, and Node cannot
 * run code in a child between fork and exec; `setpriv --pdeathsig KILL` does
 * the same but costs about three times as much to start, because it is
 * dynamically linked and does more work. Built statically by node-gyp.
 *
 * Exit status 127 with a message on stderr when PROGRAM cannot be executed,
 * like a shell.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s PARENT_PID PROGRAM [ARGS...]\n", argv[0]);
    return 127;
  }
  char *end = NULL;
  long parent = strtol(argv[1], &end, 10);
  if (end == argv[1] || *end != '\0' || parent <= 0) {
    fprintf(stderr, "%s: bad parent pid '%s'\n", argv[0], argv[1]);
    return 127;
  }
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
    fprintf(stderr, "%s: prctl: %s\n", argv[0], strerror(errno));
    return 127;
  }
  /* The parent died between fork and prctl: nobody will ever reap or kill us. */
  if (getppid() != (pid_t)parent) return 127;
  execvp(argv[2], argv + 2);
  fprintf(stderr, "%s: cannot execute %s: %s\n", argv[0], argv[2], strerror(errno));
  return 127;
}
