# Sourced by the scripts make runs (run.sh, stack.sh): export the variables of ./.env that the
# environment does not set already, the precedence the service itself has (python-dotenv,
# orderstream/config.py load_env_file): the real environment, then .env, then the defaults.
# ENV_FILE names another file, ENV_FILE= (empty) none. Lines are KEY=VALUE (`export ` allowed),
# a value may be quoted with '' or ""; `#` starts a comment outside quotes.

load_env_file() {
  local file=${ENV_FILE-.env} line key value
  [[ -n $file && -f $file ]] || return 0
  while IFS= read -r line || [[ -n $line ]]; do
    [[ $line =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*=[[:space:]]*(.*)$ ]] || continue
    key=${BASH_REMATCH[2]}
    value=${BASH_REMATCH[3]}
    [[ -n ${!key+set} ]] && continue
    if [[ $value =~ ^\"([^\"]*)\" || $value =~ ^\'([^\']*)\' ]]; then
      value=${BASH_REMATCH[1]}
    else
      value=${value%%#*}
      value=${value%"${value##*[![:space:]]}"}
    fi
    export "$key=$value"
  done <"$file"
}
