#!/bin/sh
# A key service for tests: state in $STATE (a directory). create mints a key
# per rotation token (idempotent); revoke marks a key id revoked.
set -eu
stdin=$(cat)
tr '\0' ' ' < /proc/$$/cmdline > "$STATE/argv.$KEYWARDEN_ACTION" 2>/dev/null || true
case "$KEYWARDEN_ACTION" in
create)
	f="$STATE/token.$KEYWARDEN_ROTATION_TOKEN"
	if [ ! -f "$f" ]; then
		n=$(ls "$STATE" | grep -c '^token\.' || true)
		echo "sk-ant-api03-exectest$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')AA apikey_$n" > "$f"
	fi
	read -r key id < "$f"
	printf '{"api_key": "%s", "key_id": "%s"}\n' "$key" "$id"
	;;
revoke)
	printf '%s' "$stdin" > "$STATE/revoke.stdin"
	echo "$KEYWARDEN_KEY_ID" >> "$STATE/revoked"
	;;
*)
	echo "unknown action" >&2
	exit 2
	;;
esac
