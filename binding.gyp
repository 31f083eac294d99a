# Native addon that passes file descriptors over AF_UNIX sockets (SCM_RIGHTS),
# which Node's net module cannot do on its own. Plain N-API so the built
# binary is ABI-stable across Node versions and needs no npm dependencies.
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
    }
  ]
}
