#!/bin/sh
# Installs what building losskit's tests, benchmarks and examples needs on
# Debian 12, from Debian's packages, skipping what is already there.
# Uses sudo when not run as root.
set -eu
# bible-kjv (its `bible` program) and bible-kjv-text: the text of the next-word
# example (LinearCrossEntropy); bible-kjv is only a Recommends of the text
# package, which --no-install-recommends below would skip.
# zlib, Open MPI: the examples that read the shipped data sets and the
# data-parallel example (skipped with a message when missing); pkgconf
# (pkg-config): the test that consumes the installed losskit.pc.
pkgs="g++ cmake make pkgconf python3 libeigen3-dev catch2 libbenchmark-dev zlib1g-dev libopenmpi-dev openmpi-bin bible-kjv-text bible-kjv"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "installing:$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
