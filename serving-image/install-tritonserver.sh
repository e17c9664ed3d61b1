#!/bin/sh
# Makes the tritonserver bundled in the nvidia-pytriton wheel a regular `tritonserver` command: its default
# backend directory (/opt/tritonserver/backends) gets the python backend with the stub of this image's Python,
# and a wrapper puts the wheel's own libraries on the loader path. The python backend's stub finds its
# interpreter as `python3` on PATH: the venv's, so model.py sees the venv's packages (torch, kubestill ...).
set -eu
site=$(python3 -c 'import pytriton, os; print(os.path.dirname(list(pytriton.__path__)[0]))')
version=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
server=$site/pytriton/tritonserver
stub=$server/python_backend_stubs/$version/triton_python_backend_stub
[ -x "$stub" ] || { echo "nvidia-pytriton has no python backend stub for Python $version" >&2; exit 1; }
mkdir -p /opt/tritonserver/backends/python
for f in "$server"/backends/python/*; do ln -sf "$f" /opt/tritonserver/backends/python/; done
ln -sf "$stub" /opt/tritonserver/backends/python/triton_python_backend_stub
libdir=$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
cat > /usr/local/bin/tritonserver <<WRAPPER
#!/bin/sh
export LD_LIBRARY_PATH="$libdir:$site/nvidia_pytriton.libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$server/bin/tritonserver" "\$@"
WRAPPER
chmod 755 /usr/local/bin/tritonserver
# Fail the build, not the first StudentModel, when a library is missing.
if LD_LIBRARY_PATH="$libdir:$site/nvidia_pytriton.libs" ldd "$server/bin/tritonserver" "$stub" | grep 'not found'; then
  echo "tritonserver or its python stub misses a library (above)" >&2; exit 1
fi
