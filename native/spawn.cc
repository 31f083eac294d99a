// spawn: start a child with posix_spawn and report its exit through a pidfd
// watched on Node's own event loop.
//
// Node's child_process.spawn forks: the kernel copies the page tables of the
// whole Node process, about 3 ms for a 100 MB process and more as it grows,
// on every QEMU launch. glibc's posix_spawn uses clone(CLONE_VM|CLONE_VFORK):
// no copy, a fraction of a millisecond whatever our size. The exit is read
// from a pidfd (Linux 5.3+) polled by libuv, and the child is reaped with
// waitid on its own pid (libuv reaps only the children it started).
//
// Only the common case is handled here: stdin from /dev/null, stdout and
// stderr to one descriptor (or /dev/null), a new session, default signal
// dispositions, an explicit environment. Everything else goes through Node.
// Plain C N-API plus libuv, like fdpass.

#include <node_api.h>
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace {

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

struct Watch {
  uv_poll_t poll;
  pid_t pid;
  int pidfd;
  napi_env env;
  napi_ref callback;
  napi_async_context context;
};

void ThrowErrno(napi_env env, int err, const char* what) {
  napi_value code, msg, error;
  const char* name = err == ENOENT ? "ENOENT" : err == EACCES ? "EACCES" : err == ENOEXEC ? "ENOEXEC"
                   : err == E2BIG ? "E2BIG" : err == EAGAIN ? "EAGAIN" : err == ENOMEM ? "ENOMEM"
                   : err == EMFILE ? "EMFILE" : err == ENOSYS ? "ENOSYS" : "EUNKNOWN";
  std::string text = std::string(what) + " " + name;
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, text.c_str(), NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, code, msg, &error);
  napi_value errnoValue;
  napi_create_int32(env, -err, &errnoValue);
  napi_set_named_property(env, error, "errno", errnoValue);
  napi_throw(env, error);
}

bool GetString(napi_env env, napi_value value, std::string* out) {
  size_t length;
  if (napi_get_value_string_utf8(env, value, nullptr, 0, &length) != napi_ok) return false;
  out->resize(length);
  return napi_get_value_string_utf8(env, value, &(*out)[0], length + 1, &length) == napi_ok;
}

bool GetStrings(napi_env env, napi_value array, std::vector<std::string>* out) {
  uint32_t length;
  if (napi_get_array_length(env, array, &length) != napi_ok) return false;
  out->resize(length);
  for (uint32_t i = 0; i < length; i++) {
    napi_value item;
    if (napi_get_element(env, array, i, &item) != napi_ok || !GetString(env, item, &(*out)[i])) return false;
  }
  return true;
}

std::vector<char*> Pointers(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (auto& s : strings) pointers.push_back(&s[0]);
  pointers.push_back(nullptr);
  return pointers;
}

void OnClosed(uv_handle_t* handle) {
  delete reinterpret_cast<Watch*>(handle->data);
}

void OnReadable(uv_poll_t* poll, int status, int) {
  Watch* watch = reinterpret_cast<Watch*>(poll->data);
  siginfo_t info;
  memset(&info, 0, sizeof info);
  int rc;
  do {
    rc = waitid(P_PID, watch->pid, &info, WEXITED | WNOHANG);
  } while (rc < 0 && errno == EINTR);
  // Not exited yet (a spurious wake-up): keep polling, unless polling itself failed.
  if (rc == 0 && info.si_pid == 0 && status == 0) return;
  uv_poll_stop(poll);
  close(watch->pidfd);
  napi_env env = watch->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value args[2], callback, global, ignored;
  if (rc == 0 && info.si_pid != 0 && info.si_code == CLD_EXITED) {
    napi_create_int32(env, info.si_status, &args[0]);
    napi_get_null(env, &args[1]);
  } else if (rc == 0 && info.si_pid != 0) {
    napi_get_null(env, &args[0]);
    napi_create_int32(env, info.si_status, &args[1]);
  } else {
    // Reaped by someone else (a waitpid(-1) elsewhere in the process): the status is lost.
    napi_get_null(env, &args[0]);
    napi_get_null(env, &args[1]);
  }
  napi_get_reference_value(env, watch->callback, &callback);
  napi_get_global(env, &global);
  napi_make_callback(env, watch->context, global, callback, 2, args, &ignored);
  napi_delete_reference(env, watch->callback);
  napi_async_destroy(env, watch->context);
  napi_close_handle_scope(env, scope);
  uv_close(reinterpret_cast<uv_handle_t*>(poll), OnClosed);
}

