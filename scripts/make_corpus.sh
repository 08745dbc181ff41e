#!/usr/bin/env bash
# Builds a byte-level English corpus from Debian-packaged text (vim's help files, several
# MB of English prose; the GPL/license texts when vim is absent) into data/english.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p data
out=data/english.txt
src=$(ls /usr/share/vim/vim*/doc/*.txt 2>/dev/null || true)
if [ -z "$src" ]; then
  dpkg -s vim-runtime >/dev/null 2>&1 || { echo "make_corpus: installing vim-runtime for its English help text"; \
    ${SUDO:-$( [ "$(id -u)" = 0 ] || echo sudo )} apt-get install -y -qq --no-install-recommends vim-runtime >/dev/null; }
  src=$(ls /usr/share/vim/vim*/doc/*.txt)
fi
cat $src > "$out"
echo "make_corpus: $(wc -c < "$out") bytes in $out"
