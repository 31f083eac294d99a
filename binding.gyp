# Native parts, built by `npm ci` (node-gyp):
# - fdpass: an N-API addon that passes file descriptors over AF_UNIX sockets
#   (SCM_RIGHTS), which Node's net module cannot do on its own. Plain N-API so
#   the binary is ABI-stable across Node versions and needs no npm dependencies.
# - spawn: an N-API addon that starts QEMU with posix_spawn (no fork of the
#   whole Node process) and reports its exit through a pidfd on the event loop.
# - effect-qemu-exec: a tiny static program that makes QEMU die with the Node
#   process (PR_SET_PDEATHSIG) and then execs it.
# - effect-qemu-hwclock: the test guest's /sbin/hwclock (scripts/build-guest.sh),
#   which the guest agent runs after every clock setting: no libc, a few KB.
# - effect-qemu-clockd: the test guest's clock daemon, which sets the clock from
#   the host's lines on a virtio-serial port (how Guest clones set theirs).
{
  "targets": [
    {
      "target_name": "fdpass",
      "sources": ["native/fdpass.cc"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-Wall", "-Wextra"],
      "xcode_settings": {
        "WARNING_CFLAGS": ["-Wall", "-Wextra"]
      }
    },
    {
      "target_name": "spawn",
      "sources": ["native/spawn.cc"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-Wall", "-Wextra"],
      "cflags_cc": ["-Wall", "-Wextra"],
      "xcode_settings": {
        "WARNING_CFLAGS": ["-Wall", "-Wextra"]
      }
    },
    {
      "target_name": "effect-qemu-exec",
      "type": "executable",
      "sources": ["native/pdeathsig.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"],
      "conditions": [
        ["OS=='linux'", { "ldflags": ["-static"] }]
      ]
    },
    {
      "target_name": "effect-qemu-hwclock",
      "conditions": [
        ["OS=='linux' and target_arch=='x64'", {
          "type": "executable",
          "sources": ["native/hwclock.c"],
          "cflags": ["-Wall", "-Wextra", "-Os", "-fno-stack-protector", "-fno-builtin", "-fno-pie"],
          "ldflags": ["-nostdlib", "-static", "-no-pie"]
        }, {
          "type": "none"
        }]
      ]
    },
    {
      "target_name": "effect-qemu-clockd",
      "conditions": [
        ["OS=='linux' and target_arch=='x64'", {
          "type": "executable",
          "sources": ["native/clockd.c"],
          "cflags": ["-Wall", "-Wextra", "-Os", "-fno-stack-protector", "-fno-builtin", "-fno-pie"],
          "ldflags": ["-nostdlib", "-static", "-no-pie"]
        }, {
          "type": "none"
        }]
      ]
    }
  ]
}
