#!/usr/bin/env bash
# Installs the Debian packages Herald needs to build and test, only those missing.
# Runs as root or through sudo; a no-op when everything is already there.
set -euo pipefail
# clang's sanitizer and libFuzzer runtimes (libclang-rt-14-dev) are only a recommendation of
# clang, and recommendations are not installed here: name them. Chromium needs a font to
# render the demo page's screenshot.
# libjsmn-dev: the bench's JSON tokenizer (bench/json.c), one header.
# libyajl-dev: the event parser of the HTTP publish body (broker/pubbody.c).
# The `openssl` command line makes the throwaway CA and certificates of tests/integration/test_tls.py.
pkgs=(build-essential cmake pkg-config clang libclang-rt-14-dev fonts-dejavu-core
      libuv1-dev liblmdb-dev libzmq3-dev libmsgpack-dev libhttp-parser-dev
      libjansson-dev libssl-dev libcurl4-openssl-dev libcmocka-dev libjsmn-dev
      libyajl-dev
      curl openssl python3 python3-zmq python3-msgpack lmdb-utils
      chromium
      libwbxml2-dev libsmpp34-dev tshark)
# libwbxml2 compiles WAP Push SI/SL to WBXML (transports/smpp/codec); libsmpp34 packs the submit_sm
# PDUs and tshark dissects them in the SMS/WAP wire cross-check (tests/unit/test_wap_wire.c).
# The sms/wappush transport (transports/smpp, smpp.so) links libsmpp34 too, and its integration
# tests (tests/integration/test_smpp*.py) capture the SMPP traffic on lo with tshark (as root).
# tshark's debconf question (wireshark-common/install-setuid) is answered by the
# noninteractive frontend below: the default, no setuid dumpcap.
# The browser tests run on node (>= 18, with `node --test`) and npm: Debian's, unless a node is
# already installed (e.g. from another source, which brings its own npm).
if ! command -v node >/dev/null 2>&1; then
  pkgs+=(nodejs npm)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
