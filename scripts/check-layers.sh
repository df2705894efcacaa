#!/usr/bin/env bash
# The layering of src/: a file may include headers of its own directory and of the
# directories below it, never above. Prints the directory-level dependency listing and
# exits 1 on an include that points up.
#   util < formats < kernels < tokenizer < model < backends < runtime < tools < server < cli
# kernels are math on stored tensors and know nothing of Gemma; model is the Gemma 4
# description (spec, tensor catalogue, validated weights); backends implement the
# forward's ops for a model; runtime holds the one forward, sessions and generation.
set -euo pipefail
cd "$(dirname "$0")/../src"
order=(util formats kernels tokenizer model backends runtime tools server cli)
rank() { local i; for i in "${!order[@]}"; do [[ ${order[$i]} == "$1" ]] && { echo "$i"; return; }; done; echo -1; }
bad=0
declare -A seen
while IFS= read -r line; do
  file=${line%%:*}
  target=${line#*\"}; target=${target%%/*}
  dir=${file%%/*}
  [[ $dir == "$target" ]] && continue
  rd=$(rank "$dir"); rt=$(rank "$target")
  if ((rd < 0)); then echo "check-layers: $file is in src/$dir/, which has no rank; add it to the order in $0"; bad=1; continue; fi
  if ((rt < 0 || rt > rd)); then echo "check-layers: $file includes $target/ (above $dir/): ${line#*:}"; bad=1; fi
  seen["$dir -> $target"]=1
done < <(grep -rHo '#include "[a-z_0-9]*/[^"]*"' --include='*.h' --include='*.cc' .  | sed 's#^\./##')
printf '%s\n' "${!seen[@]}" | sort
exit $bad
