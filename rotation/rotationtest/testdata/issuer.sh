#!/bin/sh
# A key service shared by processes, for the kill and crash tests: state in
# $STATE. create mints one key per rotation token (idempotent); revoke
# records every call in revoke.calls and marks the key revoked, or fails
# while the file fail-revoke exists (a revocation that cannot go on).
set -eu
cat > /dev/null
case "$KEYWARDEN_ACTION" in
create)
	f="$STATE/token.$KEYWARDEN_ROTATION_TOKEN"
	if [ ! -f "$f" ]; then
		n=$(ls "$STATE" | grep -c '^token\.' || true)
		echo "sk-ant-api03-killtest$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')AA apikey_k$n" > "$f.tmp"
		mv "$f.tmp" "$f"
	fi
	read -r key id < "$f"
	printf '{"api_key": "%s", "key_id": "%s"}\n' "$key" "$id"
	;;
revoke)
	if [ -f "$STATE/fail-revoke" ]; then
		echo "revocation refused" >&2
		exit 1
	fi
	echo "$KEYWARDEN_KEY_ID" >> "$STATE/revoke.calls"
	touch "$STATE/revoked.$KEYWARDEN_KEY_ID"
	;;
esac