// spawn(file, argv, env, outFd, onExit(code, signal)) -> pid
napi_value Spawn(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, cbinfo, &argc, argv, nullptr, nullptr) != napi_ok || argc < 5) {
    napi_throw_type_error(env, nullptr, "spawn(file, argv, env, outFd, onExit)");
    return nullptr;
  }
  std::string file;
  std::vector<std::string> args, envs;
  int32_t outFd;
  if (!GetString(env, argv[0], &file) || !GetStrings(env, argv[1], &args) || !GetStrings(env, argv[2], &envs) ||
      napi_get_value_int32(env, argv[3], &outFd) != napi_ok) {
    napi_throw_type_error(env, nullptr, "spawn: bad arguments");
    return nullptr;
  }
  uv_loop_t* loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return nullptr;

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  if (outFd >= 0) {
    posix_spawn_file_actions_adddup2(&actions, outFd, 1);
    posix_spawn_file_actions_adddup2(&actions, outFd, 2);
  } else {
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  }
  // Node ignores SIGPIPE and may handle others: the child starts with every signal at its
  // default and none blocked, as libuv does for the children it starts. (glibc leaves its
  // two internal signals, 32 and 33, ignored; the child's own glibc takes them over.)
  sigset_t defaults, mask;
  sigfillset(&defaults);
  sigdelset(&defaults, SIGKILL);
  sigdelset(&defaults, SIGSTOP);
  sigemptyset(&mask);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setsigmask(&attr, &mask);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);

  std::vector<char*> argp = Pointers(args), envp = Pointers(envs);
  pid_t pid;
  int err = posix_spawnp(&pid, file.c_str(), &actions, &attr, argp.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (err != 0) {
    ThrowErrno(env, err, ("spawn " + file).c_str());
    return nullptr;
  }
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    // Cannot watch it: do not leave it running unwatched.
    int pidfdErr = errno;
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    ThrowErrno(env, pidfdErr, "pidfd_open");
    return nullptr;
  }
  fcntl(pidfd, F_SETFD, FD_CLOEXEC);
  Watch* watch = new Watch();
  watch->pid = pid;
  watch->pidfd = pidfd;
  watch->env = env;
  napi_value resourceName;
  napi_create_string_utf8(env, "effect-qemu:spawn", NAPI_AUTO_LENGTH, &resourceName);
  napi_create_reference(env, argv[4], 1, &watch->callback);
  napi_async_init(env, nullptr, resourceName, &watch->context);
  watch->poll.data = watch;
  uv_poll_init(loop, &watch->poll, pidfd);
  uv_poll_start(&watch->poll, UV_READABLE, OnReadable);
  napi_value result;
  napi_create_int32(env, pid, &result);
  return result;
}

// Whether this kernel has pidfd_open (checked on ourselves).
napi_value Supported(napi_env env, napi_callback_info) {
  int fd = static_cast<int>(syscall(SYS_pidfd_open, getpid(), 0));
  if (fd >= 0) close(fd);
  napi_value result;
  napi_get_boolean(env, fd >= 0, &result);
  return result;
}

napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor desc[] = {
      {"spawn", nullptr, Spawn, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"supported", nullptr, Supported, nullptr, nullptr, nullptr, napi_enumerable, nullptr}};
  if (napi_define_properties(env, exports, 2, desc) != napi_ok) return nullptr;
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
