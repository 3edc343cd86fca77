#!/usr/bin/env bash
# Regenerates the fixture-derived fuzz seeds in fuzz/seeds/ from tests/fixtures/webhooks.
#
# Push targets read `event-selector byte, flags byte, body` (see fuzz/src/lib.rs), so each
# provider fixture is written behind the selector of the event it is an example of and the
# flags 0x24 (correct signature, delivery-id header from the body's first 32 bytes); GitHub also
# gets one form-encoded delivery (flags 0x2c). The registry target reads `parser byte, body`.
# Hand-written seeds (URLs, images, policies, service documents) are plain files, not made here.
#
# Run: fuzz/make-seeds.sh   (from anywhere; rewrites only the files it makes)
set -euo pipefail
cd "$(dirname "$0")"
fixtures=../tests/fixtures/webhooks

# seed <target> <name> <selector> <flags> <file>
seed() {
  mkdir -p "seeds/$1"
  { printf "\\x$3\\x$4"; cat "$5"; } >"seeds/$1/$2"
}

urlencode() {
  local LC_ALL=C text c i
  text=$(cat "$1")
  for ((i = 0; i < ${#text}; i++)); do
    c=${text:i:1}
    case $c in
      [A-Za-z0-9.~_-]) printf '%s' "$c" ;;
      ' ') printf '+' ;;
      *) printf '%%%02X' "'$c" ;;
    esac
  done
}

# GitHub: push 00, ping 01, delete 02, create 03.
for f in "$fixtures"/github/*.json; do
  name=$(basename "$f")
  case $name in
    *ping*) event=01 ;;
    *delete*) event=02 ;;
    *create*) event=03 ;;
    *) event=00 ;;
  esac
  seed push_github "$name" "$event" 24 "$f"
done
{ printf '\x00\x2c'; printf 'payload='; urlencode "$fixtures/github/gp-push.json"; } >seeds/push_github/form-gp-push

# GitLab: Push Hook 00, Tag Push Hook 01, System Hook 02.
seed push_gitlab gp-push-event.json 00 24 "$fixtures/gitlab/gp-push-event.json"
seed push_gitlab gp-tag-event.json 01 24 "$fixtures/gitlab/gp-tag-event.json"
seed push_gitlab gp-system-push-event.json 02 24 "$fixtures/gitlab/gp-system-push-event.json"

seed push_bitbucket gp-repo-push.json 00 24 "$fixtures/bitbucket-cloud/gp-repo-push.json"
seed push_bitbucket_server gp-repo-refs-changed.json 00 24 "$fixtures/bitbucket-server/gp-repo-refs-changed.json"

# Gitea: push 00, delete 01.
seed push_gitea gp-push-event.json 00 24 "$fixtures/gitea/gp-push-event.json"
seed push_gitea gp-delete-event.json 01 24 "$fixtures/gitea/gp-delete-event.json"
seed push_gogs gp-push-event.json 00 24 "$fixtures/gogs/gp-push-event.json"

seed push_azure_devops gp-git.push.json 00 24 "$fixtures/azure-devops/gp-git.push.json"

# Registry: Docker Hub 00, ECR 01 (hand-written seed), GitHub `package` 02, `registry_package` 03.
mkdir -p seeds/registry_events
{ printf '\x00'; cat "$fixtures/registry/dockerhub-push.json"; } >seeds/registry_events/dockerhub-push.json
{ printf '\x02'; cat "$fixtures/registry/github-package-published.docker.json"; } \
  >seeds/registry_events/github-package-published.docker.json
{ printf '\x03'; cat "$fixtures/registry/github-registry_package-published.docker.json"; } \
  >seeds/registry_events/github-registry_package-published.docker.json
