// fdpass: send file descriptors over a connected AF_UNIX stream socket with
// SCM_RIGHTS. Node's net module cannot attach ancillary data, and QEMU's QMP
// `getfd`/`add-fd` commands need exactly that. Written against the plain C
// N-API (node_api.h) so there is no dependency on node-addon-api and the
// binary stays ABI-stable across Node releases.

#include <node_api.h>

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

// macOS has no MSG_NOSIGNAL (it uses SO_NOSIGPIPE); Node already ignores
// SIGPIPE process-wide, so dropping the flag there is harmless.
#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

namespace {

// JS callers branch on the errno name (as Node's own errors do), so map the
// values sendmsg(2) documents explicitly; anything else falls back to glibc's
// lookup where available.
const char* ErrnoName(int err) {
  switch (err) {
    case EAGAIN: return "EAGAIN";
#if defined(EWOULDBLOCK) && EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK: return "EWOULDBLOCK";
#endif
    case EBADF: return "EBADF";
    case ENOTSOCK: return "ENOTSOCK";
    case EPIPE: return "EPIPE";
    case ECONNRESET: return "ECONNRESET";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ENOTCONN: return "ENOTCONN";
    case EDESTADDRREQ: return "EDESTADDRREQ";
    case EISCONN: return "EISCONN";
    case EINVAL: return "EINVAL";
    case EMSGSIZE: return "EMSGSIZE";
    case ENOBUFS: return "ENOBUFS";
    case ENOMEM: return "ENOMEM";
    case EFAULT: return "EFAULT";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EOPNOTSUPP: return "EOPNOTSUPP";
#ifdef ETOOMANYREFS
    case ETOOMANYREFS: return "ETOOMANYREFS";
#endif
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case EINTR: return "EINTR";
    default: break;
  }
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  const char* name = strerrorname_np(err);
  if (name != nullptr) return name;
#endif
  return "UNKNOWN";
}

// Throws an Error whose `code` is the errno name. A failed throw leaves a
// pending exception already, so the status is deliberately ignored.
void ThrowErrno(napi_env env, int err) {
  const char* name = ErrnoName(err);
  const char* desc = strerror(err);
  size_t len = strlen("sendmsg: ") + strlen(desc) + strlen(" (") + strlen(name) + strlen(")") + 1;
  char* msg = static_cast<char*>(malloc(len));
  if (msg == nullptr) {
    napi_throw_error(env, name, desc);
    return;
  }
  snprintf(msg, len, "sendmsg: %s (%s)", desc, name);
  napi_throw_error(env, name, msg);
  free(msg);
}

// Validation failures share the EINVAL code so JS sees one shape of error.
napi_value ThrowInvalid(napi_env env, const char* msg) {
  napi_throw_type_error(env, "EINVAL", msg);
  return nullptr;
}

// Reads a JS number that must be a non-negative int32 (a file descriptor);
// a silent truncation of 3.5 or -1 would pass the wrong fd to the kernel.
bool GetFd(napi_env env, napi_value value, int* out) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_number) return false;
  double d;
  if (napi_get_value_double(env, value, &d) != napi_ok) return false;
  if (!(d >= 0 && d <= INT32_MAX) || floor(d) != d) return false;
  *out = static_cast<int>(d);
  return true;
}

// sendFds(sockFd: number, fds: number[], data: Uint8Array): number
napi_value SendFds(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok) return nullptr;
  if (argc < 3) return ThrowInvalid(env, "sendFds expects (sockFd, fds, data)");

  int sock;
  if (!GetFd(env, argv[0], &sock)) return ThrowInvalid(env, "sockFd must be a non-negative integer");

  bool is_array = false;
  if (napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array) {
    return ThrowInvalid(env, "fds must be an array of file descriptors");
  }
  uint32_t nfds = 0;
  if (napi_get_array_length(env, argv[1], &nfds) != napi_ok) return nullptr;

  bool is_typed = false;
  if (napi_is_typedarray(env, argv[2], &is_typed) != napi_ok || !is_typed) {
    return ThrowInvalid(env, "data must be a Uint8Array");
  }
  napi_typedarray_type ta_type;
  size_t data_len = 0;
  void* data_ptr = nullptr;
  if (napi_get_typedarray_info(env, argv[2], &ta_type, &data_len, &data_ptr, nullptr, nullptr) != napi_ok) {
    return nullptr;
  }
  if (ta_type != napi_uint8_array) return ThrowInvalid(env, "data must be a Uint8Array");
  // Ancillary data rides on payload bytes: on a stream socket a zero-length
  // sendmsg returns 0 and the kernel silently drops the descriptors.
  if (data_len == 0) return ThrowInvalid(env, "data must be non-empty");

  // Bound the allocation before trusting a JS-provided length; the kernel's
  // own limit (SCM_MAX_FD) is far below this anyway and reports EINVAL.
  if (nfds > 4096) return ThrowInvalid(env, "too many file descriptors");

  size_t ctl_len = nfds > 0 ? CMSG_SPACE(sizeof(int) * nfds) : 0;
  // calloc so padding in the cmsg buffer is zeroed, as the kernel expects.
  char* ctl = ctl_len > 0 ? static_cast<char*>(calloc(1, ctl_len)) : nullptr;
  if (ctl_len > 0 && ctl == nullptr) {
    ThrowErrno(env, ENOMEM);
    return nullptr;
  }

  struct iovec iov;
  iov.iov_base = data_ptr;
  iov.iov_len = data_len;

  struct msghdr msg;
  memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;

  if (nfds > 0) {
    msg.msg_control = ctl;
    msg.msg_controllen = ctl_len;
    struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    int* slots = reinterpret_cast<int*>(CMSG_DATA(cmsg));
    for (uint32_t i = 0; i < nfds; i++) {
      napi_value el;
      int fd;
      if (napi_get_element(env, argv[1], i, &el) != napi_ok || !GetFd(env, el, &fd)) {
        free(ctl);
        return ThrowInvalid(env, "fds must contain only non-negative integers");
      }
      // memcpy because CMSG_DATA is not guaranteed to be int-aligned.
      memcpy(slots + i, &fd, sizeof(int));
    }
  }

  ssize_t sent;
  do {
    // Node owns the socket and runs it non-blocking; MSG_DONTWAIT makes that
    // explicit so the event loop can never stall here, and MSG_NOSIGNAL turns
    // a closed peer into EPIPE instead of a signal.
    sent = sendmsg(sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  int err = errno;
  free(ctl);

  if (sent < 0) {
    ThrowErrno(env, err);
    return nullptr;
  }
  napi_value result;
  if (napi_create_double(env, static_cast<double>(sent), &result) != napi_ok) return nullptr;
  return result;
}

napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor desc = {
      "sendFds", nullptr, SendFds, nullptr, nullptr, nullptr, napi_enumerable, nullptr};
  if (napi_define_properties(env, exports, 1, &desc) != napi_ok) return nullptr;
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
