#!/usr/bin/env bash
# Run by the postgres image on first start (empty data volume) only. Applies every up-migration
# mounted at /sql in file-name order; `*.rollback.sql` files are the down-migrations and are skipped.
# The image either executes or sources this file, so it avoids `exit` and sets nothing the
# entrypoint does not already set.
set -Eeo pipefail

apply_orderstream_migrations() {
  local file
  while IFS= read -r file; do
    [ -e "$file" ] || continue          # the glob matched nothing
    case "$file" in
      *.rollback.sql) continue ;;
    esac
    echo "orderstream: applying $file"
    psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -f "$file"
  done < <(printf '%s\n' /sql/[0-9]*.sql | LC_ALL=C sort)
}

apply_orderstream_migrations
