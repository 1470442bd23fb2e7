#!/bin/sh
# End-to-end demo: make a busybox base image from the host, build the demo app (COPY + RUN),
# run it, and export it as an OCI layout. Uses a throw-away store unless PYBUILD_ROOT is set.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/pybuild-demo.XXXXXX)
export PYBUILD_ROOT=${PYBUILD_ROOT:-$work/store}
"$here/make-base.sh" "$work/base"
pybuild -t localhost/busybox:latest "$work/base"
pybuild -t demo:latest --build-arg GREETING=hello "$here/app"
pybuild images
pybuild run demo:latest
pybuild -t demo:latest --output "type=oci,dest=$work/demo-oci.tar" "$here/app"
echo "OCI layout written to $work/demo-oci.tar (store: $PYBUILD_ROOT)"
